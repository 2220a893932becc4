"""Compile options: what ``torch.compile(..., backend="mlc", options={...})`` accepts.

Each option is declared once: the options passes take (``fold_limit``, ``precision``,
``quantize``) where the pass is defined (``mlc.passes.PASS_OPTIONS``), the others here; this
file adds the environment variable that can set each. The README's options table is
``options_markdown()``, and ``mlc options`` prints ``options_text()``.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, fields, replace

from .passes import PASS_OPTIONS, PassOption


@dataclass(frozen=True)
class Option(PassOption):
    """A compile option: declared as a pass option is, plus the environment variable that sets it."""

    env: str | None = None


def _of_pass(name: str, env: str) -> Option:
    declared = PASS_OPTIONS[name]
    return Option(**{f.name: getattr(declared, f.name) for f in fields(PassOption)}, env=env)


OPTIONS = [
    Option("dump_dir", (str, os.PathLike, type(None)), None,
           "write the IR after each pass into this directory, one file per pass (`<graph>.<NN>.<pass>.mlc`), "
           "headed by the pass name and its time", env="MLC_DUMP_DIR"),
    Option("verify", bool, False, "run the IR verifier after every pass (the tests do)", env="MLC_VERIFY"),
    Option("interpret", bool, False, "run generated kernels on CPU tensors in Triton's interpreter",
           env="MLC_INTERPRET"),
    Option("freeze", bool, True,
           "in inference graphs (under `no_grad`/`inference_mode`, or when nothing requires grad) parameters and "
           "buffers become constants, so weight transposes, casts, scalings and q/k/v concatenations are folded "
           "once at compile time; buffers the graph writes stay inputs; training graphs never freeze",
           env="MLC_FREEZE"),
    _of_pass("fold_limit", env="MLC_FOLD_LIMIT"),
    _of_pass("precision", env="MLC_PRECISION"),
    _of_pass("quantize", env="MLC_QUANTIZE"),
    Option("autotune", str, "auto",
           "launch configs per kernel and shape bucket for the GPU target: `\"off\"` fixed rules; `\"default\"` a few "
           "configs per template, pruned (shared memory, ptxas spills, occupancy) and ranked (timing on a GPU, the "
           "cost model without one), about a second per kernel, cached; `\"max\"` a large space; `\"auto\"` is "
           "`\"default\"` on a GPU and `\"off\"` in the interpreter; see "
           "[Caching and autotuning](#caching-and-autotuning)",
           choices=("auto", "off", "default", "max"), env="MLC_AUTOTUNE"),
    _of_pass("strict", env="MLC_STRICT"),
    Option("fuel", (int, type(None)), None,
           "let only the first N optimization decisions of each compiled graph happen (each fusion merge, "
           "simplify rule, fold, CSE merge, precision or storage change counts one; the rest are refused), "
           "to find the one that makes a result wrong: `mlc bisect` searches N for you. `None`: no limit",
           env="MLC_FUEL"),
    Option("cache", bool, True,
           "reuse whole compiled graphs from `$MLC_CACHE_DIR` (same graph, constants, options and mlc/torch/Triton "
           "versions: no passes, no code generation)", env="MLC_CACHE"),
    Option("remote_cache", (str, type(None)), None,
           "`redis://HOST:PORT/DB`: share whole compiled graphs and tuning results with every process using "
           "this Redis (needs `pip install 'mlc[remote]'`); one missing locally is fetched from it "
           "(`compiled.cache` says `hit (remote)`), and what is compiled is stored there; Redis down costs a "
           "warning and a local compile; see [Sharing the cache across a fleet](#sharing-the-cache-across-a-fleet)",
           env="MLC_REMOTE_CACHE"),
]

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# What each mode of torch.compile sets, as Inductor's modes do; an option given in `options` or
# by its environment variable wins over its mode.
MODE_OPTIONS = {"max-autotune": {"autotune": "max"}, "max-autotune-no-cudagraphs": {"autotune": "max"}}
# The modes that ask for CUDA graphs (Inductor's "reduce-overhead" and "max-autotune"): on GPU
# tensors mlc records each graph's launch plan in one (runtime/cuda_graphs.py); mlc.explain says
# whether it did, and why not (``cuda_graphs_note``).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class Options:
    """Every option's value, as ``make_options`` fills them in (defaults: ``OPTIONS``)."""

    dump_dir: str | None = None
    verify: bool = False
    interpret: bool = False
    freeze: bool = True
    fold_limit: float = PASS_OPTIONS["fold_limit"].default
    precision: str = PASS_OPTIONS["precision"].default
    quantize: str | None = PASS_OPTIONS["quantize"].default
    autotune: str = "auto"
    strict: bool = PASS_OPTIONS["strict"].default
    fuel: int | None = None
    cache: bool = True
    remote_cache: str | None = None
    mode: str = "default"


