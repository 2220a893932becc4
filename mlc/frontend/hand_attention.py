"""Attention written by hand, in training: the backward recomputes the probabilities blockwise.

In inference, ``passes/fuse_attention.py`` finds ``softmax(f(q @ kᵀ)) @ v`` on mlc's IR and
makes it one attention kernel. A training graph cannot be fixed there: AOT autograd's joint
graph differentiates the softmax, so the forward saves the ``B x H x Sq x Sk`` probabilities
for the backward, which reads them in ``dP = dO @ vᵀ``, the softmax's gradient, f's
derivative and three bmms. This pass rewrites that joint graph before the partitioner cuts it,
with four ops of mlc's own (``torch.library``, namespace ``mlc``), as FlashAttention does:

    forward   s = mlc.attention_scores(q, k)                      the scores, [B, H, Sq, Sk]
              x = f(s, ...)                                       f as written (pointwise)
              o, lse = mlc.attention(q, k, v, x)                  softmax(x) @ v and its log-sum-exp
    backward  delta = sum(o * dO, -1)
              g = mlc.attention_probs_grad(dO, q, k, v, lse, delta, x)   p * (dO @ vᵀ - delta)
              ds = f'(g, ...)                                     f's derivative as autograd wrote it
              dq, dk, dv = mlc.attention_backward(dO, q, k, v, lse, delta, x, ds)

``s`` and f are tagged ``MUST_RECOMPUTE`` (activation checkpointing's own policy, which
the min-cut partitioner honors): the forward saves q, k, v, f's operands, o and lse, never a
score-sized tensor, and the backward computes ``s``, ``x`` and ``ds`` again. On mlc's IR
each of these ops and the pointwise work around it is one kernel (``attention_scores`` and
``attention_probs_grad`` stand for blocks of the kernel that reads them): see
``ir/ops.py`` and ``codegen/templates/attention.py``. The ops' own implementations are the
IR's references, so a graph PyTorch runs (a fallback) computes the same values.

A region is rewritten only when everything that reads the scores, the probabilities and
their gradients is one of the pieces above and its sizes are static; else it stays as
autograd wrote it, with a ``not fused: attention:`` note saying why (an operand of f that
needs a gradient, as a learned position bias does, say).
"""

from __future__ import annotations

import operator

import torch
import torch.fx
from torch._guards import detect_fake_mode
from torch.utils.checkpoint import CheckpointPolicy

from ..ir.ops import (_ref_attention, _ref_attention_grad_kv, _ref_attention_grad_q, _ref_attention_probs_grad,
                      _ref_attention_scores)

aten, prims = torch.ops.aten, torch.ops.prims
Tensor = torch.Tensor


# --- the ops -------------------------------------------------------------------------------

def _scores_like(q: Tensor, k: Tensor) -> Tensor:
    return q.new_empty((*q.shape[:3], k.shape[2]), dtype=torch.promote_types(q.dtype, k.dtype))


@torch.library.custom_op("mlc::attention_scores", mutates_args=())
def attention_scores(q: Tensor, k: Tensor) -> Tensor:
    """q @ kᵀ per head, [B, Hq, Sq, Sk] (grouped-query heads share their key head)."""
    return _ref_attention_scores(q, k)


@attention_scores.register_fake
def _(q, k):
    return _scores_like(q, k)


