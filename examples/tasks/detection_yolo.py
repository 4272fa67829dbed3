"""Detection: a YOLO-style detector finds digits on a 64 x 64 canvas, scored
by mAP@0.5 on the .tflite file's own outputs.

Each canvas holds 1 to 3 MNIST digits, each scaled to 12..32 px. The model
is what the YOLO tutorials build, small: LeakyReLU, residual blocks, a
stride-16 head for large digits and, through an upsample + concatenate neck,
a stride-8 head for small ones. Each head's cell predicts [objectness, x, y
in the cell, width, height, 10 class scores].

    python examples/tasks/detection_yolo.py --train_only --model yolo.keras
    tfopt compress --model yolo.keras --task examples/tasks/detection_yolo.py
    python examples/tasks/detection_yolo.py --out runs/yolo     # from Python

MNIST comes from $TFOPT_DATA_DIR or ../shared/data (example_tools.py).
"""

import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import example_tools  # pylint: disable=g-import-not-at-top

SIZE = 64
HEADS = {"small": 8, "large": 16}  # head name: stride (small digits go to stride 8)
SMALL_DIGIT = 20  # px: digits up to this size belong to the stride-8 head
CHANNELS = 15  # objectness, x, y, w, h, 10 classes
BATCH = 64


def _ink_box(image):
  """The box around a digit's ink; a thin digit shrunk to 12 px may keep
  only faint pixels, so the threshold is at most half its brightest one."""
  rows, cols = np.nonzero(image > min(76, image.max() / 2))
  if not len(rows):  # nothing left at all: the whole patch
    return 0, 0, image.shape[0], image.shape[1]
  return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1


