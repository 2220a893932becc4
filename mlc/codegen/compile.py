"""Loading generated kernels and launching them.

A kernel's module is written once to ``<cache>/kernels/<name>_<hash>.py`` (the hash covers
the source), so the file is both the kernel cache and what Triton reads the source from.
``interpret=True`` loads it with Triton's CPU interpreter; otherwise it is JIT-compiled for
the GPU on first launch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import tempfile
import warnings

import sympy
import triton

from .source import KernelSource


def cache_dir() -> str:
    """Where mlc keeps what it compiles (``mlc.cache``): ``MLC_CACHE_DIR``, else ``~/.cache/mlc``."""
    root = os.environ.get("MLC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mlc")
    return root


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def write_module(ks: KernelSource) -> str:
    d = os.path.join(cache_dir(), "kernels")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{ks.name}_{source_hash(ks.source)}.py")
    try:
        with open(path) as f:
            on_disk = f.read()
    except FileNotFoundError:
        on_disk = None
    except (OSError, UnicodeDecodeError) as e:
        on_disk = f"unreadable: {e}"
    if on_disk != ks.source:
        if on_disk is not None:  # truncated or overwritten: the hash in its name says what it must hold
            warnings.warn(f"mlc: the cached kernel module {path} does not hold its source; rewriting it",
                          stacklevel=3)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(ks.source)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
    return path


@contextlib.contextmanager
def _interpreter(on: bool):
    """Set Triton's interpret switch while a module's ``@triton.jit`` decorators run."""
    knobs = triton.knobs.runtime
    old_env = os.environ.get("TRITON_INTERPRET")
    old = knobs.__dict__.get("interpret", None)
    knobs.interpret = on
    try:
        yield
    finally:
        if old is None:
            knobs.__dict__.pop("interpret", None)
        else:
            knobs.__dict__["interpret"] = old
        if old_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old_env


@functools.lru_cache(maxsize=None)
def _load(path: str, name: str, interpret: bool):
    spec = importlib.util.spec_from_file_location(f"mlc_kernel_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    with _interpreter(interpret):
        spec.loader.exec_module(module)
    return getattr(module, name)


def load_kernel(ks: KernelSource, interpret: bool):
    return _load(write_module(ks), ks.name, interpret)


def sizes_fn(exprs, symbols):
    """A fast function from symbol values to the given size expressions (ints pass through)."""
    if all(isinstance(e, int) for e in exprs):
        values = [int(e) for e in exprs]
        return lambda *_: values
    return sympy.lambdify(symbols, [sympy.sympify(e) for e in exprs], "math")


def next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()