@torch.library.custom_op("mlc::attention", mutates_args=())
def attention(q: Tensor, k: Tensor, v: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(scores) @ v and the fp32 log-sum-exp of each row of ``scores`` (+inf for a row
    with no key to attend to, whose output is 0)."""
    out, lse = _ref_attention(q, k, v, scores, scale=1.0, is_causal=False, score_mod=True)
    return out, lse


@attention.register_fake
def _(q, k, v, scores):
    return q.new_empty((*q.shape[:3], v.shape[3])), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("mlc::attention_probs_grad", mutates_args=())
def attention_probs_grad(d_out: Tensor, q: Tensor, k: Tensor, v: Tensor, lse: Tensor, delta: Tensor,
                         scores: Tensor) -> Tensor:
    """The gradient at ``scores``: p * (d_out @ vᵀ - delta), p = exp(scores - lse)."""
    return _ref_attention_probs_grad(d_out, q, k, v, lse, delta, scores)


@attention_probs_grad.register_fake
def _(d_out, q, k, v, lse, delta, scores):
    return scores.new_empty(scores.shape)


@torch.library.custom_op("mlc::attention_backward", mutates_args=())
def attention_backward(d_out: Tensor, q: Tensor, k: Tensor, v: Tensor, lse: Tensor, delta: Tensor,
                       scores: Tensor, d_scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients of q, k and v, from ``d_scores``, the gradient of attention_scores(q, k)."""
    dk, dv = _ref_attention_grad_kv(d_out, q, k, v, lse, delta, scores, d_scores, scale=1.0, is_causal=False)
    dq = _ref_attention_grad_q(d_out, q, k, v, lse, delta, scores, d_scores, scale=1.0, is_causal=False)
    return dq, dk, dv


@attention_backward.register_fake
def _(d_out, q, k, v, lse, delta, scores, d_scores):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)  # contiguous, as computed


# --- the rewrite ---------------------------------------------------------------------------

_CASTS = {aten._to_copy.default, prims.convert_element_type.default}
_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.expand.default,
          aten.alias.default, aten.clone.default}  # value-preserving, as the paths between the pieces use them


class _Skip(Exception):
    """Attention that stays as autograd wrote it; the message says why."""


def _name(n) -> str:
    return getattr(getattr(n, "target", None), "__name__", "") if isinstance(n, torch.fx.Node) else ""


def _val(n):
    return n.meta.get("val") if isinstance(n, torch.fx.Node) else None


def _shape(n) -> tuple | None:
    val = _val(n)
    if not isinstance(val, torch.Tensor) or not all(isinstance(d, int) for d in val.shape):
        return None
    return tuple(val.shape)


def _pointwise(n: torch.fx.Node) -> bool:
    return n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) and \
        (torch.Tag.pointwise in n.target.tags or n.target in _CASTS)


def _is(n, target, *args) -> bool:
    return isinstance(n, torch.fx.Node) and n.op == "call_function" and n.target is target and \
        all(a is None or (len(n.args) > i and n.args[i] == a) for i, a in enumerate(args))


def _last_dim(n: torch.fx.Node, target) -> bool:
    """``target(x, [-1], True)``: a reduction over the keys, keeping the dim."""
    if not _is(n, target) or len(n.args) < 3 or n.args[2] is not True or len(n.args[1]) != 1:
        return False
    rank = len(_val(n.args[0]).shape)
    return rank > 0 and n.args[1][0] % rank == rank - 1  # a softmax of a 0-d tensor reduces over dim 0


def _only_user(n: torch.fx.Node):
    users = list(n.users)
    return users[0] if len(users) == 1 else None


def _through(n: torch.fx.Node, nodes: set) -> torch.fx.Node:
    """Follow ``n``'s single users that are views or casts; the nodes passed join ``nodes``."""
    while (u := _only_user(n)) is not None and (u.target in _VIEWS or u.target in _CASTS):
        nodes.add(u)
        n = u
    return n


def _source(n: torch.fx.Node, shape: tuple) -> torch.fx.Node | None:
    """The ``shape``d tensor that the bmm operand ``n`` views, if it is a view of one, through
    the contiguous copy (and the expand to its own shape) that made it a bmm operand: mlc's
    kernels read through strides, and the forward then saves the tensor, not its copy."""
    if n.target not in (aten.view.default, aten._unsafe_view.default, aten.reshape.default) or \
            _shape(n.args[0]) != tuple(shape):
        return None
    t = n.args[0]
    while t.target is aten.clone.default or (t.target is aten.expand.default and _shape(t.args[0]) == tuple(shape)):
        t = t.args[0]
    return t


