"""``Report.save_html``: the report as one self-contained HTML page.

No scripts, no style sheets or fonts from elsewhere: the page is one file that opens offline.
Each compiled graph is drawn as inline SVG in layers, left to right (a node sits one layer
after the last of its operands), with every kernel drawn as a region that lists the ops it
fused and links to its source. All text from the report goes through ``html.escape``.
"""

from __future__ import annotations

import html

import networkx as nx

from ..cost import GPUS, bound, launch_time
from ..ir.graph import Graph, Node
from ..ir.ops import OPS, Category
from .data import GraphReport, KernelReport, Report, format_config, format_grid, fused_ops, pass_counts

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #1f2328; padding: 0 16px; }
h1 { font-size: 24px; } h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 16px; margin-top: 24px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f6f8fa; } td.t, th.t { text-align: left; }
pre { background: #f6f8fa; padding: 8px; overflow: auto; font-size: 12px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
details > summary { cursor: pointer; color: #0969da; }
.graph { overflow: auto; border: 1px solid #d0d7de; padding: 4px; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; border: 1px solid; border-radius: 3px; }
.muted { color: #59636e; }
"""

# (fill, stroke) per kind of box in the drawing
_STYLE = {
    "kernel": ("#e8f0fe", "#1a73e8"),
    "op": ("#ffffff", "#8c959f"),  # inside a kernel region
    "matmul": ("#fff4e5", "#d18616"),  # run by torch (cuBLAS on a GPU)
    "fallback": ("#ffebe9", "#cf222e"),
    "torch": ("#f6f8fa", "#57606a"),  # anything else run through torch (data movement, ...)
    "view": ("#f6f8fa", "#afb8c1"),
    "input": ("#dafbe1", "#1a7f37"),
    "constant": ("#fbefff", "#8250df"),
    "output": ("#ffffff", "#1f2328"),
}
_LEGEND = [("kernel", "generated kernel (fused region)"), ("matmul", "matmul through torch"),
           ("fallback", "ATen fallback"), ("torch", "other torch op"), ("view", "view"), ("input", "input"),
           ("constant", "constant")]

_CHAR = 7.2  # px per character of 12px monospace
_LINE = 16
_MAX_OPS = 12  # op lines drawn inside a kernel region; the rest are counted


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _kind(node: Node) -> str:
    if node.op in ("input", "constant", "kernel"):
        return node.op
    cat = OPS[node.op].category
    return {Category.MATMUL: "matmul", Category.FALLBACK: "fallback", Category.VIEW: "view"}.get(cat, "torch")


def _label(node: Node) -> list[str]:
    """The text lines of a box: a title, then (for kernels) the fused ops, else the result type."""
    if node.op == "kernel":
        ops = fused_ops(node.attrs["body"])
        more = [f"... {len(ops) - _MAX_OPS} more"] if len(ops) > _MAX_OPS else []
        return [node.attrs["body"].name] + ops[:_MAX_OPS] + more
    title = f"%{node.name}" if node.op in ("input", "constant") else (
        node.attrs["target"] if node.op == "aten" else node.op)
    return [title, ", ".join(str(t) for t in node.types)]


def _layers(graph: Graph) -> tuple[list[list[Node]], nx.DiGraph]:
    """Nodes in layers: each computing node one layer after its last operand; inputs and
    constants just before their first reader, so that their edges stay short."""
    dag = nx.DiGraph()
    sources = [*graph.inputs, *(n for n in graph.nodes if n.op == "constant")]
    dag.add_nodes_from([*graph.inputs, *graph.nodes])
    for n in graph.nodes:
        for v in n.inputs:
            dag.add_edge(v.node, n)
    layer: dict[Node, int] = {}
    for n in nx.topological_sort(dag):
        if n not in sources:
            layer[n] = 1 + max((layer[p] for p in dag.predecessors(n) if p not in sources), default=0)
    for n in sources:
        layer[n] = min((layer[u] for u in dag.successors(n)), default=1) - 1
    out = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for n in [*graph.inputs, *graph.nodes]:
        out[layer[n]].append(n)
    # Two sweeps of the barycenter heuristic: fewer crossing edges.
    for _ in range(2):
        for i in range(1, len(out)):
            pos = {n: k for k, n in enumerate(out[i - 1])}
            out[i].sort(key=lambda n: _mean([pos[p] for p in dag.predecessors(n) if p in pos], len(pos)))
        for i in range(len(out) - 2, -1, -1):
            pos = {n: k for k, n in enumerate(out[i + 1])}
            out[i].sort(key=lambda n: _mean([pos[s] for s in dag.successors(n) if s in pos], len(pos)))
    return out, dag


def _mean(xs: list[int], default: float) -> float:
    return sum(xs) / len(xs) if xs else default


def graph_svg(graph: Graph, kernel_ids: dict[Node, int]) -> str:
    """``graph`` drawn as inline SVG; kernel regions link to ``#kernel-<id>``."""
    layers, dag = _layers(graph)
    gap_x, gap_y, pad = 56, 14, 12
    box: dict[Node, tuple[float, float, float, float]] = {}  # x, y, width, height
    labels = {n: _label(n) for layer in layers for n in layer}
    widths = [min(380, max(80, max((len(s) for n in layer for s in labels[n]), default=0) * _CHAR + 32))
              for layer in layers]
    heights = [sum(_height(n, labels[n]) + gap_y for n in layer) for layer in layers]
    total_h = max(heights, default=0) + 40
    x = pad
    for layer, w, h in zip(layers, widths, heights):
        y = pad + (total_h - h) / 2
        for n in layer:
            box[n] = (x, y, w, _height(n, labels[n]))
            y += box[n][3] + gap_y
        x += w + gap_x
    outs = {v.node for v in graph.outputs}
    out_x = x
    parts = []
    for a, b in dag.edges:
        parts.append(_edge(box[a], box[b]))
    out_h = 28
    out_y = pad + (total_h - out_h) / 2
    for n in outs:
        parts.append(_edge(box[n], (out_x, out_y, 70, out_h)))
    for n, (bx, by, bw, bh) in box.items():
        parts.append(_box(n, labels[n], bx, by, bw, bh, kernel_ids.get(n)))
    fill, stroke = _STYLE["output"]
    parts.append(f'<rect x="{out_x:.0f}" y="{out_y:.0f}" width="70" height="{out_h}" rx="14" fill="{fill}" '
                 f'stroke="{stroke}"/><text x="{out_x + 35:.0f}" y="{out_y + 18:.0f}" text-anchor="middle">'
                 f'return</text>')
    width, height = out_x + 70 + pad, total_h + 2 * pad
    return (f'<svg width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'font-family="ui-monospace, Menlo, monospace" font-size="12" role="img" '
            f'aria-label="graph {_e(graph.name)}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#8c959f"/></marker></defs>'
            + "".join(parts) + "</svg>")


def _height(node: Node, label: list[str]) -> float:
    return 10 + _LINE * len(label) + (8 if node.op == "kernel" else 0)


def _edge(a, b) -> str:
    x1, y1 = a[0] + a[2], a[1] + a[3] / 2
    x2, y2 = b[0], b[1] + b[3] / 2
    mid = (x1 + x2) / 2
    return (f'<path d="M {x1:.0f} {y1:.0f} C {mid:.0f} {y1:.0f}, {mid:.0f} {y2:.0f}, {x2:.0f} {y2:.0f}" '
            f'fill="none" stroke="#8c959f" marker-end="url(#arrow)"/>')


def _box(node: Node, label: list[str], x, y, w, h, kernel_id: int | None) -> str:
    kind = _kind(node)
    fill, stroke = _STYLE[kind]
    max_chars = int((w - 16) / _CHAR)
    fit = [s if len(s) <= max_chars else s[:max_chars - 1] + "\u2026" for s in label]
    dash = ' stroke-dasharray="4 3"' if kind == "view" else ""
    rx = 12 if kind in ("input", "constant") else 4
    width = 2 if kind == "kernel" else 1
    out = [f'<g class="node {kind}"><title>{_e(chr(10).join(label))}</title>',
           f'<rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h:.0f}" rx="{rx}" fill="{fill}" '
           f'stroke="{stroke}" stroke-width="{width}"{dash}/>',
           f'<text x="{x + 8:.0f}" y="{y + 17:.0f}" font-weight="bold">{_e(fit[0])}</text>']
    if kind == "kernel":  # the fused ops, each a chip inside the region
        op_fill, op_stroke = _STYLE["op"]
        for k, s in enumerate(fit[1:]):
            cy = y + 8 + _LINE * (k + 1)
            out.append(f'<rect x="{x + 8:.0f}" y="{cy + 2:.0f}" width="{w - 16:.0f}" height="{_LINE - 2}" rx="2" '
                       f'fill="{op_fill}" stroke="{op_stroke}"/>'
                       f'<text x="{x + 14:.0f}" y="{cy + _LINE - 3:.0f}">{_e(s)}</text>')
    else:
        out += [f'<text x="{x + 8:.0f}" y="{y + 17 + _LINE * k:.0f}" fill="#59636e">{_e(s)}</text>'
                for k, s in enumerate(fit[1:], 1)]
    out.append("</g>")
    body = "".join(out)
    return f'<a href="#kernel-{kernel_id}">{body}</a>' if kernel_id is not None else body


# --- the page -------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]], text: tuple[int, ...] = (0,)) -> str:
    """An HTML table; cells are HTML already (escape them first). Columns ``text`` are
    left-aligned text, the others numbers."""
    cls = [' class="t"' if i in text else "" for i in range(len(headers))]
    head = "".join(f"<th{c}>{_e(h)}</th>" for h, c in zip(headers, cls))
    body = "".join("<tr>" + "".join(f"<td{c}>{v}</td>" for v, c in zip(r, cls)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def _summary(report: Report) -> str:
    rows = [[_e(name), str(n), f"{b / 1e6:.3f}", f"{f / 1e9:.4f}", *map(_us, secs)]
            for name, n, b, f, secs in report.summary_rows()]
    (_, n_mlc, b_mlc, _, t_mlc), (_, n_eager, b_eager, _, t_eager) = report.summary_rows()
    rows.append(["eager / mlc", _ratio(n_eager, n_mlc), _ratio(b_eager, b_mlc), "",
                 *(_ratio(e, m) for e, m in zip(t_eager, t_mlc))])
    return _table(["", "launches", "MB moved", "GFLOP", *(f"{g} us (modeled)" for g in GPUS)], rows)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def _passes(g: GraphReport) -> str:
    rows = [[str(i), f"<code>{_e(p.name)}</code>", f"{p.ms:.2f}", *map(str, pass_counts(p)),
             f"<details><summary>IR after {_e(p.name)}</summary><pre>{_e(p.ir)}</pre></details>"]
            for i, p in enumerate(g.passes)]
    return _table(["#", "pass", "ms", "nodes", "kernels", "IR"], rows, text=(1, 5))


def _launches(report: Report, g: GraphReport, ids: dict[int, int], gpu: str) -> str:
    rows = []
    for x in report.launches_of(g):
        k = x.kernel
        name = (f'<a href="#kernel-{ids[id(k)]}"><code>{_e(x.name)}</code></a>' if k is not None
                else f"<code>{_e(x.name)}</code>")
        rows.append([name, _e(format_grid(k.grid)) if k is not None and k.grid else "-",
                     _e(format_config(k.config)) if k is not None else "-",
                     _e(k.tuning) if k is not None and k.tuning is not None else "-",
                     f"{x.bytes / 1e6:.3f}", f"{x.flops / 1e9:.4f}",
                     *(_us(launch_time(x.bytes, x.flops, name_)) for name_ in GPUS),
                     _e(bound(x.bytes, x.flops, gpu))])
    return _table(["launch", "grid", "config", "tuning", "MB", "GFLOP", *(f"{n} us" for n in GPUS),
                   f"bound on {gpu}"], rows, text=(0, 1, 2, 3, 6 + len(GPUS)))


def _kernel(k: KernelReport, i: int) -> str:
    facts = [("graph", k.graph), ("template", k.kind), ("fused ops", " + ".join(k.ops)),
             ("grid", format_grid(k.grid) if k.grid else "- (no call seen, or run through ATen)"),
             (f"config ({k.target})", format_config(k.config)), ("tuning", k.tuning or "not recorded"),
             ("bytes", f"{k.bytes:,}"), ("FLOPs", f"{k.flops:,}")]
    if k.fallback:
        facts.append(("fallback", f"runs through the reference executor (safety net): {k.fallback}"))
    facts += [(f"{n} (modeled)", f"{_us(k.time(n))} us, {k.bound(n)}-bound") for n in GPUS]
    dl = "".join(f"<tr><th class=\"t\">{_e(a)}</th><td class=\"t\">{_e(b)}</td></tr>" for a, b in facts)
    return (f'<section id="kernel-{i}"><h3>kernel {i}: <code>{_e(k.name)}</code></h3><table>{dl}</table>'
            f"<details open><summary>Triton source</summary><pre>{_e(k.source)}</pre></details>"
            f"<details><summary>region IR</summary><pre>{_e(k.ir)}</pre></details></section>")


def _fallbacks(g, kernels) -> str:
    items = [f"<li><code>{_e(f)}</code> runs through ATen</li>" for f in sorted(set(g.fallbacks))]
    items += [f'<li class="net">fallback: kernel <code>{_e(k.name)}</code> runs through the reference executor '
              f"(safety net): {_e(k.fallback)}</li>" for k in kernels if k.fallback]
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>none: every op is an mlc op</p>"


def render(report: Report, gpu: str = "H100") -> str:
    """The whole page, as a string."""
    ids = {id(k): i for i, k in enumerate(report.kernels)}
    parts = [f"<h1>mlc report</h1><p class=\"muted\">{len(report.graphs)} compiled graph(s), "
             f"{len(report.kernels)} generated kernel(s), {len(set(report.fallbacks))} fallback op(s). "
             f"Bytes, FLOPs and times are modeled (mlc/cost.py), not measured; eager counts one launch per "
             f"non-view ATen op.</p>", "<h2>Summary</h2>", _summary(report)]
    if report.accuracy is not None:
        parts.append(f"<p>error against eager: {_e(str(report.accuracy))}</p>")
    for g in report.graphs:
        kernels = report.kernels_of(g)
        nodes = [n for n in g.graph.nodes if n.op == "kernel"]
        node_ids = {n: ids[id(k)] for n, k in zip(nodes, kernels)}
        cache = getattr(g, "cache", None)
        parts += [f'<h2 id="graph-{_e(g.name)}">graph <code>{_e(g.name)}</code></h2>',
                  f"<p>cache: {_e(cache if cache is not None else 'not recorded')}</p>",
                  '<p class="legend">' + "".join(
                      f'<span style="background:{_STYLE[k][0]};border-color:{_STYLE[k][1]}">{_e(t)}</span>'
                      for k, t in _LEGEND) + "</p>",
                  f'<div class="graph">{graph_svg(g.graph, node_ids)}</div>',
                  "<h3>Passes</h3>", _passes(g),
                  "<h3>Fusion</h3><ul>" + "".join(f"<li>fused: <code>{_e(s)}</code></li>" for s in report.fusions(g))
                  + "".join(f"<li>layout: <code>{_e(k.name)}</code>: {_e(note)}</li>" for k in kernels for note in k.layout)
                  + "".join(f"<li>{_e(n)}</li>" for n in g.notes) + "</ul>",
                  "<h3>Fallbacks</h3>" + _fallbacks(g, kernels),
                  "<h3>Launches</h3>", _launches(report, g, ids, gpu),
                  "<h3>Kernels</h3>", *(_kernel(k, ids[id(k)]) for k in kernels)]
    eager_rows = [[f"<code>{_e(name)}</code>", f"{b / 1e6:.3f}", f"{f / 1e9:.4f}", _us(launch_time(b, f, gpu)),
                   _e(bound(b, f, gpu))] for name, b, f in report.eager.items]
    parts += ["<h2>Eager PyTorch</h2>",
              f"<details><summary>{report.eager.launches} launches</summary>"
              + _table(["ATen op", "MB", "GFLOP", f"{gpu} us", "bound"], eager_rows, text=(0, 4)) + "</details>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mlc report</title>"
            f"<style>{_CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
