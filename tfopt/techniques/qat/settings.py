"""The `qat` section: the settings of quantization-aware training (tfopt.techniques.qat).

Every field is validated in ``__post_init__`` (see tfopt.core.validate); the
lists of allowed values here are the only copies. PipelineConfig holds it as
`qat`; recipes and `--qat.field=value` fill it.
"""

from dataclasses import dataclass

from tfopt.core.validate import require, require_positive_int, require_positive_number

__all__ = ["QAT_SCHEMES", "QAT_BITS", "QatConfig"]


QAT_SCHEMES = ("auto", "qat", "pqat", "cqat", "pcqat")
QAT_BITS = (8, 4)


@dataclass(frozen=True)
class QatConfig:
  """Quantization-aware training with tfmot (see tfopt.techniques.qat.algorithm).

  scheme: auto picks pcqat after prune and cluster, pqat after prune, cqat
    after cluster, qat otherwise; or name one.
  bits: 8: tfmot's int8 QAT, the model converted to int8 with the ranges it
    learned; 4: the Conv2D / Dense kernels that the int4 file makes 4-bit
    trained on its grid (tfopt.techniques.qat.int4), the model converted to int4.
  """
  scheme: str = "auto"
  bits: int = 8
  epochs: int = 2
  batch_size: int = 128
  learning_rate: float = 1e-4
  use_teacher: bool = True

  def __post_init__(self):
    require(self.scheme in QAT_SCHEMES, "scheme", self.scheme,
            "one of " + ", ".join(QAT_SCHEMES))
    require(isinstance(self.bits, int) and not isinstance(self.bits, bool)
            and self.bits in QAT_BITS, "qat_bits", self.bits, "8 (int8 QAT) or 4 (int4 QAT)")
    require(self.bits == 8 or self.scheme in ("auto", "qat", "pqat"), "qat_scheme",
            self.scheme, "auto, qat or pqat with --qat_bits 4 (4-bit QAT keeps zeros, "
            "not clusters)")
    require_positive_int("epochs", self.epochs)
    require_positive_int("batch_size", self.batch_size)
    require_positive_number("learning_rate", self.learning_rate)
