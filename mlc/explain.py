"""``mlc.explain``: what mlc did to a function, and what it costs against eager PyTorch."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from .backend import CompiledGraph, mlc_backend
from .codegen.kernel import generate
from .cost import Cost, count_eager, graph_cost, kernel_cost
from .ir.graph import Graph
from .options import make_options
from .passes import PassRecord
from .runtime.reference import bind_symbols


@dataclass
class KernelReport:
    name: str
    graph: str  # the compiled graph it belongs to
    source: str  # the generated Triton module
    ir: str  # the kernel's region, as IR text
    bytes: int
    flops: int


@dataclass
class GraphReport:
    name: str
    ir: str  # after the last pass
    passes: list[PassRecord]
    notes: list[str]  # fusion decisions, e.g. why two neighbours were not fused
    fallbacks: list[str]  # ATen ops run through PyTorch
    cost: Cost


@dataclass
class Report:
    """The story of one compile. ``str(report)`` is a readable summary."""

    graphs: list[GraphReport]
    kernels: list[KernelReport]
    eager: Cost
    notes: list[str] = field(default_factory=list)

    @property
    def launches(self) -> int:
        return sum(g.cost.launches for g in self.graphs)

    @property
    def bytes(self) -> int:
        return sum(g.cost.bytes for g in self.graphs)

    @property
    def flops(self) -> int:
        return sum(g.cost.flops for g in self.graphs)

    @property
    def passes(self) -> list[PassRecord]:
        return [p for g in self.graphs for p in g.passes]

    @property
    def fallbacks(self) -> list[str]:
        return [f for g in self.graphs for f in g.fallbacks]

    def __str__(self) -> str:
        lines = [f"mlc: {len(self.graphs)} graph(s), {len(self.kernels)} generated kernel(s)", "",
                 f"{'':12}{'launches':>10}{'MB moved':>12}{'GFLOP':>10}{'H100 us':>10}",
                 _row("mlc", self.launches, self.bytes, self.flops, sum(g.cost.time() for g in self.graphs)),
                 _row("eager", self.eager.launches, self.eager.bytes, self.eager.flops, self.eager.time())]
        for g in self.graphs:
            lines += ["", f"graph {g.name}: " + ", ".join(f"{p.name} {p.ms:.1f} ms" for p in g.passes)]
            for name, nbytes, flops in g.cost.items:
                lines.append(f"  {name:<48}{nbytes / 1e6:>10.3f} MB{flops / 1e9:>10.4f} GFLOP")
            lines += [f"  {n}" for n in g.notes]
            if g.fallbacks:
                lines.append("  runs through ATen: " + ", ".join(sorted(set(g.fallbacks))))
        return "\n".join(lines)


def _row(name, launches, nbytes, flops, seconds) -> str:
    return f"{name:12}{launches:>10}{nbytes / 1e6:>12.3f}{flops / 1e9:>10.4f}{seconds * 1e6:>10.1f}"


def explain(fn, *example_inputs, **options) -> Report:
    """Compile ``fn`` with mlc, run it once on ``example_inputs`` (under ``no_grad``) and report.

    Options are those of ``torch.compile(..., options=...)``, plus ``mode`` and ``dynamic``.
    The eager figures count ``fn`` run by PyTorch, one launch per non-view ATen op.
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
            torch.compile(fn, backend=backend, dynamic=dynamic)(*example_inputs)
    finally:
        torch._dynamo.reset()
    graphs, kernels = [], []
    for cg in compiled:
        env = bind_symbols(cg.graph, cg.last_args) if cg.last_args is not None else {}
        cg.record, cg.last_args = False, None
        g = cg.graph
        for node in g.nodes:
            if node.op == "kernel":
                nbytes, flops = kernel_cost(node, env)
                body = node.attrs["body"]
                kernels.append(KernelReport(body.name, g.name, generate(body).source, str(body), nbytes, flops))
        fallbacks = [n.attrs["target"] for n in g.nodes if n.op == "aten"]
        graphs.append(GraphReport(g.name, str(g), cg.passes, list(g.notes), fallbacks, graph_cost(g, env)))
    return Report(graphs, kernels, count_eager(fn, *example_inputs))
