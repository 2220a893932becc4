"""Ahead-of-time GPU compiles of one generated kernel, without a GPU.

The test suite runs kernels in Triton's CPU interpreter, which accepts code that the GPU
compiler rejects (a scalar where a block is needed, mismatched ``tl.where`` branches, ...).
Here every kernel goes through Triton's real NVIDIA pipeline (TTIR -> TTGIR -> LLVM -> PTX)
for a chosen compute capability, and the wheel's ``ptxas -v`` reports what the kernel costs
on that GPU: registers per thread, bytes spilled to local memory, shared memory; beside them
the kernel's source lines and how long the compile took (Triton's pipeline and ptxas).

``mlc aot-check`` (``mlc.cli.aot_check``) runs this over the kernels of the model zoo.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import sympy

from .compile import load_kernel, source_hash
from .source import KernelSource
from .templates import template_of
from .writer import CodegenError

ARCHS = (80, 90)
LAUNCH_OPTIONS = ("num_warps", "num_stages")  # the rest of a launch config are constexprs
REPRESENTATIVE_SIZE = 1024  # the value of every size symbol when a kernel's sizes are symbolic
# Shared memory one block may use (bytes), per compute capability; more cannot be launched.
MAX_SHARED = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}


@dataclass
class AotResult:
    """One kernel compiled for one GPU."""

    name: str
    arch: int
    hash: str = ""  # kernel_id: of the kernel's source and argument types
    kind: str = ""
    config: dict = field(default_factory=dict)  # constexprs and launch options it was compiled with
    registers: int = 0  # per thread
    spill_stores: int = 0  # bytes
    spill_loads: int = 0  # bytes
    stack: int = 0  # bytes of stack frame
    shared: int = 0  # bytes: Triton's dynamic shared memory plus any static
    lines: int = 0  # of the kernel's Triton source (the whole module)
    seconds: float = 0.0  # the compile: Triton's pipeline to PTX, then ptxas
    ok: bool = False
    error: str | None = None
    origins: list[str] = field(default_factory=list)  # which graphs produced the kernel

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads

    def line(self) -> str:
        if not self.ok:
            where = f"  [{self.hash}]" if self.hash else ""
            return f"{self.name:40} sm_{self.arch}  FAILED  {first_line(self.error)}{where}"
        spill = f"{self.spill_stores}/{self.spill_loads} B" if self.spills else "0"
        return (f"{self.name:40} sm_{self.arch}  regs {self.registers:3}  spills {spill:9}  "
                f"smem {self.shared:6}  lines {self.lines:4}  compile {self.seconds:5.2f} s  [{self.hash}]")


def first_line(text: str | None) -> str:
    """The most informative line of a (possibly long, multi-line) compiler error."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    at = re.match(r"(\w+): at (\d+:\d+):", lines[0])
    if at:  # triton's CompilationError: "at 12:4:", the source, a caret, then the message
        return f"{at.group(1)} at line {at.group(2)} of the kernel: {lines[-1]}"
    for ln in lines:  # ptxas: "ptxas /tmp/x.ptx, line 12; error   : ..."
        if re.match(r"ptxas\b.*\b(error|fatal)\s*:", ln):
            return ln
    return lines[0]


# --------------------------------------------------------------------------------------
# One kernel
# --------------------------------------------------------------------------------------

def kernel_id(ks: KernelSource) -> str:
    """What tells two kernels apart: the source, and the argument types (the same source
    reading i16 or i32 pointers compiles to different code)."""
    sig = ",".join(f"{a}:{t}" for a, t in ks.signature.items())
    return source_hash(ks.source + "\n# " + sig)


def representative(expr, value: int = REPRESENTATIVE_SIZE) -> int | None:
    """A size as an int: symbols take ``value``."""
    if expr is None or isinstance(expr, int):
        return expr
    e = sympy.sympify(expr)
    return int(e.xreplace({s: value for s in e.free_symbols}))


