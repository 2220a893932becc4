"""Fuse pointwise ops and reductions into ``kernel`` regions.

Vertical: walking the graph in order, each kernel-able node joins the regions of its
producers (all of them at once if that is legal, else the first that is). A reduction
thereby absorbs its pointwise producers and its consumers, so softmax or layer_norm is one
region. Horizontal: regions that read the same input and have no path between them merge
when they iterate over the same space (sibling pointwise ops, reductions over the same rows),
and pointwise regions with no path between them merge when their results have one shape (a
foreach optimizer step's per-parameter updates: one kernel per group of same-shaped parameters).

Views and constants (``full``, ``arange``) are never members of a region: each kernel that
reads one inlines its own copy (a view is index arithmetic, a constant a literal), so one
view can feed several kernels and nothing is materialized for it. Casts of graph inputs
and constants are inlined the same way (a cast of the loaded values). The views left with no
reader outside kernels are dead code afterwards.

A candidate region is legal when it creates no cycle and the code generator can write it
as one kernel; each rejected neighbour pair is recorded with the reason in ``graph.notes``.
A region of more than one op must also fit ``BUDGET`` (``mlc.codegen.budget``): a kernel
computes a value once per index and ``cat`` branch it is read at, so chains of slices and
``cat``s (a scan written out over a sequence) would copy their values quadratically or
exponentially often. A merge in which some value would be written more than
``copies_per_use`` times per read of it, whose expressions would nest deeper than ``depth``
or whose kernel would be longer than ``lines``, is refused (a ``not inlined:`` note): the
region ends there and the next kernel reads the value from memory, so kernels stay linear
in the size of their regions.
A matmul becomes a Triton kernel when it gets an epilogue (bias, activation, residual, cast,
or a second matmul of the same input it meets in a pointwise op, as in SwiGLU); a matmul
with nothing to fuse stays an ATen call (cuBLAS on a GPU). Fallbacks are never fused.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import replace

import networkx as nx

from ..codegen.budget import Budget, OverBudget, limit
from ..codegen.templates import generate
from ..codegen.writer import CODEGEN_OPS, CodegenError, kernel_name
from ..ir import fuel
from ..ir.graph import Graph, GraphBuilder, Node, Value, rebuild
from ..ir.ops import OPS, Category
from ..ir.types import TensorType
from .fuse_attention import SCORE_MODIFIED, own_blocks, rewrite_attention, score_modified
from .fuse_attention import region as attention_region
from .split_attention import split_attention
from .manager import PassOption, pass_options

# What one kernel may inline: each value written at most 4 times per read of it in the region
# (a looped reduction recomputes its producers once per loop, 2 or 3 times), expressions at
# most 100 values deep, at most 200 lines in all: the zoo's largest kernels have under 100,
# and a GPU compile grows faster than the source (`mlc aot-check`: a 250-line chain takes
# Triton and ptxas about 10 s for sm_90, a 500-line one 40 s).
BUDGET = Budget(copies_per_use=4, depth=100, lines=200)


def _fusible(node: Node) -> bool:
    cat = OPS[node.op].category
    return cat in (Category.POINTWISE, Category.REDUCTION, Category.DATA, Category.MATMUL, Category.ATTENTION) and \
        node.op in CODEGEN_OPS


def _only_matmuls(nodes) -> bool:
    return all(OPS[n.op].category is Category.MATMUL for n in nodes)


def _inlinable(node: Node) -> bool:
    return OPS[node.op].category in (Category.VIEW, Category.CREATION) and node.op in CODEGEN_OPS


def _casts_on_load(graph: Graph, inlined: set[Node]) -> set[Node]:
    """Casts of graph inputs and constants (through views), that no graph output is.

    Such a cast is done by each kernel that reads it, on the loaded values, like a view:
    a tangent that three matmuls read in bf16 is cast in each (4 bytes read per element
    each time) rather than by a kernel of its own (4 read, 2 written, then 2 read by each).
    """
    outputs = {v.node for v in graph.outputs}
    in_memory = {n for n in graph.nodes if n.op == "constant"}
    casts = set()
    for n in graph.nodes:
        if n.inputs and all(v.node.op == "input" or v.node in in_memory for v in n.inputs):
            if n in inlined:
                in_memory.add(n)
            elif n.op == "convert" and n not in outputs:
                in_memory.add(n)
                casts.add(n)
    return casts


class _Regions:
    def __init__(self, graph: Graph, strict: bool = False):
        self.graph = graph
        self.strict = strict
        self.pos = {n: i for i, n in enumerate(graph.nodes)}
        self.users = graph.users()
        self.outputs = set(graph.outputs)
        self.region: dict[Node, int] = {}
        self.members: dict[int, list[Node]] = {}
        self.notes: list[str] = []
        self.next_id = 0  # region ids are never reused: merged regions leave gaps
        # Never members of a region: each kernel that reads one computes it on its own.
        self.inline = {n for n in graph.nodes if _inlinable(n)}
        self.inline |= _casts_on_load(graph, self.inline)

    def inlinable(self, node: Node) -> bool:
        return node in self.inline

    def sources(self, v: Value) -> list[Node]:
        """The nodes that really produce ``v``: through views, to what they view."""
        if self.inlinable(v.node):
            return [s for x in v.node.inputs for s in self.sources(x)]
        return [v.node]

    def producer_regions(self, node: Node) -> list[int]:
        return list(dict.fromkeys(self.region[s] for v in node.inputs for s in self.sources(v) if s in self.region))

    def outs(self, nodes) -> list[Value]:
        """The region's results that something outside needs (a view read only by kernels does not)."""
        inside = set(nodes)

        def needed(v: Value) -> bool:
            if v in self.outputs:
                return True
            for u in self.users[v.node]:
                if u in inside or v not in u.inputs:
                    continue
                if not self.inlinable(u) or any(needed(x) for x in u.results):
                    return True
            return False

        return [v for n in sorted(nodes, key=self.pos.__getitem__) for v in n.results if needed(v)]

    def body(self, nodes: list[Node]) -> tuple[Graph, list[Value]]:
        """The region's subgraph (with inlined views and constants) and its outer operands."""
        inside = set(nodes)
        b = GraphBuilder("region")
        env: dict[Value, Value] = {}
        operands: list[Value] = []

        def get(v: Value) -> Value:
            if v in env:
                return env[v]
            if v.node not in inside and self.inlinable(v.node):
                env[v] = b.append(Node(v.node.op, [get(x) for x in v.node.inputs], v.node.attrs, v.node.types)).out
            elif v.node not in inside:
                # Strides are not part of a body's types: a kernel reads them at run time.
                t = v.type.with_() if isinstance(v.type, TensorType) else v.type
                env[v] = b.input(f"in{len(b.inputs)}", t)
                operands.append(v)
            return env[v]

        for n in sorted(nodes, key=self.pos.__getitem__):
            new = b.append(Node(n.op, [get(v) for v in n.inputs], n.attrs, n.types))
            env.update(zip(n.results, new.results))
        body = b.build([env[v] for v in self.outs(nodes)])
        return Graph(kernel_name(body), body.inputs, body.nodes, body.outputs), operands

    def creates_cycle(self, nodes: set[Node]) -> bool:
        """Would the merged set reach itself through an op outside it?

        Other regions count as one unit each (they become one kernel). Views do not count:
        a view on the way back into the set is inlined into it, not run before it.
        """
        frontier = [(u, not self.inlinable(u)) for n in nodes for u in self.users[n] if u not in nodes]
        seen: set[tuple[Node, bool]] = set()
        while frontier:
            u, real = frontier.pop()
            if (u, real) in seen:
                continue
            unit = self.members[self.region[u]] if u in self.region else [u]
            for m in unit:
                seen.add((m, real))
                for w in self.users[m]:
                    if w in nodes:
                        if real:
                            return True
                        continue
                    nxt = (w, real or not self.inlinable(w))
                    if nxt not in seen:
                        frontier.append(nxt)
        return False

    def why_not(self, nodes: list[Node]) -> tuple[str, str] | None:
        """None if ``nodes`` can be one kernel; else the note's kind and the reason: ``not
        fused`` (a cycle, or what no template writes) or ``not inlined`` (over ``BUDGET``)."""
        if self.creates_cycle(set(nodes)):
            return "not fused", "would create a cycle through an op outside the kernel"
        try:
            # One op alone is always within budget: its code is linear in its operands.
            with limit(BUDGET) if len(nodes) > 1 else contextlib.nullcontext():
                generate(self.body(nodes)[0])
        except OverBudget as e:
            return "not inlined", str(e)
        except CodegenError as e:
            return "not fused", str(e)
        except Exception as e:  # noqa: BLE001 - a code generator bug: the region is not fused, never a crash
            if self.strict:
                raise
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            _warn_codegen_bug(why)
            return "not fused", f"code generation failed ({why}), a bug in mlc"
        return None

    def try_merge(self, ids: list[int], extra: list[Node]) -> bool:
        """Merge (one optimization decision: ``mlc.ir.fuel``); False when out of fuel."""
        ops = [n.op for i in ids for n in self.members[i]] + [n.op for n in extra]
        if not fuel.consume(lambda: "fuse: " + " + ".join(ops)):
            return False
        self.merge(ids, extra)
        return True

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


