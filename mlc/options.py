"""Compile options: what ``torch.compile(..., backend="mlc", options={...})`` accepts.

Each option is declared once here, with its default, the environment variable that can
set it, and its documentation (the README's options table is generated from ``OPTIONS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Option:
    name: str
    default: object
    env: str | None
    doc: str
    types: tuple[type, ...] = ()  # what a value may be, if not just the default's type (bool)


OPTIONS = [
    Option("dump_dir", None, "MLC_DUMP_DIR",
           "directory to write the IR after each pass into, one file per pass, headed by its name and time",
           types=(str, os.PathLike, type(None))),
    Option("verify", False, "MLC_VERIFY",
           "run the IR verifier after every pass (the test suite turns this on)"),
    Option("interpret", False, "MLC_INTERPRET",
           "run generated kernels on CPU tensors in Triton's interpreter; without it, CPU graphs run "
           "op by op through torch (with a warning), since Triton kernels need a GPU"),
]

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Options:
    dump_dir: str | None = None
    verify: bool = False
    interpret: bool = False
    mode: str = "default"


def _from_env(opt: Option):
    raw = os.environ.get(opt.env) if opt.env else None
    if raw is None or raw == "":
        return opt.default
    if isinstance(opt.default, bool):
        return raw.lower() not in ("0", "false", "no", "off")
    return raw


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
        values[name] = value
    return replace(Options(), mode=mode, **values)


assert {f.name for f in fields(Options)} == {o.name for o in OPTIONS} | {"mode"}
