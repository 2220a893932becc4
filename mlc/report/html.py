"""``Report.save_html``: the report as one self-contained HTML page.

No scripts, no style sheets or fonts from elsewhere: the page is one file that opens offline.
Each compiled graph is drawn as inline SVG in layers, left to right (a node sits one layer
after the last of its operands), with every kernel drawn as a region that lists the ops it
fused and links to its source; an edge that spans layers runs in a lane of each layer it
crosses, between the boxes, and long names wrap at "." and "_". All text from the report
goes through ``html.escape``. ``tests/test_report_browser.py`` opens the page in Chromium.
"""

from __future__ import annotations

import html
import re

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
.launches td:first-child { max-width: 22em; }
td pre { max-width: 720px; max-height: 36em; margin: 4px 0; }  /* an opened IR scrolls, the table keeps its width */
.launches td details { max-width: 28em; }
.facts th { width: 11em; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; padding: 6px 10px; }
tr.set td { font-weight: 600; }
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
           ("fallback", "fallback: ATen or custom op"), ("torch", "other torch op"), ("view", "view"),
           ("input", "input"), ("constant", "constant")]

_CHAR = 7.2  # px per character of 12px monospace
_LINE = 16
_MAX_WIDTH = 320  # px: a box's widest; longer names wrap at "." and "_"
_CHIP_H, _CHIP_GAP = 17, 4  # the fused-op chips inside a kernel region, laid out in rows
_MAX_OPS = 24  # chips drawn inside a kernel region; the rest are counted
_LANE = 6  # px a long edge's lane takes in each layer it crosses


class _Lane:
    """Where an edge crosses a layer it does not stop in: a reserved horizontal lane, so that
    long edges run between boxes instead of behind them (Sugiyama's dummy nodes)."""


class _Return:
    """The graph's ``return``, one layer after the last node."""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _kind(node: Node) -> str:
    if node.op in ("input", "constant", "kernel"):
        return node.op
    cat = OPS[node.op].category
    return {Category.MATMUL: "matmul", Category.FALLBACK: "fallback", Category.VIEW: "view"}.get(cat, "torch")


def _title(node: Node) -> str:
    if node.op == "kernel":
        return node.attrs["body"].name
    return f"%{node.name}" if node.op in ("input", "constant") else (
        node.attrs["target"] if node.op == "aten" else node.op)


def _wrap(text: str, chars: int) -> list[str]:
    """``text`` in lines of at most ``chars``, broken after "." and "_" where it can be
    (``aten._scaled_dot_product_`` / ``flash_attention_for_cpu.default``), else anywhere."""
    lines, line = [], ""
    for part in re.findall(r"[^._,]*[._,]?\s*", text)[:-1] or [text]:
        while len(part) > chars:  # a part too long for any line: cut it
            if line:
                lines.append(line)
                line = ""
            lines.append(part[:chars])
            part = part[chars:]
        if len(line) + len(part) > chars:
            lines.append(line)
            line = ""
        line += part
    return [ln.rstrip() for ln in lines + [line] if ln.strip()] or [""]


def _chips(node: Node) -> list[str]:
    ops = fused_ops(node.attrs["body"])
    return ops[:_MAX_OPS] + ([f"+{len(ops) - _MAX_OPS} more"] if len(ops) > _MAX_OPS else [])


def _chip_rows(chips: list[str], inner: float) -> list[list[tuple[str, float]]]:
    """Chips (with their widths) in rows that fit ``inner`` px."""
    rows, row, used = [], [], 0.0
    for c in chips:
        w = len(c) * _CHAR + 10
        if row and used + w > inner:
            rows.append(row)
            row, used = [], 0.0
        row.append((c, w))
        used += w + _CHIP_GAP
    return rows + [row] if row else rows


class _Box:
    """A node's box: its text lines, size, and (for kernels) the rows of fused-op chips."""

    def __init__(self, node: Node, kernel_id: int | None):
        self.node, self.kernel_id, self.kind = node, kernel_id, _kind(node)
        chars = int((_MAX_WIDTH - 16) / _CHAR)
        # "#<id>" at the top right: kernel <id> in the page below (several kernels may share a name)
        self.badge = f"#{kernel_id}" if kernel_id is not None else ""
        self.title = _wrap(_title(node), chars - len(self.badge) - 1)
        if node.op == "kernel":
            chips = _chips(node)
            widest = max([len(t) * _CHAR for t in self.title] + [len(c) * _CHAR + 10 for c in chips])
            widest = max(widest, (len(self.title[0]) + len(self.badge) + 1) * _CHAR)
            self.w = min(_MAX_WIDTH, max(80, widest + 16))
            self.rows = _chip_rows(chips, self.w - 16)
            self.sub = []
            self.h = 10 + _LINE * len(self.title) + len(self.rows) * (_CHIP_H + _CHIP_GAP) + 6
        else:
            self.rows = []
            self.sub = _wrap(", ".join(str(t) for t in node.types), chars)
            lines = self.title + self.sub
            self.w = min(_MAX_WIDTH, max(80, max(len(t) for t in lines) * _CHAR + 16))
            self.h = 10 + _LINE * len(lines)
        self.x = self.y = 0.0