_NO_FUEL = "out of fuel (mlc.ir.fuel: a budget of optimization decisions was spent)"


@functools.lru_cache(maxsize=None)
def _warn_codegen_bug(why: str):
    warnings.warn(f"mlc: generating a kernel failed ({why}); those ops are not fused (they run through torch). "
                  f"This is a bug in mlc: please report it (strict=True or MLC_STRICT=1 raises the error instead)",
                  stacklevel=5)


STRICT = PassOption("strict", bool, False,
                    "let a kernel that fails to generate, compile or launch raise its error; by default (the safety "
                    "net) its ops run unfused, or its region through the reference executor, with a warning naming "
                    "it, and `mlc.explain` lists it as a `fallback`. The test suite runs strict")


@pass_options(STRICT)
def fuse(graph: Graph, strict: bool = STRICT.default) -> Graph:
    r = _attention_regions(graph, strict)
    for node in r.graph.nodes:
        if r.inlinable(node) or node in r.region:
            continue
        if not _fusible(node):
            for i in r.producer_regions(node) if node.op != "constant" else []:
                r.notes.append(f"not fused: {r.members[i][-1].op} -> {node.op}: "
                               f"{node.op} is not generated as a kernel ({OPS[node.op].category.value})")
            continue
        producers = r.producer_regions(node)
        if len(producers) > 1:
            refusal = r.why_not(sum((r.members[i] for i in producers), []) + [node])
            if refusal is None and r.try_merge(producers, [node]):
                continue
            if refusal is not None and refusal[0] == "not inlined":  # the others say why not one by one
                r.notes.append(f"not inlined: {' + '.join(r.members[i][-1].op for i in producers)} -> {node.op}: "
                               f"{refusal[1]}; not all of them join {node.op}'s kernel")
        for i in producers:
            refusal = r.why_not(r.members[i] + [node])
            if refusal is None and r.try_merge([i], [node]):
                break
            kind, reason = refusal or ("not fused", _NO_FUEL)
            if kind == "not inlined":
                reason += f"; {node.op} reads the results of {r.members[i][-1].op}'s kernel from memory instead"
            r.notes.append(f"{kind}: {r.members[i][-1].op} -> {node.op}: {reason}")
        else:
            # Alone, too, the node must be one kernel (a pow with a tensor exponent, a
            # reduction of a 0-d tensor are not); if not, it runs through its torch reference.
            refusal = r.why_not([node])
            if refusal is not None or not r.try_merge([], [node]):
                r.notes.append(f"not a kernel: {node.op}: {refusal[1] if refusal else _NO_FUEL}")
    _fuse_siblings(r)
    _fuse_independent(r)
    for i in [i for i, ms in r.members.items() if _only_matmuls(ms) and not r.body(ms)[0].count("convert")]:
        # A matmul with nothing to fuse runs as ATen (cuBLAS on a GPU), not as the template.
        # (One that casts an operand as it loads it is the template: ATen would need the cast
        # done by a kernel first.)
        for n in r.members.pop(i):
            del r.region[n]
    return _build(r.graph, r)