def canvas(digits, labels, rng):
  """One image and its two head targets (a cell keeps the first digit in it)."""
  image = np.zeros((SIZE, SIZE), np.float32)
  targets = {name: np.zeros((SIZE // stride, SIZE // stride, CHANNELS), np.float32)
             for name, stride in HEADS.items()}
  for digit, label in zip(digits, labels):
    size = int(rng.integers(12, 33))
    scaled = digit[np.ix_(np.arange(size) * 28 // size, np.arange(size) * 28 // size)]
    top, left = rng.integers(0, SIZE - size + 1, size=2)
    image[top:top + size, left:left + size] = np.maximum(
        image[top:top + size, left:left + size], scaled / 255.0)
    y0, x0, y1, x1 = _ink_box(scaled)
    box = np.array([left + x0, top + y0, left + x1, top + y1], np.float32)
    name = "small" if size <= SMALL_DIGIT else "large"
    stride = HEADS[name]
    center_x, center_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    row, col = int(center_y // stride), int(center_x // stride)
    cell = targets[name][row, col]
    if cell[0] == 0:
      cell[:5] = [1, center_x / stride - col, center_y / stride - row,
                  (box[2] - box[0]) / SIZE, (box[3] - box[1]) / SIZE]
      cell[5 + label] = 1
  return image[..., None], targets


def _canvases(images, labels, count: int, seed: int):
  """A generator of (image, targets): 1-3 random digits each, reproducible."""
  def generate():
    rng = np.random.default_rng(seed)
    for _ in range(count):
      chosen = rng.choice(len(images), size=int(rng.integers(1, 4)), replace=False)
      yield canvas(images[chosen], labels[chosen], rng)
  signature = (tf.TensorSpec((SIZE, SIZE, 1), tf.float32),
               {name: tf.TensorSpec((SIZE // stride, SIZE // stride, CHANNELS), tf.float32)
                for name, stride in HEADS.items()})
  return tf.data.Dataset.from_generator(generate, output_signature=signature)


@functools.lru_cache(maxsize=None)
def _splits():
  images, labels = example_tools.digits("train")
  train_part, val_part = example_tools.split_off(min(5000, len(images) // 6), images, labels)
  return train_part, val_part, example_tools.digits("test")


def train():
  images, labels = _splits()[0]
  return _canvases(images, labels, len(images) // 2, 0).batch(BATCH).prefetch(2)


def val():
  images, labels = _splits()[1]
  return _canvases(images, labels, len(images) // 2, 1).batch(BATCH)


def test():
  images, labels = _splits()[2]
  return _canvases(images, labels, len(images) // 2, 2).batch(BATCH)


def yolo_loss(y_true, y_pred):
  """Objectness cross-entropy on every cell (positives weighted 5x), squared
  box error and class cross-entropy on the cells that hold a digit."""
  ops = keras.ops
  present = y_true[..., 0]
  objectness = ops.binary_crossentropy(present, y_pred[..., 0], from_logits=True)
  objectness = ops.mean(objectness * (1 + 4 * present))
  count = ops.maximum(ops.sum(present), 1.0)
  box = ops.sum(ops.sum(ops.square(ops.sigmoid(y_pred[..., 1:5]) - y_true[..., 1:5]), -1)
                * present) / count
  classes = ops.sum(ops.categorical_crossentropy(y_true[..., 5:], y_pred[..., 5:],
                                                 from_logits=True) * present) / count
  return objectness + 5 * box + classes


loss = {name: yolo_loss for name in HEADS}
metrics = None
score_name = "mAP@0.5"
higher_is_better = True


def score(y_true, y_pred):
  """mAP@0.5 over the ten digits, the boxes decoded from the outputs."""
  truth = [_boxes(y_true, index, truth=True) for index in range(len(y_true["small"]))]
  found = [_boxes(y_pred, index) for index in range(len(y_pred["small"]))]
  return mean_average_precision(truth, found)


def _sigmoid(values):
  return 1 / (1 + np.exp(-values))


def _boxes(outputs, index: int, truth: bool = False, threshold: float = 0.05):
  """[(class, score, x0, y0, x1, y1)] of one image from both heads' cells."""
  found = []
  for name, stride in HEADS.items():
    cells = outputs[name][index]
    present = cells[..., 0] if truth else _sigmoid(cells[..., 0])
    logits = cells[..., 5:]
    classes = np.argmax(logits, -1)
    if truth:
      confidence = present
    else:
      exp = np.exp(logits - logits.max(-1, keepdims=True))
      confidence = present * (exp.max(-1) / exp.sum(-1))
    geometry = cells[..., 1:5] if truth else _sigmoid(cells[..., 1:5])
    for row, col in zip(*np.nonzero(confidence > (0.5 if truth else threshold))):
      x, y, w, h = geometry[row, col]
      center_x, center_y = (col + x) * stride, (row + y) * stride
      found.append((int(classes[row, col]), float(confidence[row, col]),
                    center_x - w * SIZE / 2, center_y - h * SIZE / 2,
                    center_x + w * SIZE / 2, center_y + h * SIZE / 2))
  return found if truth else _suppressed(found)


def _iou(a, b) -> float:
  width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  overlap = width * height
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
  return overlap / union if union > 0 else 0.0


def _suppressed(found, limit: float = 0.45):
  """Non-maximum suppression per class."""
  kept = []
  for box in sorted(found, key=lambda item: -item[1]):
    if all(other[0] != box[0] or _iou(other[2:], box[2:]) < limit for other in kept):
      kept.append(box)
  return kept


def mean_average_precision(truth, found, classes: int = 10, limit: float = 0.5) -> float:
  """VOC-style mAP: per class, the area under the precision envelope."""
  precisions = []
  for label in range(classes):
    wanted = {index: [box[2:] for box in boxes if box[0] == label]
              for index, boxes in enumerate(truth)}
    total = sum(len(boxes) for boxes in wanted.values())
    if not total:
      continue
    detections = sorted(((box[1], index, box[2:]) for index, boxes in enumerate(found)
                         for box in boxes if box[0] == label), key=lambda item: -item[0])
    used = {index: [False] * len(boxes) for index, boxes in wanted.items()}
    hits = []
    for _, index, box in detections:
      overlaps = [_iou(box, other) for other in wanted[index]]
      best = int(np.argmax(overlaps)) if overlaps else -1
      hit = best >= 0 and overlaps[best] >= limit and not used[index][best]
      if hit:
        used[index][best] = True
      hits.append(hit)
    precisions.append(_average_precision(np.array(hits, bool), total))
  return float(np.mean(precisions)) if precisions else 0.0


def _average_precision(hits, total: int) -> float:
  if not len(hits):
    return 0.0
  true_positives = np.cumsum(hits)
  recall = true_positives / total
  precision = true_positives / np.arange(1, len(hits) + 1)
  envelope = np.maximum.accumulate(np.r_[precision, 0][::-1])[::-1]
  steps = np.diff(np.r_[0, recall])
  return float(np.sum(steps * envelope[:-1]))


def _block(x, filters: int, stride: int):
  """A strided conv, then a residual pair of convs (the YOLO tutorials' unit)."""
  layers = keras.layers
  x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
  x = layers.LeakyReLU(0.1)(layers.BatchNormalization()(x))
  y = layers.Conv2D(filters // 2, 1, use_bias=False)(x)
  y = layers.LeakyReLU(0.1)(layers.BatchNormalization()(y))
  y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
  y = layers.LeakyReLU(0.1)(layers.BatchNormalization()(y))
  return layers.Add()([x, y])


def build_model(width: int = 16) -> keras.Model:
  layers = keras.layers
  inputs = keras.Input((SIZE, SIZE, 1), name="canvas")
  x = _block(inputs, width, 2)           # 32 x 32
  x = _block(x, 2 * width, 2)            # 16 x 16
  stride8 = _block(x, 4 * width, 2)      # 8 x 8
  stride16 = _block(stride8, 8 * width, 2)  # 4 x 4
  large = layers.LeakyReLU(0.1)(layers.Conv2D(8 * width, 3, padding="same")(stride16))
  up = layers.UpSampling2D()(layers.Conv2D(2 * width, 1)(stride16))
  small = layers.Concatenate()([up, stride8])
  small = layers.LeakyReLU(0.1)(layers.Conv2D(4 * width, 3, padding="same")(small))
  outputs = {"small": layers.Conv2D(CHANNELS, 1, name="small_head")(small),
             "large": layers.Conv2D(CHANNELS, 1, name="large_head")(large)}
  return keras.Model(inputs, outputs, name="tiny_yolo")


if __name__ == "__main__":
  example_tools.main(sys.modules[__name__], "detection_yolo", epochs=10, learning_rate=2e-3)
