"""Resume inside a stage: every training epoch is checkpointed in the output dir.

The runner opens `StageCheckpoints` around each stage it runs and hands it to
the stage (`Context.fits`, a train.FitContext), which passes it to every
technique it calls (`fits=`). Every fit in that stage (train.fit: the teacher,
distill, each fine-tune) then trains one
epoch at a time, each epoch starting from a seed of its own (run seed, fit
number, epoch), and after each epoch writes the trained model and its
optimizer with tf.train.Checkpoint to

    checkpoints/<stage>/fit<n>-epoch<e>.{index,data-...}

listed in the manifest under the stage with the stage's resume key. A run
killed in epoch k of fit n is rerun with the same inputs: the runner keeps
the checkpoints whose key matches, fits before n restore their last epoch and
train nothing, and fit n restores epoch k-1 and goes on from epoch k. Because
each epoch's shuffle, augmentation and dropout follow from its own seed, the
resumed result equals an uninterrupted run's (within float tolerance). When
the stage finishes, its checkpoints are deleted and unlisted. Each fit's
TensorBoard event files (tensorboard/<stage>, see tfopt.training.tensorboard_logs) are
listed the same way, but stay: a resumed fit appends to them.

Why not Keras' BackupAndRestore: it restores the weights and the epoch but not
the random state, so a resumed epoch k sees other shuffles than an
uninterrupted one; a fit of one epoch per call with a seed per epoch gives
both, and keeps the last epoch of every fit so that a stage of several fits
(slim) resumes in its middle.
"""

import contextlib
import dataclasses
import os
import re
from typing import List

from tfopt.core import artifacts
from tfopt.training import tensorboard_logs

__all__ = ["StageCheckpoints", "FitCheckpoints", "DIRECTORY"]

DIRECTORY = "checkpoints"
_NAME = re.compile(r"fit(\d+)-epoch(\d+)\.")


class StageCheckpoints:
  """The epoch checkpoints of one stage of one run (see the module docstring)."""

  def __init__(self, manifest: artifacts.Manifest, stage: str, key: str, seed: int,
               log=print):
    self.manifest, self.stage, self.key, self.seed, self.log = (
        manifest, stage, key, seed, log)
    self.directory = os.path.join(manifest.output_dir, DIRECTORY, stage)
    self.fits = 0

  @contextlib.contextmanager
  def opened(self):
    """Open while the stage runs; its checkpoints are deleted when it finishes."""
    yield self
    self.clear()  # only reached when the stage finished

  def next_fit(self) -> "FitCheckpoints":
    self.fits += 1
    return FitCheckpoints(self, self.fits)

  def listed(self) -> List[str]:
    """This stage's checkpoint files in the manifest that were written under its key."""
    return [path for path in self.manifest.checkpoints_of(self.stage, self.key)
            if path.startswith(DIRECTORY + "/")]

  def clear(self):
    """Deletes and unlists every checkpoint of this stage."""
    self.manifest.forget(self.listed(), delete=True)
    artifacts.remove_empty_dirs(os.path.join(self.manifest.output_dir, DIRECTORY))


@dataclasses.dataclass
class FitCheckpoints:
  """The checkpoints of the n-th fit of a stage."""
  stage: StageCheckpoints
  number: int

  def epoch_seed(self, epoch: int) -> int:
    return (self.stage.seed * 1_000_003 + self.number * 10_007 + epoch) % (2 ** 31)

  @property
  def tensorboard_dir(self) -> str:
    """tensorboard/<stage> for the stage's first fit, <stage>-fit<n> for others."""
    name = self.stage.stage + (f"-fit{self.number}" if self.number > 1 else "")
    return os.path.join(self.stage.manifest.output_dir, tensorboard_logs.DIRECTORY, name)

  def record_tensorboard_files(self):
    """Lists the fit's event files (kept with the stage, and by a resume of it)."""
    for directory, _, names in os.walk(self.tensorboard_dir):
      for name in sorted(names):
        self.stage.manifest.record(self.stage.stage, os.path.join(directory, name),
                                   resume_key=self.stage.key)

  def _prefix(self, epoch: int, temporary: bool = False) -> str:
    name = f"fit{self.number}-epoch{epoch}"
    return os.path.join(self.stage.directory,
                        (artifacts.TEMPORARY_PREFIX if temporary else "") + name)

  def _files(self, epoch: int) -> List[str]:
    prefix = f"{DIRECTORY}/{self.stage.stage}/fit{self.number}-epoch{epoch}."
    return [path for path in self.stage.listed() if path.startswith(prefix)]

  def last_epoch(self) -> int:
    """The last epoch (1-based) saved intact for this fit; 0 if none."""
    epochs = [int(match.group(2)) for match in
              (_NAME.search(os.path.basename(path)) for path in self.stage.listed())
              if match and int(match.group(1)) == self.number]
    for epoch in sorted(epochs, reverse=True):
      files = self._files(epoch)
      if any(name.endswith(".index") for name in files) and not (
          self.stage.manifest.changed_files({"files": files})):
        return epoch
    return 0

  def restore(self, checkpoint, epoch: int) -> bool:
    """Reads epoch `epoch` into `checkpoint`; False (and a log line) if it does not fit."""
    try:
      checkpoint.read(self._prefix(epoch)).assert_existing_objects_matched()
      return True
    except (AssertionError, ValueError) as error:  # another model than the one saved
      self.stage.log(f"resume: checkpoint {self._prefix(epoch)} does not match this "
                     f"model ({str(error).splitlines()[0]}); the fit starts anew")
      return False

  def save(self, checkpoint, epoch: int):
    """Writes epoch `epoch` atomically, lists it, then drops the epoch before it."""
    os.makedirs(self.stage.directory, exist_ok=True)
    temporary = self._prefix(epoch, temporary=True)
    checkpoint.write(temporary)
    manifest = self.stage.manifest
    for name in sorted(os.listdir(self.stage.directory)):
      if name.startswith(os.path.basename(temporary) + "."):
        final = os.path.join(self.stage.directory,
                             name[len(artifacts.TEMPORARY_PREFIX):])
        os.replace(os.path.join(self.stage.directory, name), final)
        manifest.record(self.stage.stage, final, resume_key=self.stage.key)
    manifest.forget([path for old in range(1, epoch) for path in self._files(old)],
                    delete=True)

