"""Passes: each one file and one function ``Graph -> Graph``. ``PIPELINE`` is the order."""

from .eliminate_dead_code import eliminate_dead_code
from .fuse import fuse
from .manager import PassRecord, run_passes

# fuse leaves behind the views and constants that only kernels read (each kernel inlines
# its own copy); the second eliminate_dead_code removes them.
PIPELINE = [eliminate_dead_code, fuse, eliminate_dead_code]

PASSES = {p.__name__: p for p in PIPELINE}  # by name, for `mlc opt --passes`

__all__ = ["PIPELINE", "PASSES", "PassRecord", "run_passes", "eliminate_dead_code", "fuse"]
