"""``mlc.explain``: what mlc did to a function, and what it costs against eager PyTorch.

The report tells the whole story of a compile: the IR after each pass with its time, every
fusion decision (what each kernel fused, and each pair of neighbours that was not fused and
why), every generated kernel with its Triton source, launch grid and configuration, the
modeled cost of every launch on a named GPU (``cost.GPUS``) with the roof that bounds it,
and the ops that ran through ATen. ``str(report)`` is a text summary; ``save_html`` writes
one self-contained page with the graph drawn.

The report's dataclasses, text and HTML forms are in ``mlc.report``; this module compiles
and collects them (and re-exports them, so ``mlc.explain.Report`` and the rest still work).
"""

from __future__ import annotations

import functools

import torch

from .backend import CompiledGraph, mlc_backend
from .cost import count_eager, graph_cost, kernel_cost
from .ir.graph import Graph, Node
from .ir.reference import bind_symbols
from .options import make_options
from .report import (Accuracy, GraphReport, KernelReport, Launch, Report, accuracy, format_config, format_grid,
                     format_table, fused_ops, graph_counts, pass_counts)
from .runtime.plan import KernelLaunch


def _grid(launch: KernelLaunch, env: dict) -> tuple[tuple[int, ...] | None, dict]:
    """The grid and the configuration ``launch`` uses for the sizes in ``env``, as its ``__call__`` does
    (no grid when the autotuner chose to run a matmul kernel through ATen)."""
    _, sizes, _ = launch.call_sizes(env)
    meta, options = launch.config(sizes)
    return launch.grid(sizes, meta), {**meta, **options}


def _kernel_report(node: Node, graph: str, launch: KernelLaunch | None, env: dict,
                   failure: str | None = None) -> KernelReport:
    """A kernel's report. ``launch`` is the plan's (None when no plan ran kernels, or the kernel
    could not be built); ``failure`` what the plan's safety net caught for it."""
    body: Graph = node.attrs["body"]
    nbytes, flops = kernel_cost(node, env)
    if launch is None and failure is None:  # nothing ran kernels (the reference executor): what a GPU would launch
        try:
            launch = KernelLaunch(body, interpret=False)
        except Exception as e:  # noqa: BLE001 - a report describes a kernel that cannot be built, it does not fail
            failure = f"could not be generated or loaded: {type(e).__name__}: {e}"
    if launch is None:
        return KernelReport(body.name, graph, "", str(body), nbytes, flops, "-", fused_ops(body), None, {}, "-",
                            None, fallback=failure)
    grid, config = _grid(launch, env) if all(s in env for s in launch.symbols) else (None, {})
    if launch.interpret:  # the interpreter ignores warps and stages; the plan passes none
        config = {k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}
    tuning = getattr(launch, "tuning", None)
    return KernelReport(body.name, graph, launch.source.source, str(body), nbytes, flops, launch.source.kind,
                        fused_ops(body), grid, config, "interpreter" if launch.interpret else "GPU",
                        None if tuning is None else str(tuning), launch.source.layout, failure)


def explain(fn, *example_inputs, **options) -> Report:
    """Compile ``fn`` with mlc, run it once on ``example_inputs`` (under ``no_grad``) and report.

    Options are those of ``torch.compile(..., options=...)``, plus ``mode`` and ``dynamic``.
    The eager figures count ``fn`` run by PyTorch, one launch per non-view ATen op; the
    report's ``accuracy`` compares the compiled outputs with eager ones (with ``precision``
    "bf16", say, that is the error of the lowered graph against the fp32 model).
    """
    mode = options.pop("mode", None)
    dynamic = options.pop("dynamic", None)
    make_options(mode, options)
    compiled: list[CompiledGraph] = []

    def watch(imported: Graph, graph: CompiledGraph):
        graph.record = True
        compiled.append(graph)

    backend = functools.partial(mlc_backend, mode=mode, options=options, _on_compile=watch)
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            actual = torch.compile(fn, backend=backend, dynamic=dynamic)(*example_inputs)
    finally:
        torch._dynamo.reset()
    graphs, kernels = [], []
    for cg in compiled:
        env = bind_symbols(cg.graph, cg.last_args) if cg.last_args is not None else {}
        cg.record, cg.last_args = False, None
        g = cg.graph
        launches = iter(cg.plan.launches if cg.plan is not None else [])
        failures = cg.plan.failures if cg.plan is not None else {}
        for k, node in enumerate(n for n in g.nodes if n.op == "kernel"):
            kernels.append(_kernel_report(node, g.name, next(launches, None), env, failures.get(k)))
        fallbacks = [n.attrs["target"] for n in g.nodes if n.op == "aten"]
        graphs.append(GraphReport(g.name, str(g), cg.passes, list(g.notes), fallbacks, graph_cost(g, env), g,
                                  cg.cache))
    with torch.no_grad():
        expected = fn(*example_inputs)
    return Report(graphs, kernels, count_eager(fn, *example_inputs), accuracy=accuracy(actual, expected))


__all__ = ["Accuracy", "GraphReport", "KernelReport", "Launch", "Report", "accuracy", "explain", "format_config",
           "format_grid", "format_table", "fused_ops", "graph_counts", "pass_counts"]
