"""Attention written by hand becomes one attention kernel (a step of ``fuse``).

The region, as the IR has it after decomposition (whatever model it came from):

    s = view(bmm(q3, k3ᵀ)) : [B, H, Sq, Sk]        the scores
    x = f(s, a, b, ...)                             pointwise: scale, additive or where masks, causal
                                                    masks from arange compares, biases, tanh soft-caps, casts
    p = div(exp(x - amax(x)), sum(exp(x - amax(x))))  softmax over the keys
    o = bmm(p (cast, viewed), v3)

becomes ``o = attention(q, k, v, f(attention_scores(q, k), a, b, ...)) {score_mod=true}``, with q, k
and v the 4-d tensors the bmms read (through their views, without the copies that made them
contiguous). ``fuse`` then makes ``attention_scores``, f and the attention one kernel (``region``):
the attention template computes the scores as its ``q @ kᵀ`` block and f on it in registers,
f's other operands loaded blockwise through their strides, so the scores and the
probabilities are never written. Pointwise producers of f's operands that nothing else reads
(a padding mask's ``(1 - m) * min``) join the kernel too.

The region is left alone, with a ``not fused: attention:`` note, when a value inside it has a
reader outside (the scores or probabilities are a graph output, as when a training step
saves the probabilities for the backward) or the kernel cannot be generated (``fuse`` asks
the template, and rewrites again without the regions it refuses).
"""

from __future__ import annotations

from ..codegen.writer import CODEGEN_OPS
from ..ir.graph import Graph, Node, Value, rebuild
from ..ir.ops import OPS, Category
from .eliminate_dead_code import eliminate_dead_code

_CHAIN = (Category.POINTWISE, Category.VIEW)
_PASS_THROUGH = ("convert", "view")  # between the probabilities and the bmm with v


class _NoMatch(Exception):
    """The region is attention but is not rewritten; the message says why."""


def _reduces_keys(node: Node, op: str) -> bool:
    """Is ``node`` ``op`` over the last dim, keeping it? Over one key, simplify made it a copy."""
    if node.op == "copy":
        return node.inputs[0].type.rank > 0 and node.inputs[0].type.shape[-1] == 1
    dims, rank = node.attrs.get("dims"), node.inputs[0].type.rank
    return node.op == op and node.attrs["keepdim"] and dims is not None and len(dims) == 1 and \
        dims[0] % rank == rank - 1