def _layers(graph: Graph) -> tuple[list[list], nx.DiGraph]:
    """Nodes in layers: each computing node one layer after its last operand; inputs and
    constants just before their first reader, so that their edges stay short; ``return`` last.
    An edge that spans layers goes through a ``_Lane`` in each layer between."""
    dag = nx.DiGraph()
    sources = [*graph.inputs, *(n for n in graph.nodes if n.op == "constant")]
    ret = _Return()
    dag.add_nodes_from([*graph.inputs, *graph.nodes, ret])
    for n in graph.nodes:
        for v in n.inputs:
            dag.add_edge(v.node, n)
    for v in graph.outputs:
        dag.add_edge(v.node, ret)
    layer: dict = {}
    for n in nx.topological_sort(dag):
        if n not in sources:
            layer[n] = 1 + max((layer[p] for p in dag.predecessors(n) if p not in sources), default=0)
    for n in sources:
        layer[n] = min((layer[u] for u in dag.successors(n)), default=1) - 1
    for a, b in list(dag.edges):
        if layer[b] - layer[a] > 1:
            dag.remove_edge(a, b)
            chain = [a, *(_Lane() for _ in range(layer[a] + 1, layer[b])), b]
            for k, lane in enumerate(chain[1:-1], layer[a] + 1):
                layer[lane] = k
            nx.add_path(dag, chain)
    out = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for n in dag.nodes:
        out[layer[n]].append(n)
    # Four sweeps of the barycenter heuristic: fewer crossing edges.
    for _ in range(4):
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
    gap_x, gap_y, pad = 64, 14, 12
    boxes: dict = {}
    for layer in layers:
        for n in layer:
            if isinstance(n, Node):
                boxes[n] = _Box(n, kernel_ids.get(n))

    def size(n) -> tuple[float, float]:
        if isinstance(n, _Lane):
            return 0.0, _LANE
        if isinstance(n, _Return):
            return 70.0, 28.0
        return boxes[n].w, boxes[n].h

    widths = [max((size(n)[0] for n in layer), default=0) or 24 for layer in layers]
    heights = [sum(size(n)[1] + gap_y for n in layer) - gap_y for layer in layers]
    total_h = max(heights, default=0)
    place: dict = {}  # x, y, width, height of everything drawn; a lane spans its layer's width
    exits: dict = {}  # where each one's edges start: the right side of its layer
    x = pad
    for layer, w, h in zip(layers, widths, heights):
        y = pad + (total_h - h) / 2
        for n in layer:
            bw, bh = size(n)
            place[n] = (x, y, w if isinstance(n, _Lane) else bw, bh)
            exits[n] = x + w
            y += bh + gap_y
        x += w + gap_x
    parts = []
    for n, (bx, by, bw, bh) in place.items():
        # Edges leave from the layer's right side, never from inside it, where a wider box may be:
        # a box narrower than its layer reaches it by a straight line, and a lane is one.
        start = bx if isinstance(n, _Lane) else bx + bw
        if dag.out_degree(n) and start < exits[n]:
            parts.append(f'<path d="M {start:.0f} {by + bh / 2:.0f} H {exits[n]:.0f}" fill="none" stroke="{_EDGE}"/>')
    for a, b in dag.edges:
        parts.append(_edge((exits[a], place[a][1] + place[a][3] / 2), place[b], arrow=not isinstance(b, _Lane)))
    for n, b in boxes.items():
        bx, by, _, _ = place[n]
        parts.append(_box(b, bx, by))
    ret = next(n for n in place if isinstance(n, _Return))
    rx, ry, rw, rh = place[ret]
    fill, stroke = _STYLE["output"]
    parts.append(f'<rect x="{rx:.0f}" y="{ry:.0f}" width="{rw:.0f}" height="{rh:.0f}" rx="14" fill="{fill}" '
                 f'stroke="{stroke}"/><text x="{rx + rw / 2:.0f}" y="{ry + 18:.0f}" text-anchor="middle">'
                 f'return</text>')
    width, height = x - gap_x + pad, total_h + 2 * pad
    return (f'<svg width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'font-family="ui-monospace, Menlo, monospace" font-size="12" role="img" '
            f'aria-label="graph {_e(graph.name)}">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{_EDGE}"/></marker></defs>'
            + "".join(parts) + "</svg>")