def _permute_of(n, base) -> bool:
    """Is ``n`` the [0, 2, 1] transpose of ``base``?"""
    return _is(n, aten.permute.default) and n.args[0] is base and list(n.args[1]) == [0, 2, 1]


class _Region:
    """One attention of the joint graph and the backward nodes that read what it computes."""

    def __init__(self, amax: torch.fx.Node):
        x = amax.args[0]
        if not _last_dim(amax, aten.amax.default) or len(_val(x).shape) != 4:
            raise LookupError
        sub = _only_user(amax)
        if not _is(sub, aten.sub.Tensor, x, amax):
            raise LookupError
        exp = _only_user(sub)
        if not _is(exp, aten.exp.default) or len(exp.users) != 2:
            raise LookupError
        sums = [u for u in exp.users if _last_dim(u, aten.sum.dim_IntList)]
        div = next((u for u in exp.users if _is(u, aten.div.Tensor, exp)), None)
        if len(sums) != 1 or div is None or div.args[1] is not sums[0] or list(sums[0].users) != [div]:
            raise LookupError
        self.dead = {amax, sub, exp, sums[0], div}  # what the rewrite replaces, forward and backward
        while (u := _only_user(div)) is not None and u.target in _CASTS:  # a softmax in fp32 of fp16 scores
            div = u
            self.dead.add(u)
        self.x, self.p = x, div
        self._forward()
        self._scores()
        self._backward()

    def _forward(self):
        """The probabilities' path to the bmm with v, and the bmm with dO that gives dv."""
        b, h, sq, sk = _shape(self.x) or (None,) * 4
        if b is None:
            raise _Skip("the scores have symbolic sizes")
        p3, self.p_aliases = None, []  # the backward reads the probabilities through aliases
        for u in self.p.users:
            if u.target is aten.alias.default:
                self._aliases(u)
                continue
            if u.target in _CASTS and all(w.target is aten.mul.Tensor for w in u.users):
                self._aliases(u)  # the backward's cast of what the forward saves
                continue
            path, n = [u], u
            while not (n.target in (aten.view.default, aten._unsafe_view.default) and _shape(n) == (b * h, sq, sk)):
                if not (n.target in _VIEWS or n.target in _CASTS) or len(n.users) != 1:
                    raise LookupError if p3 is None and not self.p_aliases else \
                        _Skip(f"the probabilities have another reader ({_name(n)})")
                n = next(iter(n.users))
                path.append(n)
            if p3 is not None:
                raise _Skip("the probabilities have another reader")
            p3 = n
            self.dead |= set(path)
        if p3 is None:
            raise LookupError  # a softmax, not attention
        bmm2 = next((u for u in p3.users if _is(u, aten.bmm.default, p3)), None)
        if bmm2 is None:
            raise LookupError
        dv_t = next((u for u in p3.users if _permute_of(u, p3)), None)
        if dv_t is None or len(dv_t.users) != 1 or not _is(dv3 := next(iter(dv_t.users)), aten.bmm.default, dv_t):
            raise _Skip("no gradient of v is taken from the probabilities (is v a constant?)")
        if set(p3.users) != {bmm2, dv_t}:
            raise _Skip("the probabilities have another reader")
        self.bmm2, self.v3 = bmm2, bmm2.args[1]
        self.dv3, self.do3 = dv3, dv3.args[1]
        self.dead |= {p3, bmm2, dv_t, dv3}
        self.b, self.h, self.sq, self.sk = b, h, sq, sk

    def _aliases(self, a: torch.fx.Node):
        self.p_aliases.append(a)
        self.dead.add(a)
        for u in a.users:
            if u.target is aten.alias.default or u.target in _CASTS:
                self._aliases(u)
            elif not _is(u, aten.mul.Tensor):
                raise _Skip(f"the probabilities have another reader ({_name(u)})")

    def _scores(self):
        """f: the pointwise nodes between the scores bmm and x."""
        chain, leaves = [], []
        seen: dict[torch.fx.Node, bool] = {}

        def visit(n) -> bool:
            if not isinstance(n, torch.fx.Node):
                return False
            if n in seen:
                return seen[n]
            if n.target in (aten.view.default, aten._unsafe_view.default) and _is(n.args[0], aten.bmm.default) and \
                    _shape(n) == _shape(self.x):
                leaves.append(n) if n not in leaves else None
                seen[n] = True
                return True
            if not (_pointwise(n) or n.target in _VIEWS):
                seen[n] = False
                return False
            seen[n] = False
            seen[n] = any([visit(a) for a in n.all_input_nodes])
            if seen[n]:
                chain.append(n)
            return seen[n]

        visit(self.x)
        if len(leaves) != 1:
            raise LookupError
        (s4,) = leaves
        bmm1 = s4.args[0]
        if list(bmm1.users) != [s4]:
            raise _Skip("the scores have another reader")
        self.s4, self.bmm1, self.chain = s4, bmm1, chain
        self.q3, self.kt3 = bmm1.args
        self.dead |= {bmm1}
        dtypes = {_val(n).dtype for n in (self.q3, self.kt3, self.v3, self.bmm2)}
        if len(dtypes) != 1:
            raise _Skip("q, k, v and the output differ in dtype")

    def _backward(self):
        """The softmax's gradient, f's derivative and the bmms with q and k."""
        # m1 = dP * p and m2 = p * sum(m1), both reading p (or an alias of it)
        muls = [(a, m) for a in [self.p, *self.p_aliases] for m in a.users
                if _is(m, aten.mul.Tensor) and m not in self.dead]
        other = {m: m.args[1] if m.args[0] is a else m.args[0] for a, m in muls}
        m2 = None
        for m in other:
            s = other[m]
            if _last_dim(s, aten.sum.dim_IntList) and s.args[0] in other and s.args[0] is not m:
                m2 = m
        why = "the softmax's gradient is not p * dP - p * sum(p * dP) as autograd writes it"
        if m2 is None or len(other) != 2:
            raise _Skip(why)
        s = other[m2]
        m1 = s.args[0]
        g = next((u for u in m1.users if _is(u, aten.sub.Tensor, m1, m2)), None)
        if g is None or set(m1.users) != {s, g} or list(m2.users) != [g] or list(s.users) != [m2]:
            raise _Skip(why)
        # dP: view(bmm(dO, vᵀ)), perhaps cast
        dp = other[m1]
        path = []
        while dp.target in _VIEWS or dp.target in _CASTS:
            path.append(dp)
            dp = dp.args[0]
        if not (_is(dp, aten.bmm.default, self.do3) and _permute_of(dp.args[1], self.v3)) or \
                any(len(n.users) != 1 for n in path + [dp, dp.args[1]]):
            raise _Skip("dP is not dO @ vᵀ")
        self.dead |= {m1, m2, s, g, dp, dp.args[1], *path}
        self.g = g
        # f's derivative: from g to the [B*H, Sq, Sk] gradient the bmms with q and k read
        bwd, ds3 = set(), None
        frontier = [g]
        while frontier:
            n = frontier.pop()
            for u in n.users:
                if u in bwd:
                    continue
                if _is(u, aten.bmm.default):
                    ds3 = n if ds3 is None or ds3 is n else False
                    continue
                if not (_pointwise(u) or u.target in _VIEWS):
                    raise _Skip(f"the scores' gradient is read by {_name(u)} (an operand of f needs a gradient)")
                bwd.add(u)
                frontier.append(u)
        if not ds3 or _shape(ds3) != (self.b * self.h, self.sq, self.sk) or len(ds3.users) != 2:
            raise _Skip("the scores' gradient reaches no single [B * H, Sq, Sk] operand of two bmms")
        users = list(ds3.users)
        dq3 = next((u for u in users if u.args[0] is ds3 and _permute_of(u.args[1], self.kt3)), None)
        dkt3 = next((u for u in users if u.args[1] is ds3 and _permute_of(u.args[0], self.q3)), None)
        if dq3 is None or dkt3 is None:
            raise _Skip("the scores' gradient does not meet q and k in their bmms")
        self.ds4 = ds3.args[0] if ds3.target in (aten.view.default, aten._unsafe_view.default) and \
            _shape(ds3.args[0]) == _shape(self.x) else None
        if self.ds4 is None:
            raise _Skip("the scores' gradient is not a view of a [B, H, Sq, Sk] tensor")
        self.dq3, self.dkt3 = dq3, dkt3
        self.dead |= {ds3, dq3, dkt3, dq3.args[1], dkt3.args[0]}
        # The new backward goes where the region's backward starts (dv's bmm may come before
        # the scores' gradient), f's derivative moved there with it: it may read only itself,
        # the softmax's gradient and what is computed before.
        pos = {n: i for i, n in enumerate(g.graph.nodes)}
        self.anchor = min((self.dv3.args[0], self.dv3, dp, dp.args[1]), key=pos.__getitem__)
        moved = bwd - {ds3}
        before = pos[self.anchor]

        def ready(a: torch.fx.Node) -> bool:
            """Is ``a`` computed before the anchor, or can it move there (a constant the backward makes)?"""
            if a in moved or a is g or pos[a] < before:
                return True
            if a.op != "call_function" or a in self.dead or not all(ready(i) for i in a.all_input_nodes):
                return False
            moved.add(a)
            return True

        for n in sorted(moved, key=pos.__getitem__):
            for a in n.all_input_nodes:
                if not ready(a):
                    raise _Skip(f"f's derivative ({_name(n)}) reads the backward's other work ({_name(a)})")
        self.fprime = sorted(moved, key=pos.__getitem__)