class _Match:
    """One attention region of ``graph``, found from the ``amax`` of its softmax (a copy if
    there is one key: simplify drops reductions over one element)."""

    def __init__(self, graph: Graph, users: dict[Node, list[Node]], amax: Node):
        self.amax = amax
        outputs = {v.node for v in graph.outputs}
        x = amax.inputs[0]
        # -- softmax: amax, sub, exp, sum, div, each read only by the next --
        if not _reduces_keys(amax, "amax") or x.type.rank != 4:
            raise LookupError
        sub = self._only(users, amax, "sub")
        if sub is None or sub.inputs != (x, amax.out):
            raise LookupError
        exp = self._only(users, sub, "exp")
        readers = users[exp] if exp is not None else []
        sums = [u for u in readers if _reduces_keys(u, "sum")]
        if len(readers) != 2 or len(sums) != 1:
            raise LookupError
        div = next((u for u in readers if u.op == "div" and u.inputs == (exp.out, sums[0].out)), None)
        if div is None or users[sums[0]] != [div]:
            raise LookupError
        softmax = [amax, sub, exp, sums[0], div]
        # -- the probabilities, through casts and views, into a bmm with v --
        path = _path_to_bmm(users, div.out)
        if path is None:
            raise LookupError  # a softmax, not attention
        *tail, bmm2 = path
        p = bmm2.inputs[0]
        # -- the scores: one q @ kᵀ that f reads --
        chain, leaves = _chain(x, lambda v: v.node.op == "view" and v.node.inputs[0].node.op == "bmm" and
                               v.type.shape == x.type.shape)
        if len(leaves) != 1:
            raise LookupError
        (s,) = leaves
        bmm1 = s.node.inputs[0].node
        for n, nxt in zip([div, *tail], path):
            if users[n] != [nxt] or n in outputs:
                raise _NoMatch(f"the probabilities ({n.op}) have another reader ({self._readers(users, n, outputs, nxt)}"
                               f"), so they are written")
        for n in softmax[1:-1]:
            if n in outputs:
                raise _NoMatch(f"the softmax's {n.op} is a graph output, so it is written")
        inside = set(chain) | {s.node, bmm1, amax, sub}
        for n in [bmm1, s.node, *chain]:
            others = [u for u in users[n] if u not in inside]
            if others or n in outputs:
                raise _NoMatch(f"the scores ({n.op}) have another reader ({self._readers(users, n, outputs, *inside)}), "
                               f"so they are written")
        if not x.type.dtype.is_floating_point:
            raise _NoMatch(f"the softmax reads {x.type.dtype} scores")
        q3, k3 = bmm1.inputs
        v3 = bmm2.inputs[1]
        dtypes = {q3.type.dtype, k3.type.dtype, v3.type.dtype, bmm2.types[0].dtype}
        if len(dtypes) != 1:
            raise _NoMatch(f"q, k, v and the output differ in dtype ({', '.join(sorted(map(str, dtypes)))})")
        if tuple(bmm1.types[0].shape[1:]) != tuple(s.type.shape[2:]) or p.type.shape != bmm1.types[0].shape:
            raise _NoMatch("the scores or probabilities are not [B * H, Sq, Sk] products viewed as [B, H, Sq, Sk]")
        self.x, self.s, self.chain, self.bmm2 = x, s, chain, bmm2
        self.q3, self.k3, self.v3 = q3, k3, v3

    @staticmethod
    def _only(users, node: Node, op: str) -> Node | None:
        us = users[node]
        return us[0] if len(us) == 1 and us[0].op == op else None

    @staticmethod
    def _readers(users, node: Node, outputs, *inside) -> str:
        names = [u.op for u in users[node] if u not in inside]
        return ", ".join(names + (["a graph output, as a training forward saves values for its backward"]
                                  if node in outputs else []))


def _path_to_bmm(users, p: Value, depth: int = 4) -> list[Node] | None:
    """The casts and views from ``p`` to a bmm that multiplies them by v, and the bmm."""
    for u in users[p.node]:
        if u.op == "bmm" and u.inputs[0] == p:
            return [u]
        if u.op in _PASS_THROUGH and depth > 0:
            rest = _path_to_bmm(users, u.out, depth - 1)
            if rest is not None:
                return [u, *rest]
    return None


def _chain(x: Value, is_scores) -> tuple[list[Node], list[Value]]:
    """The pointwise (and view) nodes through which ``x`` depends on the scores, producers
    first, and the scores values they read (``is_scores``)."""
    seen: dict[Node, bool] = {}  # node -> does it depend on the scores
    order: list[Node] = []
    leaves: list[Value] = []

    def visit(v: Value) -> bool:
        n = v.node
        if is_scores(v):
            if v not in leaves:
                leaves.append(v)
            return True
        if OPS[n.op].category not in _CHAIN and n.op != "copy":  # a contiguous copy is index arithmetic too
            return False
        if n not in seen:
            seen[n] = False
            seen[n] = any([visit(w) for w in n.inputs])
            order.append(n)
        return seen[n]

    visit(x)
    return [n for n in order if seen[n]], leaves


def _as_4d(b, env, v: Value, shape) -> Value:
    """``v``, a [B * H, S, D] bmm operand, as the [B, H, S, D] tensor it was viewed from
    (through a contiguous copy, which the kernel does not need), or a view of it."""
    t = _source_4d(v, shape)
    return env[t] if t is not None else b.op("view", env[v], shape=list(shape))