def _attention_regions(graph: Graph, strict: bool) -> _Regions:
    """Regions of ``graph`` with attention written by hand rewritten (``fuse_attention``),
    each one kernel already; those the template refuses are rewritten back, with the reason.
    Score-modified ops that were there before (a training graph's, forward and gradients)
    cannot be rewritten back: one the template refuses is left to the ops one by one."""
    graph = own_blocks(graph)
    skip: frozenset[Node] = frozenset()
    refused: list[str] = []
    while True:
        rewritten, keys, notes = rewrite_attention(graph, skip)
        split = split_attention(rewritten)  # flash-decoding of what was written by hand too
        notes += list(split.notes) if split is not rewritten else []
        rewritten = split
        r = _Regions(rewritten, strict)
        r.notes = notes + refused
        mods = [n for n in rewritten.nodes if score_modified(n)]
        regions = [attention_region(rewritten, n, r.users, r.inlinable) for n in mods]
        why = [r.why_not(ms) for ms in regions]
        bad = frozenset(key for key, w in zip(keys, why) if w is not None and key is not None)
        if not bad:
            break
        refused += [f"not fused: attention: {' + '.join(n.op for n in ms)}: {w[1]}; the scores are written"
                    for ms, w, key in zip(regions, why, keys) if w is not None and key is not None]
        skip |= bad
    for ms, w in zip(regions, why):
        op = ms[-1]
        if w is not None:
            r.notes.append(f"not fused: attention: {op.op} of attention written by hand, in training: {w[1]}; its "
                           f"ops run one by one (the scores are written)")
        elif r.try_merge([], ms):
            body = r.body(ms)[0]
            chain = [n.op for n in ms if n.op not in ("attention_scores", "attention_probs_grad", *SCORE_MODIFIED)]
            forward = op.op in ("attention", "attention_split")
            s = "x".join(map(str, ms[-1].inputs[3 if forward else 6].type.shape))
            what = "softmax(f(q @ kᵀ)) @ v" if forward else \
                f"the {'k and v' if op.op == 'attention_grad_kv' else 'q'} gradients of softmax(f(q @ kᵀ)) @ v"
            r.notes.insert(0, f"fused: attention: {body.name}: {what} written by hand, as one attention kernel "
                              f"computing {'f' if forward else 'f and its derivative'} = "
                              f"{' + '.join(chain) or 'identity'} on each block of scores; the {s} scores are "
                              f"never written")
        else:
            r.notes.append(f"not fused: attention: {_NO_FUEL}")
    return r


