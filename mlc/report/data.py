"""What ``mlc.explain`` reports: one dataclass per compiled graph, kernel and launch, with the
modeled figures derived from them and the text summary (``Report.text``), and the formatting
helpers that the text and the HTML page (``html.py``) share.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..cost import GPUS, Cost, bound, launch_time
from ..ir.fallback import fallback_kind
from ..ir.graph import Graph
from ..ir.ops import OPS, Category
from ..ir.parser import parse_graphs
from ..options import Setting
from ..passes import PassRecord


@dataclass
class KernelReport:
    name: str
    graph: str  # the compiled graph it belongs to
    source: str  # the generated Triton module
    ir: str  # the kernel's region, as IR text
    bytes: int
    flops: int
    kind: str  # pointwise, reduction or matmul (the template)
    ops: list[str]  # the ops fused into it, in order
    grid: tuple[int, ...] | None  # program instances per axis (None: no call seen, or run through ATen)
    config: dict  # block sizes (constexprs) and launch options (num_warps, num_stages)
    target: str  # what ``config`` was chosen for: "interpreter" or "GPU"
    tuning: str | None  # the autotuner's choice, when it recorded one
    layout: list[str] = field(default_factory=list)  # operands read and results written transposed
    fallback: str | None = None  # why the safety net runs this region through the reference executor

    def time(self, gpu: str = "H100") -> float:
        """Modeled seconds of one launch on ``gpu``."""
        return launch_time(self.bytes, self.flops, gpu)

    def bound(self, gpu: str = "H100") -> str:
        """``"memory"`` or ``"compute"``: the roof that bounds this kernel on ``gpu``."""
        return bound(self.bytes, self.flops, gpu)


@dataclass
class GraphReport:
    name: str
    ir: str  # after the last pass
    passes: list[PassRecord]
    notes: list[str]  # fusion decisions, e.g. why two neighbours were not fused
    fallbacks: list[str]  # fallback nodes' targets, ATen ops and custom ops, run by PyTorch
    cost: Cost
    graph: Graph  # the compiled graph itself (the HTML page draws it)
    cache: str | None = None  # the whole-graph cache: "hit" or "miss: <why>" (CompiledGraph.cache)
    python_fallbacks: list[str] = field(default_factory=list)  # ops without Triton code (mlc's torch reference)
    saved: str | None = None  # a forward graph of a training step: what it saves for the backward

    def fallback_groups(self) -> list[tuple[str, list[str]]]:
        """The graph's fallbacks by what runs them, each group headed by what it says: ATen ops,
        custom ops (``torch.library``), Python-level fallbacks (ops without Triton code)."""
        kinds = {f: fallback_kind(f) for f in self.fallbacks}
        groups = [("runs through ATen", sorted(f for f, k in kinds.items() if k == "ATen op")),
                  ("custom ops (torch.library), run by PyTorch",
                   sorted(f for f, k in kinds.items() if k == "custom op")),
                  ("Python-level fallbacks (no Triton code; mlc's torch reference runs them)",
                   sorted(set(self.python_fallbacks)))]
        return [(heading, names) for heading, names in groups if names]


@dataclass(frozen=True)
class Launch:
    """One launch of a compiled graph: a generated kernel, or an op run through torch."""

    name: str
    bytes: int
    flops: int
    kernel: KernelReport | None  # None: a torch call (an ATen matmul, a fallback, ...)


@dataclass(frozen=True)
class Accuracy:
    """How far mlc's outputs are from eager's on the example inputs (floating outputs, in fp64).

    ``max_abs`` is the largest elementwise difference; ``max_rel`` that difference over the
    largest eager magnitude of the same output (normwise, so that elements near zero do not
    blow it up), the largest over all outputs.
    """

    max_abs: float
    max_rel: float
    outputs: int  # floating tensors compared

    def __str__(self) -> str:
        return f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g} over {self.outputs} output(s)"


def accuracy(actual, expected) -> Accuracy:
    pairs = [(a, e) for a, e in zip(torch.utils._pytree.tree_leaves(actual), torch.utils._pytree.tree_leaves(expected))
             if isinstance(e, torch.Tensor) and e.is_floating_point() and e.numel()]
    max_abs = max_rel = 0.0
    for a, e in pairs:
        diff = (a.detach().double() - e.detach().double()).abs().max().item()
        scale = e.detach().double().abs().max().item()
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale else (0.0 if diff == 0 else float("inf")))
    return Accuracy(max_abs, max_rel, len(pairs))


@dataclass
class Report:
    """The story of one compile. ``str(report)`` is a readable summary."""

    graphs: list[GraphReport]
    kernels: list[KernelReport]
    eager: Cost
    notes: list[str] = field(default_factory=list)  # what was asked and not done (the CUDA graphs of a mode)
    accuracy: Accuracy | None = None  # the compiled outputs against eager's, on the example inputs
    mode: str = "default"  # torch.compile's mode
    settings: list[Setting] = field(default_factory=list)  # every option's value and what set it

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

    def time(self, gpu: str = "H100") -> float:
        """mlc's modeled seconds for one call on ``gpu`` (all graphs)."""
        return sum(g.cost.time(gpu) for g in self.graphs)

    def kernels_of(self, graph: GraphReport) -> list[KernelReport]:
        return [k for k in self.kernels if k.graph == graph.name]

    def launches_of(self, graph: GraphReport) -> list[Launch]:
        """``graph``'s launches in order, each kernel with its report."""
        kernels = iter(self.kernels_of(graph))
        pending = next(kernels, None)
        out = []
        for name, nbytes, flops in graph.cost.items:
            # graph_cost lists kernels in node order, as explain() collects them.
            kernel = pending if pending is not None and pending.name == name else None
            if kernel is not None:
                pending = next(kernels, None)
            out.append(Launch(name, nbytes, flops, kernel))
        return out

    def fusions(self, graph: GraphReport) -> list[str]:
        """One line per kernel of ``graph``: the ops it fused."""
        return [f"{k.name}: {' + '.join(k.ops)}" for k in self.kernels_of(graph)]

    def summary_rows(self) -> list[tuple[str, int, int, int, list[float]]]:
        """(name, launches, bytes, flops, [modeled seconds per GPU in GPUS]) for mlc and eager."""
        return [("mlc", self.launches, self.bytes, self.flops, [self.time(g) for g in GPUS]),
                ("eager", self.eager.launches, self.eager.bytes, self.eager.flops, [self.eager.time(g) for g in GPUS])]

    def text(self, gpu: str = "H100") -> str:
        """The text summary, with per-launch times and roofs on ``gpu``."""
        lines = [f"mlc: {len(self.graphs)} graph(s), {len(self.kernels)} generated kernel(s), "
                 f"{len(set(self.fallbacks))} fallback op(s)"]
        if self.settings:
            lines.append(self.settings_line())
        lines += self.notes + [""]
        lines += format_table(["", "launches", "MB moved", "GFLOP", *(f"{g} us" for g in GPUS)],
                              [[name, n, f"{b / 1e6:.3f}", f"{f / 1e9:.4f}", *(f"{s * 1e6:.1f}" for s in secs)]
                               for name, n, b, f, secs in self.summary_rows()])
        if self.accuracy is not None:
            lines += ["", f"error against eager: {self.accuracy}"]
        for g in self.graphs:
            lines += [""] + self.graph_lines(g, gpu)
        return "\n".join(lines)

    def settings_line(self) -> str:
        """The options not at their defaults, and what set them: ``settings: mode 'max-autotune'; ...``."""
        set_ = [str(s) for s in self.settings if s.source != "default"]
        return (f"settings: mode {self.mode!r}; " + (", ".join(set_) + "; other options default" if set_
                                                       else "every option default"))

    def graph_lines(self, g: GraphReport, gpu: str = "H100") -> list[str]:
        """The text of one graph: its passes, launches, tuning, fusion decisions and fallbacks."""
        cache = getattr(g, "cache", None)
        lines = [f"graph {g.name}" + (f" (cache: {cache})" if cache is not None else "")]
        lines += ["  " + ln for ln in format_table(
            ["pass", "ms", "nodes", "kernels"],
            [[p.name, f"{p.ms:.1f}", *pass_counts(p)] for p in g.passes])] if g.passes else ["  no passes ran"]
        lines.append("")
        lines += ["  " + ln for ln in format_table(
            ["launch", "grid", "MB", "GFLOP", f"{gpu} us", "bound", "config"],
            [_launch_row(x, gpu) for x in self.launches_of(g)], left=2)]
        kernels = self.kernels_of(g)
        if {k.target for k in kernels} == {"interpreter"} and any(k.config for k in kernels):
            lines.append("  (grids and configs are those of Triton's interpreter: few, large programs)")
        tuned = [k for k in kernels if k.tuning is not None]
        if tuned:  # prose, not a column: the autotuner explains its choice
            lines += ["", "  tuning:"] + [f"    {k.name}: {k.tuning}" for k in tuned]
        lines += [""] + [f"  fused: {ln}" for ln in self.fusions(g)]
        lines += [f"  layout: {k.name}: {note}" for k in kernels for note in k.layout]
        lines += [f"  {n}" for n in g.notes]
        lines += [f"  {heading}: " + ", ".join(names) for heading, names in g.fallback_groups()]
        if g.saved:
            lines.append(f"  saved for backward: {g.saved}")
        lines += [f"  fallback: kernel {k.name} runs through the reference executor (safety net): {k.fallback}"
                  for k in kernels if k.fallback]
        return lines

    def __str__(self) -> str:
        return self.text()

    def save_html(self, path, gpu: str = "H100") -> None:
        """Write the report as one self-contained HTML page (no scripts, no external files)."""
        from .html import render  # the page is drawn from this report: imported only when asked for

        with open(path, "w", encoding="utf-8") as f:
            f.write(render(self, gpu))