def score_modified(node: Node) -> bool:
    """An attention op (forward or backward) that computes f on its blocks of scores."""
    return node.op in SCORE_MODIFIED and node.attrs.get("score_mod", False)


SCORE_MODIFIED = ("attention", "attention_split", "attention_grad_kv", "attention_grad_q")


def rewrite_attention(graph: Graph, skip: frozenset[Node] = frozenset()) -> tuple[Graph, list[Node | None], list[str]]:
    """``graph`` with each attention region (but those whose softmax ``amax`` is in ``skip``)
    rewritten; for each score-modified op of the result (``score_modified``), in order, the
    ``amax`` of the region it was rewritten from (None for one that was there before: a
    training graph's, from ``frontend/hand_attention.py``); and a ``not fused: attention:``
    note for each region left as it was."""
    users = graph.users()
    matches: dict[Node, _Match] = {}  # by the bmm with v, where the attention is emitted
    notes: list[str] = []
    for n in graph.nodes:
        if n.op not in ("amax", "copy") or n in skip:
            continue
        try:
            m = _Match(graph, users, n)
        except LookupError:
            continue
        except _NoMatch as e:
            notes.append(f"not fused: attention: {e.args[0]}; softmax(f(q @ kᵀ)) @ v stays as written")
            continue
        matches[m.bmm2] = m
    if not matches:
        return graph, [None for n in graph.nodes if score_modified(n)], notes
    env: dict[Value, Value] = {}

    def rewrite(b, node: Node, new_inputs: list[Value]):
        if node in matches:
            results = (_emit(b, env, matches[node]),)
        elif node.op == "constant":
            results = (b.constant(node.name, graph.constants.get(node.name), node.types[0]),)
        else:
            results = b.append(Node(node.op, new_inputs, node.attrs, node.types)).results
        env.update(zip(node.results, results))
        return results

    def copy_input(b, node: Node) -> Value:
        env[node.out] = b.input(node.name, node.types[0])
        return env[node.out]

    # The scores, f and the softmax are copied too, then dropped: only the replaced bmm read them.
    out = eliminate_dead_code(rebuild(graph, rewrite, input=copy_input))
    order = {m.bmm2: m.amax for m in matches.values()}
    return out, [order.get(n) for n in graph.nodes if n in order or score_modified(n)], notes


def _source_4d(v: Value, shape) -> Value | None:
    """The [B, H, S, D] value the [B * H, S, D] bmm operand ``v`` views, if it is one."""
    if v.node.op == "view" and tuple(v.node.inputs[0].type.shape) == tuple(shape):
        t = v.node.inputs[0]
        while t.node.op == "copy":  # a contiguous copy, which the kernel does not need
            t = t.node.inputs[0]
        return t
    return None


def _unrepeated(v: Value | None, shape: tuple) -> Value | None:
    """The grouped-query k or v that ``v`` (the [B, Hq, S, D] ``shape`` of the attention's
    operand, or the bmm's [B * Hq, S, D] view of it) repeats per query head, if it is such a
    repeat: ``repeat_interleave(x, n, dim=1)`` (or ``x[:, :, None].expand(...).reshape``), which
    the IR has as ``view(copy(expand(view(x))))`` through [B, Hkv, n, S, D]. The attention
    reads x itself, head ``h // n`` for query head h, as SDPA's ``enable_gqa`` does."""
    if v is None or v.node.op != "view":
        return None
    r = v.node.inputs[0]
    if r.type.rank != 5:
        return None
    while r.node.op == "copy":
        r = r.node.inputs[0]
    if r.node.op != "expand":
        return None
    u = r.node.inputs[0]
    b, hkv, n, s, d = r.type.shape
    if tuple(u.type.shape) != (b, hkv, 1, s, d) or u.node.op != "view":
        return None
    x = u.node.inputs[0]
    if tuple(x.type.shape) != (b, hkv, s, d) or tuple(shape) != (b, hkv * n, s, d):
        return None
    return x