def _fuse_siblings(r: _Regions):
    """Merge regions that read the same input and can run as one kernel."""
    changed = True
    while changed:
        changed = False
        ids = [i for i in r.members if not _only_matmuls(r.members[i])]
        reads = {i: set(r.body(r.members[i])[1]) for i in ids}
        for a_pos, a in enumerate(ids):
            for b in ids[a_pos + 1:]:
                if reads[a] & reads[b] and r.why_not(r.members[a] + r.members[b]) is None and r.try_merge([a, b], []):
                    changed = True
                    break
            if changed:
                break


def _fuse_independent(r: _Regions):
    """Merge pointwise regions with no path between them that write same-shaped results.

    What a foreach optimizer step decomposes to, one update per parameter, each reading only
    its own tensors, becomes one kernel per group of same-shaped parameters (as many as
    ``BUDGET`` lets one kernel hold), and the per-parameter step counters one kernel. The
    bytes are the same; the launches are fewer. Regions are taken in graph order and a group
    grows while the next region can join it (no cycle, within budget); one that cannot starts
    the next group.

    A merged kernel runs once all its members' operands are ready, so a member may now run
    later than it would alone, keeping what it reads alive meanwhile. A region joins only
    when no matmul, reduction, attention or fallback lies between the points where the group
    and the region are ready: the wait is over elementwise work only (the per-parameter scalars
    of an optimizer step, say), never across a layer of a model.
    """
    groups: dict[tuple, list[int]] = {}
    for i, ms in r.members.items():
        if all(OPS[n.op].category is Category.POINTWISE for n in ms):
            shapes = {(v.type.shape, v.type.device) for v in r.outs(ms) if isinstance(v.type, TensorType)}
            if len(shapes) == 1:
                groups.setdefault(shapes.pop(), []).append(i)
    light = (Category.POINTWISE, Category.VIEW, Category.CREATION)
    heavy_before = [0]  # heavy_before[p]: matmuls, reductions, ... at positions below p
    for n in r.graph.nodes:
        heavy_before.append(heavy_before[-1] + (OPS[n.op].category not in light and n.op != "constant"))

    def ready(i: int) -> int:
        """The position of the last node outside region ``i`` that it reads (-1: only inputs)."""
        inside = set(r.members[i])
        return max((r.pos[s] for n in inside for v in n.inputs for s in r.sources(v) if s not in inside and s in r.pos),
                   default=-1)

    for ids in groups.values():
        group, at = ids[0], ready(ids[0])
        for i in ids[1:]:
            here = ready(i)
            lo, hi = sorted((at, here))
            if heavy_before[hi + 1] - heavy_before[lo + 1] == 0 and r.why_not(r.members[group] + r.members[i]) is None \
                    and r.try_merge([group, i], []):
                at = hi
            else:
                group, at = i, here


