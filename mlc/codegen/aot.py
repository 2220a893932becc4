"""Ahead-of-time GPU compiles of generated kernels, without a GPU: ``python -m mlc aot-check``.

The test suite runs kernels in Triton's CPU interpreter, which accepts code that the GPU
compiler rejects (a scalar where a block is needed, mismatched ``tl.where`` branches, ...).
Here every kernel goes through Triton's real NVIDIA pipeline (TTIR -> TTGIR -> LLVM -> PTX)
for a chosen compute capability, and the wheel's ``ptxas -v`` reports what the kernel costs
on that GPU: registers per thread, bytes spilled to local memory, shared memory.

``collect_kernels`` gathers the kernels mlc generates for the model zoo
(``mlc.testing.models``), forward and backward, deduplicated by source and argument types.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Iterable

import sympy
import torch

from ..ir.graph import Graph
from .compile import load_kernel, source_hash
from .config import PERSISTENT_LIMIT, launch_config, matmul_config, operand_itemsize
from .kernel import CodegenError, KernelSource, generate

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
                f"smem {self.shared:6}  [{self.hash}]")


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
    if ks.kind == "matmul":
        m, n, k, _ = (representative(d) for d in ks.mnk)
        return matmul_config(m, n, k, interpret=False, itemsize=operand_itemsize(ks))
    return launch_config(ks, representative(ks.numel), representative(ks.rnumel), interpret=False)


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
    res = AotResult(ks.name, arch, kernel_id(ks), ks.kind, config)
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
    res.registers, res.stack = stats["registers"], stats["stack"]
    res.spill_stores, res.spill_loads = stats["spill_stores"], stats["spill_loads"]
    res.shared = int(getattr(compiled.metadata, "shared", 0) or 0) + stats["shared"]
    limit = MAX_SHARED.get(arch)
    if limit is not None and res.shared > limit:
        res.error = f"needs {res.shared} bytes of shared memory; sm_{arch} allows {limit}"
        return res
    res.ok = True
    return res


# --------------------------------------------------------------------------------------
# Kernels of the model zoo
# --------------------------------------------------------------------------------------

@dataclass
class Kernel:
    """A generated kernel and the graphs it came from (or why it could not be generated)."""

    source: KernelSource | None
    origins: list[str]
    name: str = ""
    error: str | None = None  # why there is no source (generate raised)

    @property
    def hash(self) -> str:
        return kernel_id(self.source) if self.source else ""


def kernel_bodies(graph: Graph) -> list[Graph]:
    """The bodies of a (fused) graph's kernel nodes, in order."""
    return [n.attrs["body"] for n in graph.nodes if n.op == "kernel"]


def kernels_of(bodies: Iterable[tuple[str, Graph]]) -> list[Kernel]:
    """Kernels of (origin, kernel body) pairs, generated as the runtime does, deduplicated by ``kernel_id``."""
    found: dict[str, Kernel] = {}
    for origin, body in bodies:
        try:
            ks = generate(body, PERSISTENT_LIMIT, interpret=False)
        except Exception as e:  # noqa: BLE001 - a CodegenError, or a crash: the kernel has no source
            k = found.setdefault(f"codegen:{body}", Kernel(None, [], name=body.name, error=f"{type(e).__name__}: {e}"))
        else:
            k = found.setdefault(kernel_id(ks), Kernel(ks, [], name=ks.name))
        if origin not in k.origins:
            k.origins.append(origin)
    return list(found.values())


# What to compile: the zoo at its (tiny) test sizes, and at sizes like a real run's, where
# rows no longer fit one block and the looped reduction template is used.
SIZES = {
    "mlp": [{}, {"d_in": 1024, "d_hidden": 4096, "d_out": 1000}],
    "gpt2_block": [{}, {"d_model": 768, "n_heads": 12, "seq": 256}],
    "llama_block": [{}, {"d_model": 512, "n_heads": 8, "n_kv_heads": 4, "d_ff": 1408, "max_seq": 256, "seq": 256}],
    "conv_block": [{}, {"c": 32, "hw": 32}],
    "embedding_classifier": [{}, {"vocab": 8192, "d_model": 512, "n_classes": 1000, "seq": 64}],
}
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Variant:
    """One way of compiling a model: mode (inference or training), dtype, sizes, dynamic shapes."""

    train: bool
    dtype: str
    sizes: tuple = ()
    dynamic: bool = False

    def label(self, model: str) -> str:
        size = "large" if self.sizes else "small"
        return f"{model}/{'train' if self.train else 'infer'}/{self.dtype}/{size}{'/dynamic' if self.dynamic else ''}"