def _emit(b, env: dict[Value, Value], m: _Match) -> Value:
    """The attention standing for match ``m``, viewed as its bmm's [B * H, Sq, Dv] result."""
    bsz, h, sq, sk = m.s.type.shape
    d, dv = m.q3.type.shape[2], m.v3.type.shape[2]
    q = _as_4d(b, env, m.q3, (bsz, h, sq, d))
    kt = _source_4d(m.k3, (bsz, h, d, sk))
    k_kv = _unrepeated(kt.node.inputs[0], (bsz, h, sk, d)) if kt is not None and kt.node.op == "permute" and \
        list(kt.node.attrs["dims"]) == [0, 1, 3, 2] else None
    # v's repeat is viewed as [B, Hq, S, D] and then [B * Hq, S, D], or as the latter at once
    v_kv = _unrepeated(_source_4d(m.v3, (bsz, h, sk, dv)), (bsz, h, sk, dv)) or _unrepeated(m.v3, (bsz, h, sk, dv))
    if k_kv is not None and v_kv is not None and k_kv.type.shape[1] == v_kv.type.shape[1]:
        k, v = env[k_kv], env[v_kv]  # grouped-query heads, read without the repeat's copies
    else:
        k = b.op("permute", _as_4d(b, env, m.k3, (bsz, h, d, sk)), dims=[0, 1, 3, 2])
        v = _as_4d(b, env, m.v3, (bsz, h, sk, dv))
    local = {m.s: b.op("attention_scores", q, k)}
    for n in m.chain:
        new = b.append(Node(n.op, [local[w] if w in local else env[w] for w in n.inputs], n.attrs, n.types))
        local.update(zip(n.results, new.results))
    out = b.add("attention", [q, k, v, local[m.x]], {"scale": 1.0, "score_mod": True}).results[0]
    return b.op("view", out, shape=list(m.bmm2.types[0].shape))


def _blocks(v: Value) -> bool:
    return v.node.op in _BLOCKS


_BLOCKS = ("attention_scores", "attention_probs_grad")  # blocks of the kernel that reads them


def _own(op: Node) -> set[Node]:
    """What the kernel of score-modified ``op`` computes on its blocks: ``attention_scores``,
    f (and, for a gradient, ``attention_probs_grad`` and f's derivative)."""
    if op.op in ("attention", "attention_split"):
        chain, leaves = _chain(op.inputs[3], lambda v: v.node.op == "attention_scores")
    else:
        chain, leaves = _chain(op.inputs[6], lambda v: v.node.op == "attention_scores")
        more, others = _chain(op.inputs[7], _blocks)
        chain, leaves = chain + more, leaves + others
        for v in others:
            if v.node.op == "attention_probs_grad":  # it reads f too
                c, lv = _chain(v.node.inputs[6], lambda v: v.node.op == "attention_scores")
                chain, leaves = chain + c, leaves + lv
    return {*chain, *(v.node for v in leaves)}


def region(graph: Graph, attention: Node, users: dict[Node, list[Node]], inlined) -> list[Node]:
    """The nodes of a score-modified attention's kernel (forward or gradient): its
    ``attention_scores``, the pointwise f between them (a gradient's ``attention_probs_grad``
    and f's derivative too), producers of f's operands that only the kernel reads, and the
    attention. ``inlined(node)``: views and constants, which every kernel computes for itself."""
    own = _own(attention)
    chain = [n for n in graph.nodes if n in own and n.op not in _BLOCKS]
    members = {*own, attention}
    outputs = {v.node for v in graph.outputs}
    pos = {n: i for i, n in enumerate(graph.nodes)}
    for n in sorted({w.node for c in chain for w in c.inputs}, key=lambda n: -pos.get(n, -1)):
        _absorb(n, members, users, outputs, pos, inlined)
    return sorted((n for n in members if not inlined(n)), key=pos.__getitem__)


