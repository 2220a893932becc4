"""Passes: each one file and one function ``Graph -> Graph``. ``PIPELINE`` is the order."""

from .eliminate_dead_code import eliminate_dead_code
from .fuse import fuse
from .manager import PassRecord, run_passes

PIPELINE = [eliminate_dead_code, fuse]

PASSES = {p.__name__: p for p in PIPELINE}

__all__ = ["PIPELINE", "PASSES", "PassRecord", "run_passes", "eliminate_dead_code", "fuse"]
