"""A model's predictions on an array, or on image files streamed through tf.data.

Apart from tfopt.core._keras (the Keras 2 / Keras 3 split) so that the split
imports nothing of tfopt's data side: image_files uses _keras, not the
reverse.
"""

import numpy as np

from tfopt.data import image_files

__all__ = ["predict_logits", "predict_top1"]


def predict_logits(model, images, batch_size: int = 1000) -> np.ndarray:
  """model.predict on an array, or on image files streamed through tf.data."""
  if not image_files.is_image_files(images):
    return model.predict(images, batch_size=batch_size, verbose=0)
  with image_files.reading_errors():
    batch = image_files.bounded_batch(images.shape[1:], batch_size)
    return model.predict(images.tf_dataset(batch), verbose=0)


def predict_top1(model, images, batch_size: int = 1000) -> np.ndarray:
  """The top-1 class a model that outputs logits (or probabilities) gives each image."""
  return np.argmax(predict_logits(model, images, batch_size), axis=-1)
