"""Passes: each one file and one function ``Graph -> Graph``. ``PIPELINE`` is the order.

A pass that takes options declares them in its file (``@pass_options``, ``mlc.passes.manager``);
each is also the compile option of that name, and ``build_pipeline(opts)`` binds them.
"""

from __future__ import annotations

from .eliminate_common_subexpressions import eliminate_common_subexpressions
from .eliminate_dead_code import eliminate_dead_code
from .fold_constants import fold_constants
from .freeze import freeze
from .fuse import fuse
from .lower_precision import lower_precision
from .manager import Pass, PassOption, PassRecord, bind, options_of, parse_pipeline, pass_options, run_passes
from .narrow_storage import narrow_storage
from .quantize_weights import quantize_weights
from .simplify import simplify
from .split_attention import split_attention

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
# type. The three do nothing with default options. split_attention (flash-decoding) makes
# attention with few queries over many keys a split kernel and a combine, which fuse then
# makes two kernels.
PIPELINE = [
    eliminate_dead_code,
    eliminate_common_subexpressions,
    lower_precision,
    fold_constants,
    quantize_weights,
    simplify,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    split_attention,
    fuse,
    eliminate_dead_code,
    narrow_storage,
]

PASSES = {p.__name__: p for p in PIPELINE}  # by name, for `mlc opt --passes`

# The options of PIPELINE's passes, by name: the compile options mlc.options builds from them.
# Two passes may take one option (precision) by declaring the same PassOption.
PASS_OPTIONS: dict[str, PassOption] = {o.name: o for p in PIPELINE for o in options_of(p)}
assert all(PASS_OPTIONS[o.name] is o for p in PIPELINE for o in options_of(p)), "an option is declared twice"


def build_pipeline(opts) -> list[Pass]:
    """``PIPELINE`` with each pass's options taken from ``opts`` (an ``mlc.options.Options``:
    anything with the options as attributes); what the backend runs."""
    return [bind(p, **{o.name: getattr(opts, o.name) for o in options_of(p)}) for p in PIPELINE]


__all__ = ["PIPELINE", "PASSES", "PASS_OPTIONS", "Pass", "PassOption", "PassRecord", "bind", "build_pipeline",
           "options_of", "parse_pipeline", "pass_options", "run_passes", "eliminate_common_subexpressions",
           "eliminate_dead_code", "fold_constants", "freeze", "fuse", "lower_precision", "narrow_storage",
           "quantize_weights", "simplify", "split_attention"]
