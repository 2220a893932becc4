"""Flash-decoding: attention over a long key sequence with few queries, split across programs.

The attention kernel has a program per (query block, batch x head). A decode step (one query
token over a KV cache) gives ``B * H`` programs, each looping over every key: too few to
fill a GPU, whose SMs then wait on a few long loops. When those programs are fewer than the
SMs of ``TARGET`` and the keys are many (``MIN_KEYS``), the keys are split in ranges of
``chunk`` keys, each computed by programs of its own, and a reduction combines them:

    acc, lse = attention_split(q, k, v[, mask]) {splits, chunk}  per range: its output and log-sum-exp
    m = amax(lse, split)                                          the rows' largest log-sum-exp
    w = exp(lse - max(m, -f32max))                                each range's weight (0 where it saw no key)
    out = convert(sum(acc * w, split) / max(sum(w, split), 1))
    lse = where(l > 0, m + log(l), +inf), l = sum(w, split)       only if something reads it

Every range with a key has ``w <= 1`` and the one with the largest log-sum-exp has ``w = 1``,
so ``l >= 1`` unless no range saw a key; ``max(l, 1)`` only makes a row no range saw 0, as the
unsplit kernel gives it. The combine reduces over the ranges of the ``[B, H, splits, Sq, Dv]``
space, ``lse`` broadcast to it (a view), so that ``fuse`` makes it one reduction kernel, as a
softmax is.

Only inference attention is split: one whose log-sum-exp no attention backward reads and no
graph output is (a training forward saves it for its backward), with static sequence lengths.
Attention written by hand is split too: ``fuse`` runs this pass again on the score-modified
attention it makes (``fuse_attention``), whose range kernels then compute f on their blocks.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..cost import GPUS
from ..ir.graph import Graph, Node, Value, rebuild

TARGET = "H100"  # the GPU whose SMs the grid should fill (cost.GPUS)
MAX_QUERIES = 16  # one query block (BLOCK_M >= 16)
MIN_KEYS = 256
CHUNK = 128  # keys per range: a multiple of every BLOCK_N the attention template uses


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _plan(node: Node, users: dict[Node, list[Node]], outputs: set[Value]) -> tuple[int, int, bool] | None:
    """(splits, chunk, whether the log-sum-exp is read) for an attention node worth splitting."""
    lse = node.results[1]
    readers = [u for u in users[node] if lse in u.inputs]
    if lse in outputs or any(u.op.startswith("attention_grad") for u in readers):
        return None  # a training forward
    b, h, sq, _ = node.inputs[0].type.shape
    sk = node.inputs[1].type.shape[2]
    sms = GPUS[TARGET].sms
    if not all(isinstance(x, int) for x in (b, h, sq, sk)) or sq > MAX_QUERIES or sk < MIN_KEYS or b * h >= sms:
        return None
    ranges = _cdiv(sms, b * h)  # per (batch, head), for a program on every SM
    chunk = _cdiv(_cdiv(sk, ranges), CHUNK) * CHUNK
    splits = _cdiv(sk, chunk)
    return (splits, chunk, bool(readers)) if splits > 1 else None


def split_attention(graph: Graph) -> Graph:
    users, outputs = graph.users(), set(graph.outputs)
    plans = {n: _plan(n, users, outputs) for n in graph.nodes if n.op == "attention"}
    plans = {n: p for n, p in plans.items() if p is not None}
    if not plans:
        return graph
    notes = []

    def rewrite(b, node: Node, new_inputs: list[Value]):
        if node not in plans:
            return None
        splits, chunk, lse_read = plans[node]
        bsz, h, sq, _ = node.inputs[0].type.shape
        notes.append(f"fused: attention: {sq} queries x {node.inputs[1].type.shape[2]} keys in {bsz * h} (batch, head) "
                     f"programs, fewer than the {GPUS[TARGET].sms} SMs of an {TARGET}: split over {splits} key "
                     f"ranges of {chunk} keys (flash-decoding, attention_split), combined by a reduction")
        return _combine(b, node, new_inputs, splits, chunk, lse_read)

    return replace(rebuild(graph, rewrite), notes=tuple(notes))


def _combine(b, node: Node, inputs: list[Value], splits: int, chunk: int, lse_read: bool) -> tuple[Value, ...]:
    """attention_split of ``inputs`` and the IR that combines its ranges, standing for ``node``'s
    results (only the output when nothing reads the log-sum-exp)."""
    attrs = {"scale": node.attrs["scale"], "is_causal": node.attrs["is_causal"], "splits": splits, "chunk": chunk,
             "score_mod": node.attrs["score_mod"]}
    acc, lse = b.add("attention_split", inputs, attrs).results
    dev = lse.type.device
    f32 = torch.float32

    def scalar(value):
        return b.op("full", shape=[], value=value, dtype=f32, device=dev)

    bsz, h, _, sq, dv = acc.type.shape
    # Every reduction over the ranges of one [B, H, splits, Sq, Dv] space, the log-sum-exp
    # broadcast to it (a view): one reduction kernel, as a softmax is.
    lse5 = b.op("expand", b.op("view", lse, shape=[bsz, h, splits, sq, 1]), shape=[bsz, h, splits, sq, dv])
    m = b.op("amax", lse5, dims=[2], keepdim=True)  # [B, H, 1, Sq, Dv]
    w = b.op("exp", b.op("sub", lse5, b.op("maximum", m, scalar(-torch.finfo(f32).max))))
    l = b.op("sum", w, dims=[2], keepdim=True)
    out = b.op("div", b.op("sum", b.op("mul", acc, w), dims=[2], keepdim=True), b.op("maximum", l, scalar(1.0)))
    out = b.op("view", out, shape=[bsz, h, sq, dv])
    out = b.op("convert", out, dtype=node.types[0].dtype)
    if not lse_read:
        return (out,)  # rebuild maps the node's first result only; nothing reads the second
    m, l = (b.op("select", x, dim=4, index=0) for x in (m, l))
    total = b.op("where", b.op("gt", l, scalar(0.0)), b.op("add", m, b.op("log", l)), scalar(float("inf")))
    return out, b.op("view", total, shape=[bsz, h, sq])