def variants(model: str, quick: bool = False) -> list[Variant]:
    """Full: inference and training x three dtypes x two sizes, plus dynamic shapes in fp32.

    Quick: inference and training, fp32 and bf16, small sizes, plus dynamic fp32 training.
    """
    sizes = [tuple(sorted(s.items())) for s in SIZES.get(model, [{}])]
    if quick:
        out = [Variant(t, d, sizes[0]) for t in (False, True) for d in ("f32", "bf16")]
        return out + [Variant(True, "f32", sizes[0], dynamic=True)]
    out = [Variant(t, d, s) for s in sizes for t in (False, True) for d in DTYPES]
    return out + [Variant(t, "f32", sizes[0], dynamic=True) for t in (False, True)]


def capture_graphs(model: str, variant: Variant, batch: int = 2) -> tuple[list[Graph], str | None]:
    """The graphs mlc compiles for one model run, after its passes (kernels are ``kernel`` nodes):
    the inference graph, or in training the forward and backward graphs.

    This is ``torch.compile(backend="mlc")`` itself, with the hook ``mlc.capture`` uses. The
    inputs are CPU tensors, so the compiled graphs run through mlc's reference executor and
    no kernel is launched. If that run fails, the graphs are captured again with the graphs
    running as the FX graphs they came from (``_capture_unexecuted``); the second result then
    says what failed.
    """
    from ..backend import mlc_backend

    graphs: list[Graph] = []
    backend = functools.partial(mlc_backend, options={"interpret": False},
                                _on_compile=lambda imported, compiled: graphs.append(compiled.graph))
    try:
        _run(model, variant, batch, backend)
        return graphs, None
    except Exception as e:  # noqa: BLE001 - a bug outside codegen; the kernels can still be checked
        note = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    return _capture_unexecuted(model, variant, batch), note


def _run(model: str, variant: Variant, batch: int, backend):
    from ..testing.models import MODELS

    module, inputs = MODELS[model].build(batch=batch, dtype=DTYPES[variant.dtype], train=variant.train,
                                         **dict(variant.sizes))
    torch._dynamo.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "runs op by op through torch", fallbacks named
            compiled = torch.compile(module, backend=backend, dynamic=variant.dynamic)
            if variant.train:
                compiled(*inputs).float().square().mean().backward()
            else:
                with torch.no_grad():
                    compiled(*inputs)
    finally:
        torch._dynamo.reset()