def aot_config(ks: KernelSource) -> dict:
    """The launch configuration a GPU run would use (as the runtime's plan picks it), at representative sizes."""
    sizes = tuple(representative(d) for d in ks.launch)
    return template_of(ks).fixed_config(ks, sizes, interpret=False)


@functools.lru_cache(maxsize=None)
def _sm(arch: int) -> str:
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    return sm_arch_from_capability(arch)  # sm_90a for 90, as Triton itself compiles


def ptxas_path(arch: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(arch).path


_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def run_ptxas(ptx: str, arch: int) -> dict:
    """``ptxas -v`` on PTX text: registers, spill bytes, static shared memory, stack frame.

    Flags as Triton's own cubin step uses them, so the counts are those of the real binary.
    Raises ``RuntimeError`` with ptxas's output if it rejects the PTX.
    """
    with tempfile.TemporaryDirectory(prefix="mlc-aot-") as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [ptxas_path(arch), "-v", "--regAllocOptLevel=2", f"--gpu-name={_sm(arch)}", src,
               "-o", os.path.join(d, "k.cubin")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed (exit code {proc.returncode}):\n{log}")
    used, frame, smem = _USED.search(log), _FRAME.search(log), _SMEM.search(log)
    if used is None:
        raise RuntimeError(f"cannot read the register count from ptxas -v:\n{log}")
    return {"registers": int(used.group(1)), "shared": int(smem.group(1)) if smem else 0,
            "stack": int(frame.group(1)) if frame else 0,
            "spill_stores": int(frame.group(2)) if frame else 0, "spill_loads": int(frame.group(3)) if frame else 0}


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Triton's fp-fusion default notice, once per process
        yield


def compile_for_gpu(ks: KernelSource, arch: int, config: dict | None = None) -> AotResult:
    """Compile one kernel for ``sm_<arch>`` with Triton, then measure it with ``ptxas -v``.

    ``config`` holds the constexprs (``BLOCK_SIZE``, ``XBLOCK``/``RBLOCK`` or the matmul tiles)
    and the launch options ``num_warps`` (and ``num_stages``); by default ``aot_config(ks)``.
    Never raises for a bad kernel: the result says ``ok=False`` with the compiler's error.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    config = dict(config or aot_config(ks))
    res = AotResult(ks.name, arch, kernel_id(ks), ks.kind, config, lines=len(ks.source.splitlines()))
    start = time.perf_counter()
    try:
        fn = load_kernel(ks, interpret=False)
        constexprs = {k: v for k, v in config.items() if k not in LAUNCH_OPTIONS}
        signature = {a: ks.signature[a] if a in ks.signature else "constexpr" for a in fn.arg_names}
        missing = [a for a in fn.arg_names if signature[a] == "constexpr" and a not in constexprs]
        if missing:
            raise CodegenError(f"no value for the constexpr arguments {', '.join(missing)}")
        # Pointers from the torch allocator are 16-byte aligned; the JIT specializes on that.
        attrs = {(k,): [["tt.divisibility", 16]] for k, a in enumerate(fn.arg_names)
                 if signature[a].startswith("*")}
        src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
        with _quiet():
            compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                      options={k: config[k] for k in LAUNCH_OPTIONS if k in config})
        stats = run_ptxas(compiled.asm["ptx"], arch)
    except Exception as e:  # noqa: BLE001 - any compiler failure is the kernel's result
        res.error = f"{type(e).__name__}: {e}"
        return res
    finally:
        res.seconds = time.perf_counter() - start
    res.registers, res.stack = stats["registers"], stats["stack"]
    res.spill_stores, res.spill_loads = stats["spill_stores"], stats["spill_loads"]
    res.shared = int(getattr(compiled.metadata, "shared", 0) or 0) + stats["shared"]
    limit = MAX_SHARED.get(arch)
    if limit is not None and res.shared > limit:
        res.error = f"needs {res.shared} bytes of shared memory; sm_{arch} allows {limit}"
        return res
    res.ok = True
    return res


__all__ = ["AotResult", "ARCHS", "aot_config", "compile_for_gpu", "kernel_id", "run_ptxas"]
