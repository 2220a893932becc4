"""Fuse pointwise ops, reductions and the views between them into ``kernel`` regions.

Vertical: walking the graph in order, each kernel-able node joins the regions of its
producers (all of them at once if that is legal, else the first that is). A reduction
thereby absorbs its pointwise producers and its consumers, so softmax or layer_norm is one
region. Horizontal: regions that read the same input and have no path between them merge
when they iterate over the same space (sibling pointwise ops, reductions over the same rows).

A candidate region is legal when it creates no cycle and the code generator can write it
as one kernel; every rejected neighbour pair is recorded with the reason in ``graph.notes``.
Views and constants alone are not kernels: they stay in the graph (the runtime makes views
without copies). Matmuls and fallbacks are never fused here.
"""

from __future__ import annotations

import networkx as nx

from ..codegen.kernel import CODEGEN_OPS, CodegenError, generate, kernel_name
from ..ir.graph import Graph, GraphBuilder, Node, Value
from ..ir.ops import OPS, Category

_COMPUTE = (Category.POINTWISE, Category.REDUCTION, Category.DATA)
_FUSIBLE = _COMPUTE + (Category.VIEW, Category.CREATION)


def _fusible(node: Node) -> bool:
    return OPS[node.op].category in _FUSIBLE and node.op in CODEGEN_OPS


class _Regions:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.pos = {n: i for i, n in enumerate(graph.nodes)}
        self.users = graph.users()
        self.outputs = {v for v in graph.outputs}
        self.region: dict[Node, int] = {}
        self.members: dict[int, list[Node]] = {}
        self.notes: list[str] = []
        self.next_id = 0  # region ids are never reused: merged regions leave gaps

    def body(self, nodes: list[Node]) -> Graph:
        """The region's subgraph: outside values in, values used outside (or returned) out."""
        inside = set(nodes)
        b = GraphBuilder("region")
        env: dict[Value, Value] = {}
        for n in sorted(nodes, key=self.pos.__getitem__):
            for v in n.inputs:
                if v.node not in inside and v not in env:
                    # Strides are not part of a body's types: a kernel reads them at run time.
                    env[v] = b.input(f"in{len(b.inputs)}", v.type.with_() if hasattr(v.type, "with_") else v.type)
            new = b.append(Node(n.op, [env[v] for v in n.inputs], n.attrs, n.types))
            env.update(zip(n.results, new.results))
        outs = [v for n in sorted(nodes, key=self.pos.__getitem__) for v in n.results
                if v in self.outputs or any(u not in inside for u in self.users[n])]
        body = b.build([env[v] for v in outs])
        return Graph(kernel_name(body), body.inputs, body.nodes, body.outputs)

    def creates_cycle(self, nodes: set[Node]) -> bool:
        """Would the merged set reach itself through something outside it?

        Other regions count as one unit each: a path into any member of a region continues
        from all of its members, since the region becomes one kernel.
        """
        # No bound on positions: a region can lead from a late node back to an early one.
        frontier = [u for n in nodes for u in self.users[n] if u not in nodes]
        seen: set[Node] = set()
        while frontier:
            u = frontier.pop()
            if u in seen:
                continue
            unit = self.members[self.region[u]] if u in self.region else [u]
            seen.update(unit)
            for m in unit:
                for w in self.users[m]:
                    if w in nodes:
                        return True
                    if w not in seen:
                        frontier.append(w)
        return False

    def why_not(self, nodes: list[Node]) -> str | None:
        if self.creates_cycle(set(nodes)):
            return "would create a cycle through an op outside the kernel"
        if not any(OPS[n.op].category in _COMPUTE for n in nodes):
            return None
        try:
            generate(self.body(nodes))
        except CodegenError as e:
            return str(e)
        return None

    def merge(self, ids: list[int], extra: list[Node]) -> int:
        if not ids:
            self.next_id += 1
        target = ids[0] if ids else self.next_id
        members = self.members.setdefault(target, [])
        for i in ids[1:]:
            members.extend(self.members.pop(i))
        members.extend(extra)
        for n in members:
            self.region[n] = target
        return target


def fuse(graph: Graph) -> Graph:
    r = _Regions(graph)
    for node in graph.nodes:
        if not _fusible(node):
            continue
        producers = list(dict.fromkeys(r.region[v.node] for v in node.inputs if v.node in r.region))
        if len(producers) > 1 and r.why_not(sum((r.members[i] for i in producers), []) + [node]) is None:
            r.merge(producers, [node])
            continue
        for i in producers:
            reason = r.why_not(r.members[i] + [node])
            if reason is None:
                r.merge([i], [node])
                break
            r.notes.append(f"not fused: {r.members[i][-1].op} -> {node.op}: {reason}")
        else:
            r.merge([], [node])
    _fuse_siblings(r)
    return _build(graph, r)


def _fuse_siblings(r: _Regions):
    """Merge regions that read the same input and can run as one kernel."""
    changed = True
    while changed:
        changed = False
        ids = [i for i, ms in r.members.items() if any(OPS[n.op].category in _COMPUTE for n in ms)]
        reads = {i: {v for n in r.members[i] for v in n.inputs if r.region.get(v.node) != i} for i in ids}
        for a_pos, a in enumerate(ids):
            for b in ids[a_pos + 1:]:
                if not reads[a] & reads[b]:
                    continue
                if r.why_not(r.members[a] + r.members[b]) is None:
                    r.merge([a, b], [])
                    changed = True
                    break
            if changed:
                break


def _build(graph: Graph, r: _Regions) -> Graph:
    """Emit the graph with each kernel region as one node, in a topological order."""
    kernels = {i for i, ms in r.members.items() if any(OPS[n.op].category in _COMPUTE for n in ms)}
    unit = {n: ("k", r.region[n]) if r.region.get(n) in kernels else ("n", r.pos[n]) for n in graph.nodes}
    dag = nx.DiGraph()
    first: dict = {}
    for n in graph.nodes:
        first.setdefault(unit[n], r.pos[n])
        dag.add_node(unit[n])
        for v in n.inputs:
            if v.node in unit and unit[v.node] != unit[n]:
                dag.add_edge(unit[v.node], unit[n])
    b = GraphBuilder(graph.name)
    env: dict[Value, Value] = {}
    for n in graph.inputs:
        env[n.out] = b.input(n.name, n.types[0])
    for u in nx.lexicographical_topological_sort(dag, key=first.__getitem__):
        if u[0] == "n":
            n = graph.nodes[u[1]]
            if n.op == "constant":
                new = b.constant(n.name, graph.constants.get(n.name), n.types[0]).node
            else:
                new = b.append(Node(n.op, [env[v] for v in n.inputs], n.attrs, n.types))
            env.update(zip(n.results, new.results))
            continue
        members = r.members[u[1]]
        body = r.body(members)
        outer_in = _outer_inputs(r, members)
        node = b.add("kernel", [env[v] for v in outer_in], {"body": body}, [v.type for v in body.outputs])
        outs = [v for m in sorted(members, key=r.pos.__getitem__) for v in m.results
                if v in r.outputs or any(x not in set(members) for x in r.users[m])]
        env.update(zip(outs, node.results))
    out = b.build([env[v] for v in graph.outputs])
    return Graph(out.name, out.inputs, out.nodes, out.outputs, out.constants, tuple(r.notes))


def _outer_inputs(r: _Regions, members: list[Node]) -> list[Value]:
    inside, seen = set(members), []
    for n in sorted(members, key=r.pos.__getitem__):
        for v in n.inputs:
            if v.node not in inside and v not in seen:
                seen.append(v)
    return seen