def _capture_unexecuted(model: str, variant: Variant, batch: int) -> list[Graph]:
    """mlc's front end (AOT autograd with its decompositions, ``import_fx``) and ``PIPELINE``,
    with each graph then running as its FX graph. Inference graphs are not frozen here."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    from ..frontend.decompositions import decompositions
    from ..frontend.fx import UnsupportedGraph, import_fx
    from ..passes import PIPELINE, run_passes

    graphs: list[Graph] = []

    def compiler(kind):
        def compile_fn(gm, example_inputs):
            try:
                graphs.append(run_passes(import_fx(gm, f"{kind}_{len(graphs)}").graph, PIPELINE))
            except UnsupportedGraph:
                pass  # mlc gives this graph to PyTorch whole: no kernels
            return make_boxed_func(gm.forward)
        return compile_fn

    def backend(gm, example_inputs):
        return aot_autograd(fw_compiler=compiler("forward"), bw_compiler=compiler("backward"),
                            inference_compiler=compiler("inference"),
                            decompositions=decompositions())(gm, example_inputs)

    _run(model, variant, batch, backend)
    return graphs


def collect_kernels(models: Iterable[str] | None = None, quick: bool = False, progress=None,
                    notes: list[str] | None = None) -> list[Kernel]:
    """The kernels mlc generates for zoo models (all by default), deduplicated by ``kernel_id``.

    ``progress(label)`` is called before each variant; ``notes`` receives a line for each
    variant whose compiled run failed (see ``capture_graphs``).
    """
    from ..testing.models import MODELS

    models = list(MODELS) if models is None else list(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise KeyError(f"unknown model {', '.join(unknown)}; known models: {', '.join(MODELS)}")
    bodies = []
    for m in models:
        for v in variants(m, quick):
            if progress:
                progress(v.label(m))
            graphs, note = capture_graphs(m, v)
            if note and notes is not None:
                notes.append(f"{v.label(m)}: the compiled model failed on CPU ({note}); "
                             f"its graphs were captured without running them")
            for g in graphs:
                bodies += [(f"{v.label(m)}:{g.name}", body) for body in kernel_bodies(g)]
    return kernels_of(bodies)


def check_kernels(kernels: list[Kernel], archs: Iterable[int] = ARCHS, jobs: int = 1) -> list[AotResult]:
    """Compile each kernel for each arch; results in kernel order, archs inner."""
    tasks = [(k, a) for k in kernels for a in archs]

    def one(task):
        k, a = task
        if k.source is None:
            return AotResult(k.name, a, ok=False, error=k.error, origins=k.origins)
        r = compile_for_gpu(k.source, a)
        r.origins = k.origins
        return r

    if jobs <= 1 or len(tasks) <= 1:
        return [one(t) for t in tasks]
    for k in kernels:  # import the modules first, one at a time: loading flips Triton's global interpret switch
        if k.source is not None:
            with contextlib.suppress(Exception):  # the compile reports it
                load_kernel(k.source, interpret=False)
    from concurrent.futures import ThreadPoolExecutor

    # Threads: each compile ends in two ptxas subprocesses (Triton's and ours), which overlap.
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, tasks))


def summary(results: list[AotResult]) -> list[str]:
    """Summary lines: per arch the register range, then totals (compiled, failed, with spills)."""
    lines = []
    archs = sorted({r.arch for r in results})
    for a in archs:
        ok = [r for r in results if r.arch == a and r.ok]
        regs = f"registers {min(r.registers for r in ok)}-{max(r.registers for r in ok)}" if ok else "no registers"
        smem = f"shared memory up to {max(r.shared for r in ok)} B" if ok else ""
        spilled = [r for r in ok if r.spills]
        lines.append(f"sm_{a}: {len(ok)} compiled, {sum(1 for r in results if r.arch == a and not r.ok)} failed, "
                     f"{regs}, {smem}, {len(spilled)} with spills")
    for r in results:
        if r.ok and r.spills:
            lines.append(f"spills: {r.name} [{r.hash}] sm_{r.arch}: {r.spill_stores} B stored, "
                         f"{r.spill_loads} B loaded, {r.registers} registers, config {r.config}")
    n_kernels = len(results) // max(len(archs), 1)  # one result per kernel and arch
    failed = [r for r in results if not r.ok]
    spilled = [r for r in results if r.ok and r.spills]
    lines.append(f"aot-check: {n_kernels} kernels x {len(archs)} archs ({', '.join(f'sm_{a}' for a in archs)}): "
                 f"{len(results) - len(failed)} compiled, {len(failed)} failed, {len(spilled)} with spills")
    return lines


def ir_kernels(path: str) -> list[Kernel]:
    """The graphs of an IR text file, each taken as one kernel body (no passes)."""
    from ..ir import parse_graphs, verify

    with open(path) as f:
        graphs = parse_graphs(f.read())
    return kernels_of([(f"{path}:{g.name}", verify(g)) for g in graphs])


def main(args) -> int:
    """``mlc aot-check``; ``args`` from the argument parser in ``mlc.__main__``."""
    import sys
    import time

    from ..ir import ParseError, VerifyError
    from ..testing.models import MODELS

    def fail(msg):
        print(f"mlc aot-check: {msg}", file=sys.stderr)
        return 2

    try:
        archs = [int(a.strip().lower().removeprefix("sm_")) for a in args.arch.split(",") if a.strip()]
    except ValueError:
        return fail(f"bad --arch '{args.arch}': expected compute capabilities such as 80,90")
    if not archs:
        return fail("--arch names no architecture")
    unsupported = [a for a in archs if a < 75 or a >= 100]
    if unsupported:
        return fail(f"unsupported --arch {', '.join(map(str, unsupported))}: expected 75 to 90 (sm_75 to sm_90)")
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        models = [] if args.ir else list(MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        return fail(f"unknown model {', '.join(unknown)}; known models: {', '.join(MODELS)}")
    kernels: list[Kernel] = []
    for path in args.ir:
        try:
            kernels += ir_kernels(path)
        except OSError as e:
            return fail(f"cannot read {path}: {e.strerror}")
        except (ParseError, VerifyError) as e:
            return fail(f"{path}: {str(e).splitlines()[0]}")
    start = time.perf_counter()
    progress = (lambda s: print(f"capturing {s}", file=sys.stderr, flush=True)) if args.verbose else None
    notes: list[str] = []
    if models:
        kernels += collect_kernels(models, quick=args.quick, progress=progress, notes=notes)
    jobs = args.jobs or min(8, os.cpu_count() or 1)
    results = check_kernels(kernels, archs, jobs=jobs)
    for r in results:
        print(r.line())
        if args.verbose and not r.ok:
            print("    from " + ", ".join(r.origins[:5]) + (" ..." if len(r.origins) > 5 else ""))
            print("    " + (r.error or "").strip().replace("\n", "\n    "))
    for ln in notes:
        print(f"note: {ln}")
    for ln in summary(results):
        print(ln)
    if args.verbose:
        print(f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 1 if any(not r.ok for r in results) else 0


__all__ = ["AotResult", "Kernel", "ARCHS", "aot_config", "capture_graphs", "check_kernels", "collect_kernels",
           "compile_for_gpu", "ir_kernels", "kernel_id", "kernels_of", "run_ptxas", "summary", "variants"]
