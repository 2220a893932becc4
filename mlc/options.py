"""Compile options: what ``torch.compile(..., backend="mlc", options={...})`` accepts.

Each option is declared once here, with its default, the environment variable that can
set it, and its documentation (the README's options table is generated from ``OPTIONS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Callable

from .passes.lower_precision import PRECISIONS
from .passes.quantize_weights import QUANTIZE_MODES


@dataclass(frozen=True)
class Option:
    name: str
    default: object
    env: str | None
    doc: str
    types: tuple[type, ...] = ()  # what a value may be, if not just the default's type (bool)
    check: Callable[[object], str | None] | None = None  # what is wrong with a value (None: nothing)
    parse: Callable[[str], object] | None = None  # how the environment variable's text becomes a value


def _one_of(value, valid) -> str | None:
    return None if value in valid else "must be one of " + ", ".join(map(repr, valid))


def _non_negative(value) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a number >= 0"


OPTIONS = [
    Option("dump_dir", None, "MLC_DUMP_DIR",
           "directory to write the IR after each pass into, one file per pass, headed by its name and time",
           types=(str, os.PathLike, type(None))),
    Option("verify", False, "MLC_VERIFY",
           "run the IR verifier after every pass (the test suite turns this on)"),
    Option("interpret", False, "MLC_INTERPRET",
           "run generated kernels on CPU tensors in Triton's interpreter; without it, CPU graphs run "
           "op by op through torch (with a warning), since Triton kernels need a GPU"),
    Option("freeze", True, "MLC_FREEZE",
           "in inference graphs, treat parameters and buffers as constants, so that constant folding does "
           "their transposes, casts, scalings and concatenations once at compile time. An inference graph "
           "is one AOT autograd compiles for a call where no gradient is needed: under torch.no_grad() or "
           "torch.inference_mode(), or when no input and no parameter requires grad; training graphs never "
           "freeze. Buffers the graph writes (BatchNorm's running statistics in train mode) and inference "
           "tensors stay inputs. A frozen graph checks on every call that each frozen input is the same "
           "tensor object with the same version counter (in-place updates such as p.add_() or an optimizer "
           "step bump it); when one is not, it compiles the graph again with the current values, so a "
           "changed parameter never gives a stale result"),
    Option("fold_limit", 2.0, "MLC_FOLD_LIMIT",
           "constant folding replaces a node computed from constants alone by a constant tensor only if "
           "that tensor has at most fold_limit times the elements of the constant tensors it is computed "
           "from, where full and arange count as one element: weight transposes, casts and q/k/v "
           "concatenations fold, but broadcasts and arange-like expansions (a causal mask) stay computed "
           "in the kernel that reads them. A result that holds one number everywhere becomes a full, "
           "whatever its size. 0 turns folding off",
           types=(int, float), check=_non_negative, parse=float),
    Option("precision", "default", "MLC_PRECISION",
           "the type matmuls multiply in and tensors between kernels are stored in. \"default\" keeps the "
           "model's dtypes; \"tf32\" multiplies fp32 matmul operands as tf32 (fp32 accumulation); \"bf16\" "
           "and \"fp16\" multiply fp32 matmul operands in that type with fp32 accumulation, and store fp32 "
           "tensors that pass between kernels in it. In every mode arithmetic runs in fp32 registers, "
           "reductions accumulate in fp32, every cast happens inside a kernel, frozen weights are cast once "
           "at compile time, and graph inputs and outputs keep their dtypes. Tolerances against fp32 eager "
           "are in the README",
           types=(str,), check=lambda v: _one_of(v, PRECISIONS)),
    Option("quantize", None, "MLC_QUANTIZE",
           "\"int8-weight\": frozen matmul weights are stored as int8 with one fp32 scale per output "
           "channel, computed at compile time and applied in the matmul kernel's epilogue (the weight is "
           "read as one byte per element). Needs frozen weights: training graphs and freeze=False are "
           "left unquantized, with a warning. None: off",
           types=(str, type(None)), check=lambda v: _one_of(v, (None, *QUANTIZE_MODES))),
    Option("autotune", "auto", "MLC_AUTOTUNE",
           "launch configs per kernel and shape bucket (sizes rounded up to powers of two), for the GPU "
           "target (the GPU present, else an H100). \"off\": fixed rules. \"default\": a few configs per "
           "template, pruned by shared memory, ptxas register spills and occupancy, then ranked by timing "
           "on a GPU or by the cost model without one (seconds per kernel, cached on disk). \"max\": a "
           "large space (tile shapes, warps, stages, group sizes, ATen for matmuls). \"auto\": \"default\" "
           "for kernels launched on a GPU, \"off\" in the interpreter. With interpret=True launches always "
           "use the interpreter's large blocks; \"default\"/\"max\" still tune GPU configs, for explain "
           "and the cache. MLC_PROGRESS=0 silences the progress bar",
           types=(str,), check=lambda v: _one_of(v, ("auto", "off", "default", "max"))),
    Option("cache", True, "MLC_CACHE",
           "reuse whole compiled graphs from the persistent cache in MLC_CACHE_DIR (default ~/.cache/mlc): "
           "the same graph, constants, options and mlc/torch/Triton versions skip the passes and code "
           "generation. Kernel modules, ptxas results and tuning results are cached whatever this says"),
]

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Options:
    dump_dir: str | None = None
    verify: bool = False
    interpret: bool = False
    freeze: bool = True
    fold_limit: float = 2.0
    precision: str = "default"
    quantize: str | None = None
    autotune: str = "auto"
    cache: bool = True
    mode: str = "default"


def _from_env(opt: Option):
    raw = os.environ.get(opt.env) if opt.env else None
    if raw is None or raw == "":
        return opt.default
    if isinstance(opt.default, bool):
        return raw.lower() not in ("0", "false", "no", "off")
    value = raw
    if opt.parse is not None:
        try:
            value = opt.parse(raw)
        except ValueError:
            raise ValueError(f"{opt.env}={raw!r} is not a valid value for mlc option '{opt.name}'") from None
    if opt.check is not None and opt.check(value):
        raise ValueError(f"{opt.env}={raw!r}: mlc option '{opt.name}' {opt.check(value)}")
    return value


def make_options(mode: str | None = None, options: dict | None = None) -> Options:
    """Validate ``mode`` and ``options`` from ``torch.compile`` and fill in defaults."""
    mode = mode or "default"
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}' for backend 'mlc'; valid modes: {', '.join(MODES)}")
    options = dict(options or {})
    known = {o.name: o for o in OPTIONS}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown mlc option(s) {', '.join(map(repr, unknown))}; valid options: {', '.join(known)}")
    values = {o.name: _from_env(o) for o in OPTIONS}
    for name, value in options.items():
        default = known[name].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"mlc option '{name}' must be True or False, got {value!r}")
        # Checked here, or a bad value fails deep inside a compile with no option named.
        types = known[name].types
        if types and not isinstance(value, types):
            names = ", ".join("None" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"mlc option '{name}' must be one of the types {names}; got {value!r}")
        problem = known[name].check(value) if known[name].check is not None else None
        if problem:
            raise ValueError(f"mlc option '{name}' {problem}, got {value!r}")
        values[name] = value
    return replace(Options(), mode=mode, **values)


assert {f.name for f in fields(Options)} == {o.name for o in OPTIONS} | {"mode"}