def _build(graph: Graph, r: _Regions) -> Graph:
    """Emit the graph with each region as one kernel node, in a topological order."""
    unit = {n: ("k", r.region[n]) if n in r.region else ("n", r.pos[n]) for n in graph.nodes}
    bodies = {i: r.body(ms) for i, ms in r.members.items()}
    dag = nx.DiGraph()
    first: dict = {}
    for n in graph.nodes:
        first.setdefault(unit[n], r.pos[n])
        dag.add_node(unit[n])
        deps = bodies[r.region[n]][1] if n in r.region else n.inputs
        for v in deps:
            if v.node in unit and unit[v.node] != unit[n]:
                dag.add_edge(unit[v.node], unit[n])
    # Each region is a kernel node reading the graph's values; what its members computed for
    # readers outside it is read from the kernel's results instead.
    kernels = {i: Node("kernel", operands, {"body": body}, [v.type for v in body.outputs])
               for i, (body, operands) in bodies.items()}
    results = {v: k for i, node in kernels.items() for v, k in zip(r.outs(r.members[i]), node.results)}
    order, copied = [], set(graph.inputs)
    for u in nx.lexicographical_topological_sort(dag, key=first.__getitem__):
        n = kernels[u[1]] if u[0] == "k" else graph.nodes[u[1]]
        if any(results.get(v, v).node not in copied for v in n.inputs):
            assert r.inlinable(n), f"{n.op} reads a value no kernel yields"
            continue  # a view of a kernel's internal value: only kernels read it, inlined
        order.append(n)
        copied.add(n)
    return replace(rebuild(graph, nodes=order, alias=results), notes=tuple(r.notes))