def _launch_row(x: Launch, gpu: str) -> list:
    k = x.kernel
    return [x.name, "-" if k is None or k.grid is None else format_grid(k.grid),
            f"{x.bytes / 1e6:.3f}", f"{x.flops / 1e9:.4f}",
            f"{launch_time(x.bytes, x.flops, gpu) * 1e6:.1f}", bound(x.bytes, x.flops, gpu),
            "-" if k is None else format_config(k.config)]


def format_grid(grid: tuple[int, ...]) -> str:
    """``4x2``: program instances along each grid axis."""
    return "x".join(map(str, grid))


def format_config(config: dict) -> str:
    """``XBLOCK=8 RBLOCK=32 num_warps=4``."""
    return " ".join(f"{k}={v}" for k, v in config.items()) or "-"


def format_table(headers: list[str], rows: list[list], left: int = 1) -> list[str]:
    """Lines of a plain-text table: numbers right-aligned, text (the first column, and the
    last ``left - 1`` columns) left-aligned."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    n = len(headers)
    widths = [max(len(r[i]) for r in cells) for i in range(n)]
    text = {0} | set(range(n - left + 1, n))
    return ["  ".join(c.ljust(w) if i in text else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in cells]


def graph_counts(graph: Graph) -> tuple[int, int]:
    """(nodes, kernels) at the top level of ``graph``; a kernel's body counts as its one node."""
    return len(graph.nodes), graph.count("kernel")


@functools.lru_cache(maxsize=256)
def _ir_counts(ir: str) -> tuple[int, int]:
    nodes = kernels = 0
    for g in parse_graphs(ir):
        n, k = graph_counts(g)
        nodes, kernels = nodes + n, kernels + k
    return nodes, kernels


def pass_counts(record: PassRecord) -> tuple[int, int]:
    """(nodes, kernels) of the IR a pass left."""
    return _ir_counts(record.ir)


def fused_ops(body: Graph) -> list[str]:
    """The ops a kernel's body computes, in order; views, constants and fills are left out (see its IR)."""
    return [n.op for n in body.nodes if OPS[n.op].category not in _NOT_COMPUTE]


_NOT_COMPUTE = (Category.SOURCE, Category.VIEW, Category.CREATION, Category.SYM)