def _absorb(n: Node, members: set[Node], users, outputs, pos, inlined):
    """Add pointwise ``n`` and its own such producers when every reader of ``n`` is a member."""
    if n in members or n not in pos or n in outputs or OPS[n.op].category not in _CHAIN:
        return
    if not inlined(n) and (OPS[n.op].category is not Category.POINTWISE or n.op not in CODEGEN_OPS):
        return
    if any(u not in members for u in users[n]):
        return
    members.add(n)
    for w in sorted({w.node for w in n.inputs}, key=lambda n: -pos.get(n, -1)):
        _absorb(w, members, users, outputs, pos, inlined)


def own_blocks(graph: Graph) -> Graph:
    """``graph`` with each score-modified op (``score_modified``) computing its own blocks: an
    op whose ``attention_scores`` or f another one reads too (a backward's two gradient
    kernels read the same modified scores and gradient) gets a copy of them, since each kernel
    computes them on its own blocks; and q, k, v and d_out read through their contiguous copies,
    which a kernel reading through strides does not need."""
    mods = [n for n in graph.nodes if score_modified(n)]
    if not mods:
        return graph
    claimed: set[Node] = set()
    clone: dict[Node, list[Node]] = {}
    pos = {n: i for i, n in enumerate(graph.nodes)}
    for op in mods:
        own = _own(op)
        if own & claimed:
            clone[op] = sorted(own, key=pos.__getitem__)
        claimed |= own
    env: dict[Value, Value] = {}
    stripped: dict[Value, Value] = {}

    def strip(b, v: Value) -> Value:
        """``v`` without the copies on its way from what it views."""
        if v not in stripped:
            n = v.node
            if n.op == "copy":
                stripped[v] = strip(b, n.inputs[0])
            elif OPS[n.op].category is Category.VIEW and len(n.inputs) == 1 and _has_copy(n.inputs[0]):
                stripped[v] = b.append(Node(n.op, [strip(b, n.inputs[0])], n.attrs, n.types)).out
            else:
                stripped[v] = env[v]
        return stripped[v]

    def emit(b, node: Node, get) -> tuple[Value, ...]:
        inputs = [get(w) for w in node.inputs]
        reads = _OPERANDS.get(node.op, 0) if score_modified(node) or node.op in _BLOCKS else 0
        inputs[:reads] = [strip(b, w) for w in node.inputs[:reads]]
        return b.append(Node(node.op, inputs, node.attrs, node.types)).results

    def rewrite(b, node: Node, new_inputs):
        if node.op == "constant":
            results = (b.constant(node.name, graph.constants.get(node.name), node.types[0]),)
        elif node in clone:
            local: dict[Value, Value] = {}
            for n in clone[node]:
                local.update(zip(n.results, emit(b, n, lambda w: local.get(w, env[w]))))
            results = emit(b, node, lambda w: local.get(w, env[w]))
        else:
            results = emit(b, node, env.__getitem__)
        env.update(zip(node.results, results))
        return results

    def copy_input(b, node: Node) -> Value:
        env[node.out] = b.input(node.name, node.types[0])
        return env[node.out]

    return eliminate_dead_code(rebuild(graph, rewrite, input=copy_input))


# How many leading operands of each op are tensors the kernel reads through strides (q, k, v,
# and the gradients' d_out).
_OPERANDS = {"attention": 3, "attention_split": 3, "attention_scores": 2, "attention_grad_kv": 4, "attention_grad_q": 4,
             "attention_probs_grad": 4}


def _has_copy(v: Value) -> bool:
    while True:
        if v.node.op == "copy":
            return True
        if OPS[v.node.op].category is not Category.VIEW or len(v.node.inputs) != 1:
            return False
        v = v.node.inputs[0]