_EDGE = "#6e7781"  # edges and arrows: darker than the view boxes' borders, so they read as lines


def _edge(start, b, arrow: bool = True) -> str:
    """A curve from ``start`` (x, y) to the left side of box ``b`` (x, y, width, height)."""
    x1, y1 = start
    x2, y2 = b[0], b[1] + b[3] / 2
    mid = (x1 + x2) / 2
    end = ' marker-end="url(#arrow)"' if arrow else ""
    return (f'<path d="M {x1:.0f} {y1:.0f} C {mid:.0f} {y1:.0f}, {mid:.0f} {y2:.0f}, {x2:.0f} {y2:.0f}" '
            f'fill="none" stroke="{_EDGE}"{end}/>')


def _box(b: _Box, x: float, y: float) -> str:
    fill, stroke = _STYLE[b.kind]
    dash = ' stroke-dasharray="4 3"' if b.kind == "view" else ""
    rx = 12 if b.kind in ("input", "constant") else 4
    width = 2 if b.kind == "kernel" else 1
    full = [_title(b.node)] + [op for row in b.rows for op, _ in row] + b.sub
    out = [f'<g class="node {b.kind}"><title>{_e(chr(10).join(full))}</title>',
           f'<rect x="{x:.0f}" y="{y:.0f}" width="{b.w:.0f}" height="{b.h:.0f}" rx="{rx}" fill="{fill}" '
           f'stroke="{stroke}" stroke-width="{width}"{dash}/>']
    out += [f'<text x="{x + 8:.0f}" y="{y + 17 + _LINE * k:.0f}" font-weight="bold">{_e(t)}</text>'
            for k, t in enumerate(b.title)]
    if b.badge:
        out.append(f'<text x="{x + b.w - 8:.0f}" y="{y + 17:.0f}" text-anchor="end" fill="#57606a">{_e(b.badge)}'
                   '</text>')
    if b.kind == "kernel":  # the fused ops, each a chip inside the region, in rows
        op_fill, op_stroke = _STYLE["op"]
        cy = y + 8 + _LINE * len(b.title)
        for row in b.rows:
            cx = x + 8
            for op, w in row:
                out.append(f'<rect x="{cx:.0f}" y="{cy:.0f}" width="{w:.0f}" height="{_CHIP_H}" rx="3" '
                           f'fill="{op_fill}" stroke="{op_stroke}"/>'
                           f'<text x="{cx + 5:.0f}" y="{cy + _CHIP_H - 5:.0f}">{_e(op)}</text>')
                cx += w + _CHIP_GAP
            cy += _CHIP_H + _CHIP_GAP
    else:
        top = y + 17 + _LINE * len(b.title)
        out += [f'<text x="{x + 8:.0f}" y="{top + _LINE * k:.0f}" fill="#57606a">{_e(t)}</text>'
                for k, t in enumerate(b.sub)]
    out.append("</g>")
    body = "".join(out)
    return f'<a href="#kernel-{b.kernel_id}">{body}</a>' if b.kernel_id is not None else body


# --- the page -------------------------------------------------------------------------------


def _breakable(name: str) -> str:
    """``name`` escaped, breakable after each "." and "_" (long ATen and kernel names in narrow cells)."""
    return re.sub(r"([._])", r"\1<wbr>", _e(name))


def _table(headers: list[str], rows: list[list[str]], text: tuple[int, ...] = (0,), css: str = "",
           row_css: list[str] | None = None) -> str:
    """An HTML table; cells are HTML already (escape them first). Columns ``text`` are
    left-aligned text, the others numbers; ``css`` is the table's class, ``row_css`` each row's."""
    cls = [' class="t"' if i in text else "" for i in range(len(headers))]
    head = "".join(f"<th{c}>{_e(h)}</th>" for h, c in zip(headers, cls))
    row_cls = [f' class="{c}"' if c else "" for c in (row_css or [""] * len(rows))]
    body = "".join(f"<tr{rc}>" + "".join(f"<td{c}>{v}</td>" for v, c in zip(r, cls)) + "</tr>"
                   for r, rc in zip(rows, row_cls))
    table = f'<table class="{css}">' if css else "<table>"
    return f"{table}<tr>{head}</tr>{body}</table>"


def _settings(report: Report) -> str:
    """The mode, every option's value and what set it (the ones not at their default in bold),
    and what the mode asked for that was not done."""
    rows = [[f"<code>{_e(st.name)}</code>", f"<code>{_e(repr(st.value))}</code>", _e(st.source)]
            for st in report.settings]
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in report.notes)
    return (f"<p>mode <code>{_e(report.mode)}</code></p>" + notes
            + _table(["option", "value", "set by"], rows, text=(0, 1, 2),
                     row_css=["" if st.source == "default" else "set" for st in report.settings]))