def _call(graph: torch.fx.Graph, mode, target, *args) -> torch.fx.Node:
    node = graph.call_function(target, args)
    vals = torch.fx.node.map_arg(args, lambda a: a.meta["val"])
    with mode:
        node.meta["val"] = target(*vals)
    return node


def _item(graph, mode, node, i) -> torch.fx.Node:
    out = graph.call_function(operator.getitem, (node, i))
    out.meta["val"] = node.meta["val"][i]
    return out


def _rewrite(graph: torch.fx.Graph, mode, r: _Region):
    b, h, sq, sk = r.b, r.h, r.sq, r.sk
    d, dv = _val(r.q3).shape[2], _val(r.v3).shape[2]
    with graph.inserting_before(r.s4.next):
        q4 = _source(r.q3, (b, h, sq, d)) or _call(graph, mode, aten.reshape.default, r.q3, [b, h, sq, d])
        kt4 = _source(r.kt3, (b, h, d, sk)) or _call(graph, mode, aten.reshape.default, r.kt3, [b, h, d, sk])
        v4 = _source(r.v3, (b, h, sk, dv)) or _call(graph, mode, aten.reshape.default, r.v3, [b, h, sk, dv])
        k4 = _call(graph, mode, aten.permute.default, kt4, [0, 1, 3, 2])
        scores = _call(graph, mode, torch.ops.mlc.attention_scores.default, q4, k4)
    r.s4.replace_all_uses_with(scores)
    recompute = [scores, *r.chain]
    with graph.inserting_before(r.bmm2):
        fwd = _call(graph, mode, torch.ops.mlc.attention.default, q4, k4, v4, r.x)
        out, lse = _item(graph, mode, fwd, 0), _item(graph, mode, fwd, 1)
        out3 = _call(graph, mode, aten.view.default, out, [b * h, sq, dv])
    r.bmm2.replace_all_uses_with(out3)
    for n in (scores, fwd, out, lse, out3, *(x for x in (q4, kt4, v4, k4) if x.meta.get("partitioner_tag") is None)):
        n.meta["partitioner_tag"] = r.bmm2.meta.get("partitioner_tag")
    backward = []
    with graph.inserting_before(r.anchor):
        do4 = _source(r.do3, (b, h, sq, dv)) or _call(graph, mode, aten.reshape.default, r.do3, [b, h, sq, dv])
        f32 = [_call(graph, mode, prims.convert_element_type.default, t, torch.float32)
               if _val(t).dtype != torch.float32 else t for t in (out, do4)]
        delta = _call(graph, mode, aten.sum.dim_IntList, _call(graph, mode, aten.mul.Tensor, *f32), [-1])
        g = _call(graph, mode, torch.ops.mlc.attention_probs_grad.default, do4, q4, k4, v4, lse, delta, r.x)
        backward += [do4, *f32, delta, delta.args[0], g]
    r.g.replace_all_uses_with(g)
    for n in r.fprime:
        r.anchor.prepend(n)
    ds4 = g if r.ds4 is r.g else r.ds4
    with graph.inserting_before(r.anchor):
        bwd = _call(graph, mode, torch.ops.mlc.attention_backward.default, do4, q4, k4, v4, lse, delta, r.x, ds4)
        dq, dk, dv4 = (_item(graph, mode, bwd, i) for i in range(3))
        dq3 = _call(graph, mode, aten.view.default, dq, [b * h, sq, d])
        dkt3 = _call(graph, mode, aten.reshape.default, _call(graph, mode, aten.permute.default, dk, [0, 1, 3, 2]),
                     [b * h, d, sk])
        dv3 = _call(graph, mode, aten.view.default, dv4, [b * h, sk, dv])
        backward += [bwd, dq, dk, dv4, dq3, dkt3, dkt3.args[0], dv3]
    for n in backward:
        if n.op == "call_function" and n.meta.get("partitioner_tag") is None:
            n.meta["partitioner_tag"] = r.dv3.meta.get("partitioner_tag")
    for old, new in ((r.dq3, dq3), (r.dkt3, dkt3), (r.dv3, dv3)):
        old.replace_all_uses_with(new)
    for n in recompute:
        n.meta["recompute"] = CheckpointPolicy.MUST_RECOMPUTE