def _from_env(opt: Option):
    raw = os.environ.get(opt.env) if opt.env else None
    if raw is None or raw == "":
        return opt.default
    if isinstance(opt.default, bool):
        return raw.lower() not in ("0", "false", "no", "off")
    value = raw
    if int in opt.types and float not in opt.types and raw.lower() != "none":
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{opt.env}={raw!r} is not a valid value for mlc option '{opt.name}' "
                             f"(an integer)") from None
    elif raw.lower() == "none" and type(None) in opt.types:
        value = None
    elif float in opt.types:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{opt.env}={raw!r} is not a valid value for mlc option '{opt.name}'") from None
    if opt.problem(value):
        raise ValueError(f"{opt.env}={raw!r}: mlc option '{opt.name}' {opt.problem(value)}")
    return value


@dataclass(frozen=True)
class Setting:
    """An option's value in a compile and what set it: ``"default"``, ``"options"``, its
    environment variable (``"MLC_AUTOTUNE"``), or the mode (``"mode 'max-autotune'"``)."""

    name: str
    value: object
    source: str

    def __str__(self) -> str:
        return f"{self.name}={_default(self.value)} ({self.source})"


def _resolve(mode: str | None, options: dict | None) -> tuple[str, dict, dict]:
    """(mode, value per option, what set each): options beat the environment, which beats the mode."""
    mode = mode or "default"
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}' for backend 'mlc'; valid modes: {', '.join(MODES)}")
    options = dict(options or {})
    known = {o.name: o for o in OPTIONS}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown mlc option(s) {', '.join(map(repr, unknown))}; valid options: {', '.join(known)}")
    values = {o.name: _from_env(o) for o in OPTIONS}
    sources = {o.name: o.env if os.environ.get(o.env or "") else "default" for o in OPTIONS}
    for name, value in MODE_OPTIONS.get(mode, {}).items():
        if sources[name] == "default":
            values[name], sources[name] = value, f"mode {mode!r}"
    for name, value in options.items():
        # Checked here, or a bad value fails deep inside a compile with no option named.
        problem = known[name].problem(value)
        if problem:
            raise ValueError(f"mlc option '{name}' {problem}, got {value!r}")
        values[name], sources[name] = value, "options"
    return mode, values, sources


def make_options(mode: str | None = None, options: dict | None = None) -> Options:
    """Validate ``mode`` and ``options`` from ``torch.compile`` and fill in the rest: the mode's
    options (``MODE_OPTIONS``), then defaults; ``options`` and environment variables win."""
    mode, values, _ = _resolve(mode, options)
    return replace(Options(), mode=mode, **values)


def settings(mode: str | None = None, options: dict | None = None) -> list[Setting]:
    """Every option's value for ``mode`` and ``options``, as ``make_options`` resolves it, with its source."""
    _, values, sources = _resolve(mode, options)
    return [Setting(o.name, values[o.name], sources[o.name]) for o in OPTIONS]


def cuda_graphs_note(mode: str | None, on_gpu: bool, interpret: bool = False) -> str | None:
    """What became of the CUDA graphs ``mode`` asks for (None: it asks for none)."""
    if mode not in CUDA_GRAPH_MODES:
        return None
    if on_gpu and not interpret:
        return (f"CUDA graphs: applied (mode {mode!r}): each graph's launch plan is recorded once per input "
                f"layout and replayed, inputs copied into its static buffers")
    why = "the kernels run in Triton's interpreter, on the host (interpret=True)" if on_gpu else \
        "the graphs run on CPU tensors (CUDA graphs capture GPU work only)"
    return f"CUDA graphs: not applied (mode {mode!r} asks for them): {why}"


def _default(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def options_markdown() -> str:
    """The README's options table (``python -m mlc options --markdown``)."""
    lines = ["| option | default | environment | what it does |", "|---|---|---|---|"]
    lines += [f"| `{o.name}` | `{_default(o.default)}` | `{o.env}` | {o.doc} |" for o in OPTIONS]
    return "\n".join(lines) + "\n"


MODES_DOC = ("\"max-autotune\" and \"max-autotune-no-cudagraphs\" set autotune=\"max\"; \"reduce-overhead\" and "
             "\"max-autotune\" ask for CUDA graphs, which mlc records on GPU tensors (mlc.explain says whether); "
             "an option given in options or by its environment variable wins over the mode")


def options_text() -> str:
    """Every option with its values, default, environment variable and doc (``mlc options``)."""
    lines = []
    for o in OPTIONS:
        lines.append(f"{o.name}: {o.describe()}; default {_default(o.default)}; environment {o.env}")
        lines += textwrap.wrap(o.doc, 96, initial_indent="    ", subsequent_indent="    ")
    lines.append("mode (torch.compile's own argument, not an option): one of " + ", ".join(map(repr, MODES)))
    lines += textwrap.wrap(MODES_DOC, 96, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


assert [f.name for f in fields(Options)] == [o.name for o in OPTIONS] + ["mode"]
assert all(getattr(Options(), o.name) == o.default for o in OPTIONS), "Options' defaults are OPTIONS'"
