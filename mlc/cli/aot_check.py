"""``mlc aot-check``: compile the kernels mlc generates for NVIDIA GPUs ahead of time, without a GPU.

``collect_kernels`` gathers the kernels mlc generates for the model zoo
(``mlc.testing.models``), forward and backward, deduplicated by source and argument types;
``check_kernels`` compiles each for each GPU with ``mlc.codegen.aot.compile_for_gpu``. Each
result reports registers, spills and shared memory (``ptxas -v``), source lines and compile
time; a kernel over ``LINES_BUDGET`` or ``SECONDS_BUDGET`` is flagged (``over_budget``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from ..backend import mlc_backend
from ..codegen.aot import ARCHS, AotResult, compile_for_gpu, kernel_id
from ..codegen.compile import load_kernel
from ..codegen.templates import PERSISTENT_LIMIT, KernelSource, generate
from ..frontend.decompositions import decompositions
from ..frontend.fx import UnsupportedGraph, import_fx
from ..ir import ParseError, VerifyError, parse_graphs, verify
from ..ir.graph import Graph
from ..options import make_options
from ..passes import build_pipeline, run_passes
from ..testing.models import MODELS


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


# What a kernel may cost before aot-check flags it (flagged kernels do not fail the check).
# Lines: fusion keeps a region's kernel within mlc.passes.fuse.BUDGET (200 lines of body); the
# module's head (signature, helpers) adds a few dozen, so a longer kernel is a region that
# escaped it, or one op with very many operands (a cat of a hundred tensors).
# Seconds: Triton's pipeline and ptxas for one GPU; the zoo's kernels take about a second or
# less, and a GPU run pays this at each kernel's first launch. Wall time: with --jobs > 1
# compiles overlap.
LINES_BUDGET = 300
SECONDS_BUDGET = 10.0


def over_budget(r: AotResult) -> list[str]:
    """What is over budget in one result: its source lines, its compile time."""
    out = []
    if r.lines > LINES_BUDGET:
        out.append(f"{r.lines} source lines (budget {LINES_BUDGET})")
    if r.seconds > SECONDS_BUDGET:
        out.append(f"{r.seconds:.1f} s to compile (budget {SECONDS_BUDGET:g} s)")
    return out


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
    "vit_block": [{}, {"hw": 32, "patch": 4, "d_model": 384, "n_heads": 6, "d_ff": 1536}],  # 65 tokens, head dim 64
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
    """mlc's front end (AOT autograd with its decompositions, ``import_fx``) and its passes at the
    default options, with each graph then running as its FX graph. Inference graphs are not frozen here."""
    graphs: list[Graph] = []
    passes = build_pipeline(make_options())

    def compiler(kind):
        def compile_fn(gm, example_inputs):
            try:
                graphs.append(run_passes(import_fx(gm, f"{kind}_{len(graphs)}").graph, passes))
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
        size = (f", up to {max(r.lines for r in ok)} source lines and {max(r.seconds for r in ok):.2f} s to compile"
                if ok else "")
        lines.append(f"sm_{a}: {len(ok)} compiled, {sum(1 for r in results if r.arch == a and not r.ok)} failed, "
                     f"{regs}, {smem}, {len(spilled)} with spills{size}")
    for r in results:
        if r.ok and r.spills:
            lines.append(f"spills: {r.name} [{r.hash}] sm_{r.arch}: {r.spill_stores} B stored, "
                         f"{r.spill_loads} B loaded, {r.registers} registers, config {r.config}")
    for r in results:
        if over_budget(r):
            lines.append(f"over budget: {r.name} [{r.hash}] sm_{r.arch}: {'; '.join(over_budget(r))}")
    n_kernels = len(results) // max(len(archs), 1)  # one result per kernel and arch
    failed = [r for r in results if not r.ok]
    spilled = [r for r in results if r.ok and r.spills]
    over = [r for r in results if over_budget(r)]
    lines.append(f"aot-check: {n_kernels} kernels x {len(archs)} archs ({', '.join(f'sm_{a}' for a in archs)}): "
                 f"{len(results) - len(failed)} compiled, {len(failed)} failed, {len(spilled)} with spills, "
                 f"{len(over)} over budget")
    return lines


def ir_kernels(path: str) -> list[Kernel]:
    """The graphs of an IR text file, each taken as one kernel body (no passes)."""
    with open(path) as f:
        graphs = parse_graphs(f.read())
    return kernels_of([(f"{path}:{g.name}", verify(g)) for g in graphs])


def main(args) -> int:
    """``mlc aot-check``; ``args`` from the argument parser in ``mlc.__main__``."""

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
        flags = over_budget(r)
        print(r.line() + (f"  OVER BUDGET: {'; '.join(flags)}" if flags else ""))
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


__all__ = ["LINES_BUDGET", "SECONDS_BUDGET", "Kernel", "Variant", "capture_graphs", "check_kernels", "collect_kernels",
           "ir_kernels", "kernel_bodies", "kernels_of", "main", "over_budget", "summary", "variants"]