def recompute_attention(joint: torch.fx.GraphModule) -> list[str]:
    """Rewrite each attention written by hand in the joint graph ``joint`` (in place) so that
    its backward recomputes the probabilities; returns a note per attention, fused or not."""
    graph = joint.graph
    regions, notes = [], []
    for n in list(graph.nodes):
        if n.op != "call_function" or n.target is not aten.amax.default:
            continue
        try:
            regions.append(_Region(n))
        except LookupError:
            continue
        except _Skip as e:
            notes.append(f"not fused: attention: in training, {e.args[0]}; the backward reads the probabilities "
                         f"the forward saves")
    if not regions:
        return notes
    mode = detect_fake_mode([n.meta.get("val") for n in graph.nodes if n.op == "placeholder"])
    if mode is None:
        return notes + ["not fused: attention: in training, the joint graph has no fake tensors to size new ops"]
    taken = set()
    for r in regions:
        if r.dead & taken:  # two softmaxes reading one another: keep the graph as it is
            continue
        taken |= r.dead
        _rewrite(graph, mode, r)
        notes.append(f"fused: attention: in training, softmax(f(q @ kᵀ)) @ v written by hand "
                     f"({r.b}x{r.h}x{r.sq}x{r.sk} scores): the forward saves the log-sum-exp, the backward "
                     f"recomputes the scores and f ({', '.join(_name(n) for n in r.chain) or 'identity'}) blockwise")
    joint.graph.eliminate_dead_code()
    joint.graph.lint()
    joint.recompile()
    return notes
