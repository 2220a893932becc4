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

from .backend import CompiledGraph, _on_gpu, mlc_backend
from .cost import count_eager, training_loss
from .ir.graph import Graph
from .ir.reference import bind_symbols
from .logs import trace
from .options import cuda_graphs_note, make_options, settings
from .report.build import report_graph
from .report import (Accuracy, GraphReport, KernelReport, Launch, Report, accuracy, format_config, format_grid,
                     format_table, fused_ops, graph_counts, pass_counts)


def explain(fn, *example_inputs, **options) -> Report:
    """Compile ``fn`` with mlc, run it once on ``example_inputs`` (under ``no_grad``) and report.

    Options are those of ``torch.compile(..., options=...)``, plus ``mode`` and ``dynamic``.
    ``backward=True`` reports a training step instead: the call runs with grad, then the
    backward of the sum of its outputs that require grad, so the forward and backward graphs
    are both reported, each forward with what it saves for the backward (``saved``), and the
    eager figures count the same step.
    The eager figures count ``fn`` run by PyTorch, one launch per non-view ATen op; the
    report's ``accuracy`` compares the compiled outputs with eager ones (with ``precision``
    "bf16", say, that is the error of the lowered graph against the fp32 model).
    """
    mode = options.pop("mode", None)
    dynamic = options.pop("dynamic", None)
    backward = options.pop("backward", False)
    opts = make_options(mode, options)
    compiled: list[CompiledGraph] = []

    def watch(imported: Graph, graph: CompiledGraph):
        graph.record = True
        compiled.append(graph)

    backend = functools.partial(mlc_backend, mode=mode, options=options, _on_compile=watch)
    torch._dynamo.reset()
    try:
        with torch.enable_grad() if backward else torch.no_grad():
            actual = torch.compile(fn, backend=backend, dynamic=dynamic)(*example_inputs)
            if backward:  # the backward graphs compile (and are reported) when the backward first runs
                training_loss(actual).backward()
    finally:
        torch._dynamo.reset()
    graphs, kernels = [], []
    for cg in compiled:
        env = bind_symbols(cg.graph, cg.last_args) if cg.last_args is not None else {}
        cg.record, cg.last_args = False, None
        graph, graph_kernels = report_graph(cg, env)
        graphs.append(graph)
        kernels += graph_kernels
    with torch.no_grad():
        expected = fn(*example_inputs)
    on_gpu = any(_on_gpu(cg.graph) for cg in compiled)
    note = cuda_graphs_note(opts.mode, on_gpu, opts.interpret)
    report = Report(graphs, kernels, count_eager(fn, *example_inputs, backward=backward),
                    notes=[note] if note else [], accuracy=accuracy(actual, expected), mode=opts.mode,
                    settings=settings(mode, options))
    trace("mlc_explain", report.text)
    return report


__all__ = ["Accuracy", "GraphReport", "KernelReport", "Launch", "Report", "accuracy", "explain", "format_config",
           "format_grid", "report_graph", "format_table", "fused_ops", "graph_counts", "pass_counts"]
