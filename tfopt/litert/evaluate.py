"""Measuring .tflite files in LiteRT: accuracy, latency, agreement, contents.

Accuracy runs the file itself on the whole test set (inputs batched, and
quantized with the file's own scale and zero-point when it takes int8), never
the Keras model it came from. Latency is batch 1 with a fixed thread count:
warm-up invokes, then the median of timed invokes.
"""

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfopt.core import artifacts, progress
from tfopt.core.errors import TfoptError
from tfopt.litert import int8_fidelity

__all__ = ["TFLiteError", "TFLiteClassifier", "TFLiteContents", "FileMeasurement",
           "FileRow", "measure_file", "top1", "accuracy", "latency_us", "agreement", "litert_errors", "KernelStats", "inspect_tflite",
           "check_weight_sharing", "check_runs"]

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


class TFLiteError(TfoptError, ValueError):
  """A file is not a usable .tflite classifier."""


def _open_interpreter(path: str, num_threads: int, with_delegates: bool = True):
  if not os.path.isfile(path):
    raise TFLiteError(f"{path} does not exist; give the path of a .tflite file.")
  resolver = (OpResolverType.AUTO if with_delegates
              else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  try:
    return Interpreter(model_path=path, num_threads=num_threads,
                       experimental_op_resolver_type=resolver)
  except (ValueError, RuntimeError) as error:
    raise TFLiteError(
        f"{path} is not a valid .tflite model ({error}). A Keras model must be "
        "converted first (python -m tfopt.pipeline --model it); a .tflite file "
        "that fails here is truncated or corrupt: convert it again.") from error


@contextlib.contextmanager
def litert_errors(path: str):
  """Turns LiteRT's errors on a damaged file into one TFLiteError.

  Fuzzing showed a file with flipped bytes can load and then fail later:
  tensor names that are not UTF-8, shapes no kernel can prepare.
  """
  try:
    yield
  except TFLiteError:
    raise
  except int8_fidelity.FidelityError as error:
    raise TFLiteError(f"{path}: {error}") from error
  except (RuntimeError, ValueError, KeyError, IndexError) as error:
    raise TFLiteError(
        f"LiteRT cannot run {path} ({error}). Either the file is corrupt or "
        "needs ops this LiteRT lacks (convert the model again), or its int8 "
        "scales are degenerate: a layer whose outputs were all ~0 on the "
        "calibration images, as in a model that did not learn (check its "
        "training accuracy).") from error


# Opens a file from stdin and runs it once on zeros: in a child process,
# since LiteRT aborts the process (not raises) on some converted files.
_RUN_ONCE = ("import sys, numpy as np\n"
             "from ai_edge_litert.interpreter import Interpreter\n"
             "i = Interpreter(model_content=sys.stdin.buffer.read())\n"
             "i.allocate_tensors()\n"
             "for d in i.get_input_details():\n"
             "  i.set_tensor(d['index'], np.zeros(d['shape'], d['dtype']))\n"
             "i.invoke()\n")


def check_runs(content: bytes, what: str) -> None:
  """Raises TFLiteError where LiteRT would stop the process on this file.

  The converter can write int8 files LiteRT aborts on when it prepares them
  (seen: a LayerNormalization over a single feature, as in Keras' timeseries
  Transformer tutorial, whose normalized values are all 0).
  """
  result = subprocess.run([sys.executable, "-c", _RUN_ONCE], input=bytes(content),
                          capture_output=True, timeout=600, check=False)
  if result.returncode >= 0:  # ran, or raised: the process's own errors handle that
    return
  interpreter = Interpreter(model_content=bytes(content))
  computed = {index for op in interpreter._get_ops_details()  # pylint: disable=protected-access
              for index in op["outputs"]}
  tiny = [f"{detail['name'].split(';')[0]} (scale {detail['quantization'][0]:.1e})"
          for detail in interpreter.get_tensor_details()
          if detail["index"] in computed and 0 < detail["quantization"][0] < 1e-6]
  raise TFLiteError(
      f"LiteRT stops the process ({signal.Signals(-result.returncode).name}) when it runs "
      f"{what}, as the converter wrote it. "
      + (f"Tensors with degenerate scales: {', '.join(tiny[:4])}: a layer whose output "
         "is constant on the calibration data (e.g. a LayerNormalization over one "
         "feature, which always gives its offset). " if tiny else "")
      + "Leave that mode out (quant_modes / --quant_modes), or change that layer.")


class TFLiteClassifier:
  """Runs a one-input, one-output .tflite classifier on float images.

  Args:
    path: the .tflite file.
    num_threads: LiteRT CPU threads.
  """

  def __init__(self, path: str, num_threads: int = 1):
    self.path = path
    self.interpreter = _open_interpreter(path, num_threads)
    with litert_errors(path):
      inputs = self.interpreter.get_input_details()
      outputs = self.interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
      raise TFLiteError(f"{path} has {len(inputs)} inputs and {len(outputs)} "
                        "outputs; tfopt evaluates one-input, one-output classifiers.")
    self.input, self.output = inputs[0], outputs[0]
    self._batch = None

  @property
  def input_dtype(self):
    return self.input["dtype"]

  def _resize(self, batch: int):
    if self._batch != batch:
      shape = [batch] + list(self.input["shape"][1:])
      with litert_errors(self.path):
        self.interpreter.resize_tensor_input(self.input["index"], shape)
        self.interpreter.allocate_tensors()
      self._batch = batch

  def quantize_input(self, images: np.ndarray) -> np.ndarray:
    """Float images -> the input tensor's dtype, with its scale/zero-point."""
    return int8_fidelity.to_dtype(images, self.input)

  def dequantize_output(self, values: np.ndarray) -> np.ndarray:
    return int8_fidelity.dequantize(values, self.output)

  def run(self, images: np.ndarray) -> np.ndarray:
    """Output (dequantized logits) for one batch of float images."""
    self._resize(len(images))
    with litert_errors(self.path):
      self.interpreter.set_tensor(self.input["index"], self.quantize_input(images))
      self.interpreter.invoke()
      return self.dequantize_output(self.interpreter.get_tensor(self.output["index"]))

  def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Dequantized outputs for all `images`, run in batches."""
    expected = tuple(int(size) for size in self.input["shape"][1:])
    if tuple(images.shape[1:]) != expected:
      raise TFLiteError(f"{self.path} takes images of shape {expected}, got "
                        f"{tuple(images.shape[1:])}: give the data set the "
                        "model was made for.")
    from tfopt.data.image_files import bounded_batch  # pylint: disable=g-import-not-at-top
    batch_size = bounded_batch(expected, batch_size)  # photos: smaller batches
    starts = range(0, len(images), batch_size)
    return np.concatenate([self.run(images[start:start + batch_size]) for start in
                           progress.bar(starts, len(starts), os.path.basename(self.path))])


def top1(path: str, images: np.ndarray, num_threads: int = 1,
         batch_size: int = 1000) -> np.ndarray:
  """The class the .tflite file at `path` predicts for each image."""
  predictions = TFLiteClassifier(path, num_threads).predict(images, batch_size)
  return np.argmax(predictions, axis=-1)


def accuracy(path: str, images: np.ndarray, labels: np.ndarray,
             num_threads: int = 1, batch_size: int = 1000) -> float:
  """Top-1 accuracy of the .tflite file at `path` on (images, labels)."""
  return float(np.mean(top1(path, images, num_threads, batch_size) == labels))


def latency_us(path: str, image: np.ndarray, num_threads: int = 1,
               warmup: int = 20, runs: int = 200) -> float:
  """Median wall time of one invoke at batch 1, in microseconds (any number
  of outputs; one input, `image` without its batch dimension)."""
  if not os.path.isfile(path):
    raise TFLiteError(f"{path} does not exist; give the path of a .tflite file.")
  with open(path, "rb") as stream:
    content = stream.read()
  with litert_errors(path):
    runner = int8_fidelity.FileRunner(content, num_threads=num_threads)
    runner.invoke([image[np.newaxis]])
    for _ in range(warmup):
      runner.interpreter.invoke()
    timings = np.empty(runs)
    for run in range(runs):
      start = time.perf_counter_ns()
      runner.interpreter.invoke()
      timings[run] = time.perf_counter_ns() - start
  return float(np.median(timings) / 1000.0)


@dataclasses.dataclass(frozen=True)
class FileMeasurement:
  """One .tflite file measured in LiteRT: what every row, candidate and step
  of tfopt reports about a file."""
  tflite_bytes: int
  gzip_bytes: int
  latency_us: float  # batch 1: the median of `runs` invokes after `warmup`
  top1: Optional[np.ndarray] = None  # the class predicted per image, if images given
  accuracy: Optional[float] = None  # top-1 accuracy, if labels given


@dataclasses.dataclass
class FileRow:
  """A measured model or .tflite file as tfopt reports it: the fields every
  row has, in report.json's order. The classifier report's rows
  (tfopt.stages.report.ModelRow), the search's candidates
  (tfopt.techniques.search.space.Candidate) and a task run's rows
  (tfopt.task.measure.Measured) extend it with what only they measure.

  path: the file's name in the run folder (the search's scratch folder for
    a candidate); None for a task's Keras model row.
  accuracy: top-1 of the file in LiteRT on the test set; a search
    candidate's is its quality on the validation split (on a task: the
    objective, oriented so that higher is better); None on a task's rows,
    whose quality is the user's metrics and score.
  tflite_bytes / gzip_bytes / latency_us: the file's (None for a Keras row).
  params / nonzero_params / macs: of the Keras model the file came from
    (macs: multiply-accumulates per example, see tfopt.keras_io.macs; None
    when a layer's shapes are not static).
  """
  name: str
  path: Optional[str]
  accuracy: Optional[float]
  tflite_bytes: Optional[int]
  gzip_bytes: Optional[int]
  latency_us: Optional[float]
  params: Optional[int]
  nonzero_params: Optional[int]
  macs: Optional[int]


def measure_file(path: str, latency_input: np.ndarray, images: Optional[np.ndarray] = None,
                 labels: Optional[np.ndarray] = None, num_threads: int = 1,
                 batch_size: int = 1000, warmup: int = 20,
                 runs: int = 200) -> FileMeasurement:
  """The one measurement of a .tflite file: bytes, gzip bytes, batch-1
  latency on `latency_input` (one example, no batch dimension) and, with
  `images`, its top-1 class per image (with `labels`, its accuracy)."""
  predicted = None if images is None else top1(path, images, num_threads, batch_size)
  return FileMeasurement(
      tflite_bytes=os.path.getsize(path), gzip_bytes=artifacts.gzip_size(path),
      latency_us=latency_us(path, latency_input, num_threads, warmup, runs),
      top1=predicted,
      accuracy=None if labels is None else float(np.mean(predicted == labels)))


def agreement(path: str, keras_model, images: np.ndarray,
              num_threads: int = 1, batch_size: int = 1000) -> float:
  """Share of `images` on which the .tflite and the Keras model agree (top-1)."""
  from tfopt.keras_io.predict import predict_top1  # pylint: disable=g-import-not-at-top
  keras_top1 = predict_top1(keras_model, images, batch_size)
  return float(np.mean(top1(path, images, num_threads, batch_size) == keras_top1))


# The output-channel axis of each op's weight tensor in a .tflite file.
OUTPUT_CHANNEL_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


@dataclasses.dataclass(frozen=True)
class KernelStats:
  """One conv / fully-connected weight tensor as stored in a .tflite file.

  distinct: distinct stored values in the whole tensor.
  max_distinct_per_channel: the most distinct values in one output channel.
    This is the unit that weight sharing keeps through conversion: BatchNorm
    folding multiplies each output channel by its own factor, and per-channel
    int8 gives each its own scale, so k shared values become k codes per
    channel (and up to k different ones in every channel).
  """
  op: str
  name: str
  shape: tuple
  dtype: str
  size: int
  zeros: int
  distinct: int
  max_distinct_per_channel: int
  scales: int = 0  # quantization scales: 0 float, 1 per tensor, else per channel
  output: str = ""  # the name of the op's output tensor (Model Explorer's node key)

  @property
  def sparsity(self) -> float:
    return self.zeros / max(1, self.size)


@dataclasses.dataclass(frozen=True)
class TFLiteContents:
  """What is inside a .tflite: I/O types, op counts, weight tensors."""
  input_dtype: str
  output_dtype: str
  ops: Dict[str, int]
  weight_dtypes: Dict[str, int]
  kernels: List[KernelStats]

  @property
  def weight_params(self) -> int:
    return sum(kernel.size for kernel in self.kernels)

  @property
  def weight_zeros(self) -> int:
    return sum(kernel.zeros for kernel in self.kernels)

  @property
  def weight_sparsity(self) -> float:
    return self.weight_zeros / max(1, self.weight_params)


def inspect_tflite(path: str) -> TFLiteContents:
  """Reads the ops and the conv / fully-connected weight tensors of a file.

  A weight counts as zero when its stored value equals its zero-point (for
  quantized tensors) or is exactly 0.0 (for float tensors). A float16 weight
  feeds its op through a DEQUANTIZE; the float16 constant is what is read.
  """
  interpreter = _open_interpreter(path, 1, with_delegates=False)
  with litert_errors(path):
    return _read_contents(interpreter, _packed_tensors(path))


def _packed_tensors(path: str) -> Dict[int, str]:
  """{tensor index: "int4" | "uint4"} for the file's packed 4-bit tensors.

  LiteRT hands them to Python unpacked, as int8; only the flatbuffer says
  they are stored in 4 bits.
  """
  from ai_edge_litert import schema_py_generated as schema  # pylint: disable=g-import-not-at-top
  packed = {schema.TensorType.INT4: "int4", schema.TensorType.UINT4: "uint4"}
  with open(path, "rb") as stream:
    model = schema.Model.GetRootAs(stream.read(), 0)
  if not model.SubgraphsLength():
    return {}
  subgraph = model.Subgraphs(0)
  return {index: packed[subgraph.Tensors(index).Type()]
          for index in range(subgraph.TensorsLength())
          if subgraph.Tensors(index).Type() in packed}


def _read_contents(interpreter, packed: Dict[int, str]) -> TFLiteContents:
  interpreter.allocate_tensors()
  tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
  op_details = interpreter._get_ops_details()  # pylint: disable=protected-access
  dequantized_from = {op["outputs"][0]: op["inputs"][0] for op in op_details
                      if op["op_name"] == "DEQUANTIZE"}
  ops, weight_dtypes, kernels = {}, {}, []
  for op in op_details:
    ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    if op["op_name"] not in WEIGHT_OPS or len(op["inputs"]) < 2:
      continue
    index = op["inputs"][1]
    detail = tensors[dequantized_from.get(index, index)]
    kernel = dataclasses.replace(
        _kernel_stats(interpreter, op["op_name"], detail, packed.get(detail["index"])),
        output=tensors[op["outputs"][0]]["name"] if len(op["outputs"]) else "")
    weight_dtypes[kernel.dtype] = weight_dtypes.get(kernel.dtype, 0) + 1
    kernels.append(kernel)
  return TFLiteContents(
      input_dtype=np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
      output_dtype=np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
      ops=ops, weight_dtypes=weight_dtypes, kernels=kernels)


def _kernel_stats(interpreter, op_name: str, detail: dict,
                  stored_as: Optional[str] = None) -> KernelStats:
  values = interpreter.get_tensor(detail["index"])
  zero_points = detail["quantization_parameters"]["zero_points"]
  channels = np.moveaxis(values, OUTPUT_CHANNEL_AXIS[op_name], 0)
  channels = channels.reshape(len(channels), -1)
  return KernelStats(
      op=op_name, name=detail["name"], shape=tuple(values.shape),
      dtype=stored_as or np.dtype(detail["dtype"]).name, size=int(values.size),
      zeros=int(np.sum(values == _zero_point_array(zero_points, values, detail))),
      distinct=int(np.unique(values).size),
      max_distinct_per_channel=max(int(np.unique(row).size) for row in channels),
      scales=int(np.size(detail["quantization_parameters"]["scales"])))


def _zero_point_array(zero_points: np.ndarray, values: np.ndarray,
                      detail: dict) -> np.ndarray:
  """The zero-point broadcast along the tensor's quantized dimension."""
  if zero_points is None or zero_points.size == 0:
    return np.zeros((), values.dtype)
  if zero_points.size == 1:
    return zero_points.reshape(()).astype(values.dtype)
  axis = detail["quantization_parameters"]["quantized_dimension"]
  shape = [1] * values.ndim
  shape[axis] = zero_points.size
  return zero_points.reshape(shape).astype(values.dtype)


def check_weight_sharing(clusters: dict, contents: "TFLiteContents") -> List[dict]:
  """Per clustered kernel: distinct values in Keras and read back from the file.

  `clusters` is {layer: (clusters, distinct values in Keras)}; the check in
  the file is per output channel (see KernelStats).
  """
  checks = []
  for layer, (count, distinct) in clusters.items():
    kernel = _file_kernel(contents, layer)
    checks.append(dict(
        layer=layer, clusters=count, keras_distinct=distinct,
        tflite_dtype=kernel.dtype if kernel else None,
        tflite_max_distinct_per_channel=(kernel.max_distinct_per_channel
                                         if kernel else None),
        tflite_distinct=kernel.distinct if kernel else None,
        tflite_sparsity=kernel.sparsity if kernel else None,
        holds=bool(kernel) and kernel.max_distinct_per_channel <= count))
  return checks


def _file_kernel(contents, layer: str):
  """The .tflite weight tensor that holds Keras layer `layer`'s kernel."""
  for kernel in contents.kernels:
    parts = set(kernel.name.replace(";", "/").split("/"))
    if layer in parts or f"quant_{layer}" in parts:
      return kernel
  return None