def _tuning(text: str | None) -> str:
    """A launch's tuning record, folded under its gist (``autotune skipped``, ``12/30 configs kept ...``)."""
    if text is None:
        return "-"
    why = text[text.find("(") + 1:] if "(" in text else text
    gist = re.split(r"[:,)]", why, maxsplit=1)[0]
    return f"<details><summary>{_e(gist)}</summary>{_e(text)}</details>"


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
        name = (f'<a href="#kernel-{ids[id(k)]}"><code>{_breakable(x.name)}</code></a> '
                f'<span class="muted">#{ids[id(k)]}</span>' if k is not None else f"<code>{_breakable(x.name)}</code>")
        rows.append([name, _e(format_grid(k.grid)) if k is not None and k.grid else "-",
                     _e(format_config(k.config)) if k is not None else "-",
                     _tuning(k.tuning) if k is not None else "-",
                     f"{x.bytes / 1e6:.3f}", f"{x.flops / 1e9:.4f}",
                     *(_us(launch_time(x.bytes, x.flops, name_)) for name_ in GPUS),
                     _e(bound(x.bytes, x.flops, gpu))])
    return _table(["launch", "grid", "config", "tuning", "MB", "GFLOP", *(f"{n} us" for n in GPUS),
                   f"bound on {gpu}"], rows, text=(0, 1, 2, 3, 6 + len(GPUS)), css="launches")


def _kernel(k: KernelReport, i: int) -> str:
    facts = [("graph", k.graph), ("template", k.kind), ("fused ops", " + ".join(k.ops)),
             ("grid", format_grid(k.grid) if k.grid else "- (no call seen, or run through ATen)"),
             (f"config ({k.target})", format_config(k.config)), ("tuning", k.tuning or "not recorded"),
             ("bytes", f"{k.bytes:,}"), ("FLOPs", f"{k.flops:,}")]
    if k.fallback:
        facts.append(("fallback", f"runs through the reference executor (safety net): {k.fallback}"))
    facts += [(f"{n} (modeled)", f"{_us(k.time(n))} us, {k.bound(n)}-bound") for n in GPUS]
    dl = "".join(f"<tr><th class=\"t\">{_e(a)}</th><td class=\"t\">{_e(b)}</td></tr>" for a, b in facts)
    return (f'<section id="kernel-{i}"><h3>kernel {i}: <code>{_e(k.name)}</code></h3><table class="facts">{dl}</table>'
            f"<details open><summary>Triton source</summary><pre>{_e(k.source)}</pre></details>"
            f"<details><summary>region IR</summary><pre>{_e(k.ir)}</pre></details></section>")


def _fallbacks(g, kernels) -> str:
    items = [f"<li>{_e(heading)}: " + ", ".join(f"<code>{_e(n)}</code>" for n in names) + "</li>"
             for heading, names in g.fallback_groups()]
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
    if report.settings:
        parts += ["<h2>Settings</h2>", _settings(report)]
    for g in report.graphs:
        kernels = report.kernels_of(g)
        nodes = [n for n in g.graph.nodes if n.op == "kernel"]
        node_ids = {n: ids[id(k)] for n, k in zip(nodes, kernels)}
        cache = getattr(g, "cache", None)
        parts += [f'<h2 id="graph-{_e(g.name)}">graph <code>{_e(g.name)}</code></h2>',
                  f"<p>cache: {_e(cache if cache is not None else 'not recorded')}</p>"
                  + (f"<p>saved for backward: {_e(g.saved)}</p>" if getattr(g, "saved", None) else ""),
                  '<p class="legend">' + "".join(
                      f'<span style="background:{_STYLE[k][0]};border-color:{_STYLE[k][1]}">{_e(t)}</span>'
                      for k, t in _LEGEND) + "</p>",
                  f'<div class="graph">{graph_svg(g.graph, node_ids)}</div>',
                  "<h3>Passes</h3>", _passes(g),
                  "<h3>Fusion</h3><ul>" + "".join(
                      f'<li>fused: <a href="#kernel-{ids[id(k)]}"><code>{_e(k.name)}</code></a> '
                      f'<span class="muted">#{ids[id(k)]}</span>: <code>{_e(" + ".join(k.ops))}</code></li>'
                      for k in kernels)
                  + "".join(f'<li>layout: <code>{_e(k.name)}</code> <span class="muted">#{ids[id(k)]}</span>: '
                            f"{_e(note)}</li>" for k in kernels for note in k.layout)
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
