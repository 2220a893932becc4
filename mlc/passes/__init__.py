"""Passes: each one file and one function ``Graph -> Graph``. ``PIPELINE`` is the order."""

from .eliminate_common_subexpressions import eliminate_common_subexpressions
from .eliminate_dead_code import eliminate_dead_code
from .fold_constants import fold_constants
from .fuse import fuse
from .lower_precision import lower_precision
from .manager import PassRecord, run_passes
from .narrow_storage import narrow_storage
from .quantize_weights import quantize_weights
from .simplify import simplify

# Clean-ups first, so that fusion sees the smallest graph. CSE runs before folding too, so
# that two equal computations on a constant fold into one constant, not two equal ones.
# Folding (which, on a frozen inference graph, does weight transposes, casts and
# concatenations once) leaves constants and `full`s that simplify's rules match; rules and
# folding leave duplicates for CSE and dead nodes for DCE. fuse leaves behind the views and
# constants that only kernels read (each kernel inlines its own copy); the last
# eliminate_dead_code removes them.
# Precision: lower_precision casts matmul operands before folding (so a frozen weight is
# cast once) and before fusion (so every cast lands in a kernel); quantize_weights needs the
# weights folded into their final form; narrow_storage decides after fusion (and after the
# views only kernels read are gone) which tensors between kernels are stored in the lower
# type. The three do nothing with default options.
PIPELINE = [
    eliminate_dead_code,
    eliminate_common_subexpressions,
    lower_precision,
    fold_constants,
    quantize_weights,
    simplify,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    fuse,
    eliminate_dead_code,
    narrow_storage,
]

PASSES = {p.__name__: p for p in PIPELINE}  # by name, for `mlc opt --passes`

__all__ = ["PIPELINE", "PASSES", "PassRecord", "run_passes", "eliminate_common_subexpressions",
           "eliminate_dead_code", "fold_constants", "fuse", "lower_precision", "narrow_storage",
           "quantize_weights", "simplify"]
