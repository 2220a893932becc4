"""The attention template: FlashAttention-2 kernels, forward and backward, as in Triton's tutorial 06.

One op per kernel, each a loop over blocks that never writes the ``Sq x Sk`` scores:

- ``attention``: a program per (query block, batch x head). The query tile is loaded once;
  a loop over key/value blocks computes ``qk``, the scale and mask, a running max and sum in
  fp32 (rescaling the accumulator when the max grows) and ``acc += p @ v``. The output is
  written once, with the log-sum-exp of each row for the backward.
- ``attention_split`` (flash-decoding, ``passes/split_attention.py``): the same code, with a
  third grid axis over ranges of ``chunk`` keys; each program loops over its range only and
  stores its range's normalized output and log-sum-exp (-inf for a range with no key), which
  a reduction kernel combines. A decode step's few (batch, head) programs then fill the GPU.
- ``attention_grad_kv``: a program per (key block, batch x key/value head) holds its k and v
  tiles and loops over the query blocks of every query head that reads them (grouped-query
  heads need no atomics), recomputing ``p`` from the saved log-sum-exp:
  ``dv += pᵀ @ do``, ``dk += dsᵀ @ q`` with ``ds = p * (do @ vᵀ - delta)``.
- ``attention_grad_q``: a program per (query block, batch x head): ``dq += ds @ k``.

``delta = rowsum(out * d_out)`` is computed before, by a reduction kernel (see the lowering).
Causal attention skips the key blocks wholly above the diagonal (and, in ``attention_grad_kv``,
the query blocks wholly before it); the causal condition, the mask and the ragged tails are
one ``tl.where`` on each block. Head dims are padded to a power of two (at least 16, for
``tl.dot``). fp16/bf16 tiles are multiplied on tensor cores with fp32 accumulators, fp32 ones
in full precision; Triton's interpreter multiplies bf16 tiles in fp32 (its bf16 ``tl.dot`` is
wrong in triton 3.9). A row with no key to attend to (all masked) gives 0 and a log-sum-exp
of +inf, so that its recomputed probabilities are 0.

Operands are read through their views and strides, grouped-query heads by index
(``off_hkv = off_h // group``), never copied. The mask may be computed in the kernel (a
score modification: ``where(m, 0, -inf)``, a broadcast padding mask), and so may operands
loaded once per program (the forward's q); those loaded in the loop are read from memory.
A forward with ``score_mod`` (attention written by hand, ``passes/fuse_attention.py``) takes
the scores themselves as its last operand, ``f(attention_scores(q, k), ...)``: the kernel
emits f on each ``q @ kᵀ`` block (``attention_scores`` is that block), its other operands
loaded under the block's bounds, in place of the scale and mask.

Launch sizes: ``(Sq, Sk, programs along axis 1, 1 if they hold key blocks)`` and, for
``attention_split``, the key ranges (programs along axis 2); ``params`` has the op, the head
dims and the itemsize of the operands (and ``attention_split``'s chunk).
"""

from __future__ import annotations

import itertools
import math

import torch
import triton

from ...cost import GPU, blocks_per_sm, config_time
from ...ir.graph import Graph, Node, Value
from ...ir.ops import ATTENTIONS, OPS, Category
from .. import indexing as ix
from ..compile import next_pow2
from ..source import KernelSource
from ..writer import TL_DTYPE, CodegenError, KernelWriter, kernel_name, kernel_symbols
from .base import Template


LOG2E = 1.4426950408889634  # the loop works in base 2 (tl.math.exp2), as tutorial 06 does
LN2 = 0.6931471805599453
MAX_HEAD_DIM = 256


class _AttentionWriter(KernelWriter):
    tile_names = KernelWriter.tile_names | {"offs_m", "offs_n", "offs_d", "offs_dv", "q_mask", "kv_mask",
                                            "s_mask"}

    scores: tuple[str, list[str]] | None = None  # the block attention_scores is, and the index it is read at
    probs_grad: tuple[str, list[str]] | None = None  # the same for attention_probs_grad (a gradient kernel's)

    def _emit(self, value: Value, idx: list[str]) -> str:
        if value.node.op in ("attention_scores", "attention_probs_grad"):
            block = self.scores if value.node.op == "attention_scores" else self.probs_grad
            if block is None or list(idx) != block[1]:
                what = "the scores are" if value.node.op == "attention_scores" else "the probabilities' gradient is"
                raise CodegenError(f"{what} read at another position than their own block (a score modification "
                                   f"and its derivative must be pointwise in the scores)")
            return block[0]
        if OPS[value.node.op].category is Category.ATTENTION:
            raise CodegenError("an attention result read inside its own kernel")
        return super()._emit(value, idx)


def _read_from_memory(v: Value, body: Graph) -> bool:
    """Is ``v`` an input read through views, copies and casts?"""
    inputs = {n.out for n in body.inputs}
    while v not in inputs:
        if OPS[v.node.op].category is not Category.VIEW and v.node.op not in ("copy", "convert"):
            return False
        v = v.node.inputs[0]
    return True


class _Gen:
    """What one kernel's code needs to know about its attention node."""

    def __init__(self, body: Graph, node: Node, interpret: bool):
        self.body, self.node = body, node
        self.w = _AttentionWriter(body)
        fwd = node.op in ("attention", "attention_split")
        q, k, v = node.inputs[0:3] if fwd else node.inputs[1:4]
        rest = node.inputs[3:] if fwd else node.inputs[6:]
        self.q, self.k, self.v, self.mask = q, k, v, (rest[0] if rest else None)
        self.B, self.H, self.Sq, self.D = q.type.shape
        self.Hkv, self.Sk, self.Dv = k.type.shape[1], k.type.shape[2], v.type.shape[3]
        for d in (self.D, self.Dv):
            if not isinstance(d, int) or d > MAX_HEAD_DIM:
                raise CodegenError(f"attention head dims must be static and at most {MAX_HEAD_DIM}, got {d}")
        if not isinstance(self.H, int) or not isinstance(self.Hkv, int):
            raise CodegenError("attention with a symbolic number of heads")
        self.group = self.H // self.Hkv
        self.BD, self.BDV = max(16, next_pow2(self.D)), max(16, next_pow2(self.Dv))
        self.dtype = q.type.dtype
        # bf16 tiles multiplied in fp32 in the interpreter are exact products: "ieee".
        self.dot_dtype = torch.float32 if interpret and self.dtype == torch.bfloat16 else self.dtype
        self.precision = ', input_precision="ieee"' if self.dot_dtype == torch.float32 else ""
        self.scale, self.causal = node.attrs["scale"], node.attrs["is_causal"]
        self.score_mod = node.attrs.get("score_mod", False)
        self.ds = rest[1] if self.score_mod and not fwd else None  # the gradient of attention_scores
        if self.score_mod:
            found = [n for n in body.nodes if n.op == "attention_scores"]
            if len(found) != 1 or found[0].inputs != (q, k):
                raise CodegenError("a score modification reads attention_scores of the attention's own q and k")
            grads = [n for n in body.nodes if n.op == "attention_probs_grad"]
            if not fwd and (len(grads) > 1 or grads and grads[0].inputs != node.inputs[:7]):
                raise CodegenError("a score modification's derivative reads attention_probs_grad of its own kernel")
            self.scale = 1.0  # in the score modification, if anywhere

    # --- code ---------------------------------------------------------------------------

    def line(self, text: str = ""):
        self.w.line(text)

    def dot(self, a: str, b: str, acc: str | None = None) -> str:
        return f"tl.dot({a}, {b}{', ' + acc if acc else ''}{self.precision})"

    def low(self, v: str) -> str:
        """A fp32 block cast to the type the tiles are multiplied in (p before p @ v)."""
        return v if self.dot_dtype == torch.float32 else f"{v}.to({TL_DTYPE[self.dot_dtype]})"

    def tile(self, name: str, value: Value, idx: list[str], mask: str, in_loop: bool) -> str:
        """Load (or compute) ``value`` at ``idx`` under ``mask`` as a tile named ``name``, in the dot dtype."""
        if in_loop and not _read_from_memory(value, self.body):
            raise CodegenError(f"attention's {name} is computed in the kernel; operands loaded in the loop over "
                               f"blocks are read from memory (only the mask and tiles loaded once may be computed)")
        w = self.w
        w.mask, w.raw_loads = mask, True
        t = w.emit(value, idx)
        w.raw_loads = False
        dtype = self.dot_dtype  # q, k, v and do share one floating dtype (the op's type rule)
        if w.dtypes.get(t) != dtype:
            t = f"{t}.to({TL_DTYPE[dtype]})"
        self.line(f"{name} = {t}")
        return name

    def row(self, name: str, value: Value, offs: str, lim: str, in_loop: bool) -> str:
        """A per-row fp32 vector ([BLOCK], lse or delta) at query rows ``offs``."""
        if in_loop and not _read_from_memory(value, self.body):
            raise CodegenError(f"attention's {name} is computed in the kernel; operands loaded in the loop over "
                               f"blocks are read from memory")
        w = self.w
        w.mask, w.raw_loads = f"{offs} < {lim}", True
        t = w.emit(value, ["off_z", "off_h", offs])
        w.raw_loads = False
        self.line(f"{name} = {t}" if w.dtypes.get(t) == torch.float32 else f"{name} = {t}.to(tl.float32)")
        return name

    def scores(self, qk: str, rows: str, cols: str, key_tail: bool):
        """Scale, mask, causal mask and the keys past the end applied to ``qk`` (base-2 units).

        ``rows``/``cols`` index queries and keys as the block holds them: ``[BLOCK_M, BLOCK_N]``
        or, in the dk/dv kernel, ``[BLOCK_N, BLOCK_M]``. Without a mask, rows past the end need
        no condition: their q (or, in the dk/dv kernel, their do, lse and delta, read from
        memory) are loaded as 0, so nothing they compute reaches a stored result. Keys past the
        end (``key_tail``) must get no probability; the dk/dv kernel stores none of their rows,
        so it skips that condition. A mask, loaded (or computed) under both bounds, gets both.
        """
        bounds = f"({rows} < N_CTX_Q) & ({cols} < N_CTX_K)"
        keep = [f"({cols} < N_CTX_K)"] if key_tail else []
        if self.score_mod:
            # The scores are f(q @ kᵀ, ...), computed here on the block: its operands loaded
            # under both bounds, broadcast through their strides.
            idx = ["off_z", "off_h", rows, cols]
            full = (self.B, self.H, self.Sq, self.Sk)
            self.line(f"s_mask = {bounds}")
            self.line(f"s_raw = {qk}")  # q @ kᵀ, which f's derivative may read too
            self.w.mask, self.w.dtypes["s_raw"] = "s_mask", torch.float32
            self.w.scores = ("s_raw", ix.broadcast(idx, full, full))
            m = self.w.emit(self.mask, ix.broadcast(idx, full, self.mask.type.shape))
            self.w.scores = None
            m = m if self.w.dtypes.get(m) == torch.float32 else f"{m}.to(tl.float32)"
            # In base-2 units; finite scores stay finite (a row masked by finfo.min, as BERT
            # masks an empty sequence, is then uniform, as in eager, not empty).
            self.line(f"{qk} = tl.where({m} == float('-inf'), float('-inf'), tl.maximum({m} * {LOG2E}, "
                      f"{-torch.finfo(torch.float32).max!r}))")
            keep = ["s_mask"]
        else:
            self.line(f"{qk} = {qk} * qk_scale")
        if self.mask is not None and not self.score_mod:
            idx = ["off_z", "off_h", rows, cols]
            full = (self.B, self.H, self.Sq, self.Sk)
            self.line(f"s_mask = {bounds}")
            self.w.mask = "s_mask"
            m = self.w.emit(self.mask, ix.broadcast(idx, full, self.mask.type.shape))
            if self.mask.type.dtype == torch.bool:
                self.line(f"{qk} = tl.where({m}, {qk}, float('-inf'))")
            else:
                self.line(f"{qk} = {qk} + {m} * {LOG2E}")
            keep = ["s_mask"]
        keep += [f"({rows} >= {cols})"] if self.causal else []
        if keep:
            self.line(f"{qk} = tl.where({' & '.join(keep)}, {qk}, float('-inf'))")

    def score_grad(self, ds: str, rows: str, cols: str):
        """With a score modification: ``ds`` (the gradient at the modified scores, a block as
        ``scores`` indexes it) becomes the gradient at q @ kᵀ, through f's derivative, on the block."""
        if self.ds is None:
            return
        idx = ["off_z", "off_h", rows, cols]
        full = (self.B, self.H, self.Sq, self.Sk)
        w = self.w
        w.mask, w.dtypes[ds] = "s_mask", torch.float32
        w.scores, w.probs_grad = ("s_raw", ix.broadcast(idx, full, full)), (ds, ix.broadcast(idx, full, full))
        d = w.emit(self.ds, ix.broadcast(idx, full, self.ds.type.shape))
        w.scores = w.probs_grad = None
        d = d if w.dtypes.get(d) == torch.float32 else f"{d}.to(tl.float32)"
        self.line(f"{ds} = tl.where(s_mask, {d}, 0.0)  # through f's derivative; nothing past the ends")

    def head_offsets(self, kv_programs: bool):
        self.line("off_hz = tl.program_id(1)")
        if kv_programs:
            self.line(f"off_z = off_hz // {self.Hkv}")
            self.line(f"off_hkv = off_hz % {self.Hkv}")
        else:
            self.line(f"off_z = off_hz // {self.H}")
            self.line(f"off_h = off_hz % {self.H}")
            if self.group > 1:
                self.line(f"off_hkv = off_h // {self.group}  # {self.group} query heads share each key/value head")
            else:
                self.line("off_hkv = off_h")
        self.line(f"offs_d = tl.arange(0, {self.BD})" + (f"  # head dim {self.D}, padded" if self.BD != self.D else ""))
        self.line(f"offs_dv = tl.arange(0, {self.BDV})" +
                  (f"  # head dim {self.Dv}, padded" if self.BDV != self.Dv else ""))
        if not self.score_mod:
            self.line(f"qk_scale = {self.scale!r} * {LOG2E}  # the softmax scale, in base-2 units")

    def dims_mask(self, offs: str, lim: str, d: str, width: int, real: int) -> str:
        return f"({offs} < {lim})" + (f" & ({d} < {real})" if width != real else "")

    def reset_memo(self):
        """Values loaded in a loop are emitted again in it (the writer memoizes by index text)."""
        saved = self.w.memo
        self.w.memo = {}
        return saved

    # --- results ------------------------------------------------------------------------

    def store(self, results: dict[int, tuple[str, list[str], str, tuple[str, ...]]]):
        """Store each output of the body: a result of the node, or one cast of it."""
        w = self.w
        for k, v in enumerate(self.body.outputs):
            src = v
            if src.node.op == "convert" and src.node.inputs[0].node is self.node:
                src = src.node.inputs[0]
            if src.node is not self.node:
                raise CodegenError("an output computed from the attention's results or beside them (attention "
                                   "kernels store only their own results, possibly cast)")
            val, idx, mask, axes = results[src.index]
            w.dtypes.setdefault(val, torch.float32)
            val = w.convert(val, v.type.dtype) if v.type.dtype != torch.float32 else val
            w.store(k, idx, v.type.shape, val, mask, axes)


def _forward(g: _Gen):
    """``attention``, or ``attention_split``: the same code over one range of ``chunk`` keys,
    the range ``tl.program_id(2)``, its output and log-sum-exp stored per range."""
    w = g.w
    chunk = g.node.attrs.get("chunk")  # attention_split
    g.line("# -- which query block and which (batch, head) this program computes --" if chunk is None else
           "# -- which query block, which (batch, head) and which range of keys this program computes --")
    g.line("start_m = tl.program_id(0)")
    g.head_offsets(kv_programs=False)
    g.line("offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    g.line()
    g.line("# -- the query tile, loaded once --")
    g.line(f"q_mask = {g.dims_mask('offs_m[:, None]', 'N_CTX_Q', 'offs_d[None, :]', g.BD, g.D)}")
    g.tile("q", g.q, ["off_z", "off_h", "offs_m[:, None]", "offs_d[None, :]"], "q_mask", in_loop=False)
    g.line()
    g.line("# -- running max and sum of each row (fp32), and the output accumulator --")
    g.line("m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)")
    g.line("l_i = tl.full([BLOCK_M], 0, tl.float32)")
    g.line(f"acc = tl.full([BLOCK_M, {g.BDV}], 0, tl.float32)")
    g.line()
    causal = "; causal: none wholly above the diagonal" if g.causal else ""
    if chunk is None:
        g.line(f"# -- loop over key/value blocks{causal} --")
        g.line("lo = 0")
        g.line("hi = " + ("tl.minimum(N_CTX_K, (start_m + 1) * BLOCK_M)" if g.causal else "N_CTX_K"))
    else:
        # chunk is a multiple of BLOCK_N (the template's clip): no block straddles two ranges.
        g.line(f"# -- loop over the key/value blocks of this program's {chunk} keys{causal} --")
        g.line("split = tl.program_id(2)")
        g.line(f"lo = split * {chunk}")
        g.line(f"hi = tl.minimum(N_CTX_K, lo + {chunk})")
        if g.causal:
            g.line("hi = tl.minimum(hi, (start_m + 1) * BLOCK_M)")
    g.line("for start_n in range(lo, hi, BLOCK_N):")
    w.indent += 1
    saved = g.reset_memo()
    g.line("offs_n = start_n + tl.arange(0, BLOCK_N)")
    g.line(f"kv_mask = {g.dims_mask('offs_n[None, :]', 'N_CTX_K', 'offs_d[:, None]', g.BD, g.D)}")
    g.tile("kT", g.k, ["off_z", "off_hkv", "offs_n[None, :]", "offs_d[:, None]"], "kv_mask", in_loop=True)
    g.line(f"qk = {g.dot('q', 'kT')}")
    g.scores("qk", "offs_m[:, None]", "offs_n[None, :]", key_tail=True)
    # tl.max and tl.sum, spelled so that Triton's interpreter takes its numpy fast path (it calls
    # jit'd combine functions of the kernel's own module element by element, seconds per block).
    g.line("m_ij = tl.maximum(m_i, tl.reduce(qk, 1, tl.standard._elementwise_max))")
    g.line("m_safe = tl.where(m_ij == float('-inf'), 0.0, m_ij)  # a row with no key yet: p and alpha are 0")
    g.line("p = tl.math.exp2(qk - m_safe[:, None])")
    g.line("alpha = tl.math.exp2(m_i - m_safe)")
    g.line("l_i = l_i * alpha + tl.reduce(p, 1, tl.standard._sum_combine)")
    g.line(f"kv_mask = {g.dims_mask('offs_n[:, None]', 'N_CTX_K', 'offs_dv[None, :]', g.BDV, g.Dv)}")
    g.tile("v", g.v, ["off_z", "off_hkv", "offs_n[:, None]", "offs_dv[None, :]"], "kv_mask", in_loop=True)
    g.line(f"acc = {g.dot(g.low('p'), 'v', 'acc * alpha[:, None]')}")
    g.line("m_i = m_ij")
    w.memo = saved
    w.indent -= 1
    g.line()
    g.line("# -- epilogue: normalize, store the output and the log-sum-exp of each row --")
    g.line("l_safe = tl.where(l_i > 0, l_i, 1.0)")
    g.line("out = acc / l_safe[:, None]")
    # No key to attend to: +inf for the backward (its recomputed probabilities are 0), -inf for
    # the combine of the ranges (the range weighs nothing).
    g.line(f"lse = tl.where(l_i > 0, m_i * {LN2} + tl.log(l_safe), float('{'inf' if chunk is None else '-inf'}'))")
    g.line(f"o_mask = {g.dims_mask('offs_m[:, None]', 'N_CTX_Q', 'offs_dv[None, :]', g.BDV, g.Dv)}")
    at = ["off_z", "off_h"] + ([] if chunk is None else ["split"])
    g.store({0: ("out", at + ["offs_m[:, None]", "offs_dv[None, :]"], "o_mask", (r"\boffs_m\b", r"\boffs_dv\b")),
             1: ("lse", at + ["offs_m"], "offs_m < N_CTX_Q", (r"\boffs_m\b",))})


def _grad_kv(g: _Gen):
    w = g.w
    do, lse, delta = g.node.inputs[0], g.node.inputs[4], g.node.inputs[5]
    g.line("# -- which key block and which (batch, key/value head) this program computes --")
    g.line("start_n = tl.program_id(0)")
    g.head_offsets(kv_programs=True)
    g.line("offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    g.line()
    g.line("# -- the key and value tiles, loaded once; dk and dv accumulate in fp32 --")
    g.line(f"kv_mask = {g.dims_mask('offs_n[:, None]', 'N_CTX_K', 'offs_d[None, :]', g.BD, g.D)}")
    w.memo, off_h = {}, "off_hkv"
    g.tile("k", g.k, ["off_z", off_h, "offs_n[:, None]", "offs_d[None, :]"], "kv_mask", in_loop=False)
    g.line(f"kv_mask = {g.dims_mask('offs_n[:, None]', 'N_CTX_K', 'offs_dv[None, :]', g.BDV, g.Dv)}")
    g.tile("v", g.v, ["off_z", off_h, "offs_n[:, None]", "offs_dv[None, :]"], "kv_mask", in_loop=False)
    g.line(f"dk = tl.full([BLOCK_N, {g.BD}], 0, tl.float32)")
    g.line(f"dv = tl.full([BLOCK_N, {g.BDV}], 0, tl.float32)")
    g.line()
    if g.causal:
        g.line("# -- loop over the query blocks of each query head; causal: none wholly before the diagonal --")
        g.line("lo = (start_n * BLOCK_N) // BLOCK_M * BLOCK_M")
    else:
        g.line("# -- loop over the query blocks of each query head that reads this key/value head --")
        g.line("lo = 0")
    g.line(f"for off_g in range(0, {g.group}):")
    w.indent += 1
    g.line(f"off_h = off_hkv * {g.group} + off_g")
    g.line("for start_m in range(lo, N_CTX_Q, BLOCK_M):")
    w.indent += 1
    saved = g.reset_memo()
    g.line("offs_m = start_m + tl.arange(0, BLOCK_M)")
    g.line(f"q_mask = {g.dims_mask('offs_m[None, :]', 'N_CTX_Q', 'offs_d[:, None]', g.BD, g.D)}")
    g.tile("qT", g.q, ["off_z", "off_h", "offs_m[None, :]", "offs_d[:, None]"], "q_mask", in_loop=True)
    g.row("lse", lse, "offs_m", "N_CTX_Q", in_loop=True)
    g.line(f"qkT = {g.dot('k', 'qT')}")
    g.scores("qkT", "offs_m[None, :]", "offs_n[:, None]", key_tail=False)
    g.line(f"pT = tl.math.exp2(qkT - lse[None, :] * {LOG2E})")
    g.line(f"q_mask = {g.dims_mask('offs_m[:, None]', 'N_CTX_Q', 'offs_dv[None, :]', g.BDV, g.Dv)}")
    g.tile("do", do, ["off_z", "off_h", "offs_m[:, None]", "offs_dv[None, :]"], "q_mask", in_loop=True)
    g.line(f"dv = {g.dot(g.low('pT'), 'do', 'dv')}")
    g.row("Di", delta, "offs_m", "N_CTX_Q", in_loop=True)
    g.line(f"dpT = {g.dot('v', 'tl.trans(do)')}")
    g.line("dsT = pT * (dpT - Di[None, :])")
    g.score_grad("dsT", "offs_m[None, :]", "offs_n[:, None]")
    g.line(f"dk = {g.dot(g.low('dsT'), 'tl.trans(qT)', 'dk')}")
    w.memo = saved
    w.indent -= 2
    g.line()
    g.line("# -- store dk (with the softmax scale) and dv --")
    g.line(f"dk = dk * {g.scale!r}")
    g.line(f"dk_mask = {g.dims_mask('offs_n[:, None]', 'N_CTX_K', 'offs_d[None, :]', g.BD, g.D)}")
    g.line(f"dv_mask = {g.dims_mask('offs_n[:, None]', 'N_CTX_K', 'offs_dv[None, :]', g.BDV, g.Dv)}")
    g.store({0: ("dk", ["off_z", "off_hkv", "offs_n[:, None]", "offs_d[None, :]"], "dk_mask",
                 (r"\boffs_n\b", r"\boffs_d\b")),
             1: ("dv", ["off_z", "off_hkv", "offs_n[:, None]", "offs_dv[None, :]"], "dv_mask",
                 (r"\boffs_n\b", r"\boffs_dv\b"))})


def _grad_q(g: _Gen):
    w = g.w
    do, lse, delta = g.node.inputs[0], g.node.inputs[4], g.node.inputs[5]
    g.line("# -- which query block and which (batch, head) this program computes --")
    g.line("start_m = tl.program_id(0)")
    g.head_offsets(kv_programs=False)
    g.line("offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    g.line()
    g.line("# -- the query-side tiles, loaded once; dq accumulates in fp32 --")
    g.line(f"q_mask = {g.dims_mask('offs_m[:, None]', 'N_CTX_Q', 'offs_d[None, :]', g.BD, g.D)}")
    g.tile("q", g.q, ["off_z", "off_h", "offs_m[:, None]", "offs_d[None, :]"], "q_mask", in_loop=False)
    g.line(f"q_mask = {g.dims_mask('offs_m[:, None]', 'N_CTX_Q', 'offs_dv[None, :]', g.BDV, g.Dv)}")
    g.tile("do", do, ["off_z", "off_h", "offs_m[:, None]", "offs_dv[None, :]"], "q_mask", in_loop=False)
    g.row("lse", lse, "offs_m", "N_CTX_Q", in_loop=False)
    g.row("Di", delta, "offs_m", "N_CTX_Q", in_loop=False)
    g.line(f"dq = tl.full([BLOCK_M, {g.BD}], 0, tl.float32)")
    g.line()
    if g.causal:
        g.line("# -- loop over key/value blocks; causal: none wholly above the diagonal --")
        g.line("hi = tl.minimum(N_CTX_K, (start_m + 1) * BLOCK_M)")
    else:
        g.line("# -- loop over key/value blocks --")
        g.line("hi = N_CTX_K")
    g.line("for start_n in range(0, hi, BLOCK_N):")
    w.indent += 1
    saved = g.reset_memo()
    g.line("offs_n = start_n + tl.arange(0, BLOCK_N)")
    g.line(f"kv_mask = {g.dims_mask('offs_n[None, :]', 'N_CTX_K', 'offs_d[:, None]', g.BD, g.D)}")
    g.tile("kT", g.k, ["off_z", "off_hkv", "offs_n[None, :]", "offs_d[:, None]"], "kv_mask", in_loop=True)
    g.line(f"kv_mask = {g.dims_mask('offs_n[None, :]', 'N_CTX_K', 'offs_dv[:, None]', g.BDV, g.Dv)}")
    g.tile("vT", g.v, ["off_z", "off_hkv", "offs_n[None, :]", "offs_dv[:, None]"], "kv_mask", in_loop=True)
    g.line(f"qk = {g.dot('q', 'kT')}")
    g.scores("qk", "offs_m[:, None]", "offs_n[None, :]", key_tail=True)
    g.line(f"p = tl.math.exp2(qk - lse[:, None] * {LOG2E})")
    g.line(f"dp = {g.dot('do', 'vT')}")
    g.line("ds = p * (dp - Di[:, None])")
    g.score_grad("ds", "offs_m[:, None]", "offs_n[None, :]")
    g.line(f"dq = {g.dot(g.low('ds'), 'tl.trans(kT)', 'dq')}")
    w.memo = saved
    w.indent -= 1
    g.line()
    g.line("# -- store dq (with the softmax scale) --")
    g.line(f"dq = dq * {g.scale!r}")
    g.line(f"dq_mask = {g.dims_mask('offs_m[:, None]', 'N_CTX_Q', 'offs_d[None, :]', g.BD, g.D)}")
    g.store({0: ("dq", ["off_z", "off_h", "offs_m[:, None]", "offs_d[None, :]"], "dq_mask",
                 (r"\boffs_m\b", r"\boffs_d\b"))})


_WRITERS = {"attention": _forward, "attention_split": _forward, "attention_grad_kv": _grad_kv,
            "attention_grad_q": _grad_q}


# (BLOCK_M, BLOCK_N, num_warps, num_stages) by operand itemsize, padded head dim and op: the
# largest tiles of those tried that ptxas compiled with no spills for both sm_80 and sm_90
# (causal, 256 x 256, no mask; mlc aot-check). Programs of attention_grad_kv hold a BLOCK_N
# block of keys and loop over BLOCK_M queries; the others hold BLOCK_M queries. 16-bit tiles
# need 8 warps from 128 rows on (4 warps spilled); fp32 ones, multiplied without tensor
# cores, keep their products in registers and so get small tiles. attention_split holds 16
# queries (a decode step; its clip makes BLOCK_M 16) over ranges of 128 keys: 16-bit ranges
# of head dim 64 or 128 take one 128-key block per program, 8 warps (80 and 128 registers, no
# spills, sm_80 and sm_90: 1 query over 1030 masked keys; with 4 warps, 150-215 registers, and
# 64-key blocks spilled at head dim 128 on sm_90); the others keep attention's tiles.
_SPLIT_16BIT = (16, 128, 8, 3)
GPU_CONFIGS = {
    (2, 64): {"attention": (128, 64, 8, 3), "attention_grad_kv": (32, 128, 8, 3), "attention_grad_q": (128, 32, 8, 3),
              "attention_split": _SPLIT_16BIT},
    (2, 128): {"attention": (128, 32, 8, 3), "attention_grad_kv": (32, 64, 8, 3), "attention_grad_q": (128, 16, 8, 2),
               "attention_split": _SPLIT_16BIT},
    (2, 256): {"attention": (32, 32, 8, 2), "attention_grad_kv": (16, 32, 8, 2), "attention_grad_q": (32, 16, 8, 2),
               "attention_split": (16, 32, 8, 2)},
    (4, 64): {"attention": (32, 32, 4, 2), "attention_grad_kv": (16, 64, 4, 2), "attention_grad_q": (32, 32, 4, 2),
              "attention_split": (16, 32, 4, 2)},
    (4, 128): {"attention": (32, 32, 8, 2), "attention_grad_kv": (16, 32, 8, 2), "attention_grad_q": (32, 32, 8, 2),
               "attention_split": (16, 32, 8, 2)},
    (4, 256): {"attention": (16, 16, 8, 2), "attention_grad_kv": (16, 16, 8, 2), "attention_grad_q": (16, 16, 8, 2),
               "attention_split": (16, 16, 8, 2)},
}


# A score-modified gradient kernel (attention written by hand, in training) also holds the
# block of q @ kᵀ and f's values for its derivative: fp32 dk/dv programs of 64 keys spilled
# on sm_90 (255 registers, llama_block's causal f at head dim 64), 32 keys do not.
SCORE_MOD_GRAD_CONFIGS = {(4, 64): {"attention_grad_kv": (16, 32, 4, 2)}}


class Attention(Template):
    name = "attention"
    meta = ("BLOCK_M", "BLOCK_N")

    def takes(self, body: Graph) -> bool:
        return any(n.op in ATTENTIONS for n in body.nodes)

    def generate(self, body: Graph, *, persistent_limit: int, interpret: bool) -> KernelSource:
        nodes = [n for n in body.nodes if n.op in ATTENTIONS and n.op not in ("attention_scores", "attention_probs_grad")]
        if len(nodes) != 1:
            raise CodegenError("one attention op per kernel" if nodes else
                               "attention_scores and attention_probs_grad are computed only in the kernel of the "
                               "attention that reads them")
        for n in body.nodes:
            cat = OPS[n.op].category
            if cat in (Category.REDUCTION, Category.MATMUL):
                raise CodegenError(f"attention and a {cat.value} ({n.op}) in one kernel")
        (node,) = nodes
        g = _Gen(body, node, interpret)
        _WRITERS[node.op](g)
        symbols = kernel_symbols(body)
        name = kernel_name(body)
        source, args, sig = g.w.finish(name, [str(s) for s in symbols] + ["N_CTX_Q", "N_CTX_K"], list(self.meta))
        # Strides as a GPU run passes them: Triton's JIT types an int argument below 2**31 as i32.
        # (Typed i64, every element offset of the tiles loaded in the loop takes two registers:
        # ahead-of-time compiles of fp16 128x64 tiles reported spills that i32 strides do not have.)
        sig = {a: "i32" if "_stride" in a else t for a, t in sig.items()}
        kv = node.op == "attention_grad_kv"
        programs = ix.product((g.B, g.Hkv if kv else g.H))
        params = {"op": node.op, "head_dim": g.D, "head_dim_v": g.Dv, "group": g.group, "causal": g.causal,
                  "itemsize": g.q.type.itemsize, "score_mod": g.score_mod}
        launch = (g.Sq, g.Sk, programs, int(kv))
        if node.op == "attention_split":
            params["chunk"] = node.attrs["chunk"]
            launch += (node.attrs["splits"],)
        return KernelSource(name, self.name, source, args, sig, symbols, launch,
                            params=params, input_strided=g.w.input_strides())

    # --- launching: launch sizes (Sq, Sk, programs along axis 1, 1 if programs hold key blocks,
    # and for attention_split the key ranges, programs along axis 2) ---

    def grid(self, sizes: tuple, meta: dict) -> tuple[int, ...]:
        sq, sk, programs, kv, *splits = sizes
        return (triton.cdiv(sk, meta["BLOCK_N"]) if kv else triton.cdiv(sq, meta["BLOCK_M"]), programs, *splits)

    def size_args(self, sizes: tuple) -> list[int]:
        return list(sizes[:2])

    def fixed_config(self, ks: KernelSource, sizes: tuple, interpret: bool) -> dict:
        """Blocks without tuning. The interpreter: a block per sequence up to 128 (each program
        and each loop step costs Python). A GPU: ``GPU_CONFIGS``."""
        if interpret:
            return self.clip(ks, {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 4, "num_stages": 1}, sizes)
        width = next(w for w in (64, 128, 256) if max(_padded(ks)) <= w)
        key = min(ks.params["itemsize"], 4), width
        m, n, warps, stages = GPU_CONFIGS[key][ks.params["op"]]
        if ks.params.get("score_mod") and ks.params["op"] in SCORE_MOD_GRAD_CONFIGS.get(key, {}):
            m, n, warps, stages = SCORE_MOD_GRAD_CONFIGS[key][ks.params["op"]]
        return self.clip(ks, {"BLOCK_M": m, "BLOCK_N": n, "num_warps": warps, "num_stages": stages}, sizes)

    # --- tuning -------------------------------------------------------------------------

    def space(self, ks: KernelSource, sizes: tuple, level: str) -> list[dict]:
        if level == "max":
            tiles = itertools.product([16, 32, 64, 128], [16, 32, 64, 128], [4, 8], [1, 2, 3, 4])
        else:
            held = [(64, 32, 4, 2), (64, 64, 4, 3), (128, 32, 4, 3), (128, 64, 4, 3), (128, 64, 8, 3),
                    (128, 128, 8, 2)]
            if ks.params["op"] == "attention_grad_kv":
                tiles = [(n, m, w, s) for m, n, w, s in held] + [(16, 64, 4, 3), (32, 128, 4, 3)]
            else:
                tiles = held
        return [{"BLOCK_M": m, "BLOCK_N": n, "num_warps": w, "num_stages": s} for m, n, w, s in tiles]

    def clip(self, ks: KernelSource, cfg: dict, sizes: tuple) -> dict:
        n = _block(sizes[1], cfg["BLOCK_N"])
        if "chunk" in ks.params:  # a block of keys never straddles two ranges: BLOCK_N divides the chunk
            n = min(n, ks.params["chunk"] & -ks.params["chunk"])
        return {**cfg, "BLOCK_M": _block(sizes[0], cfg["BLOCK_M"]), "BLOCK_N": n}

    def registers(self, ks: KernelSource, cfg: dict) -> tuple[int, str]:
        m, n, d, dv, op = cfg["BLOCK_M"], cfg["BLOCK_N"], *_padded(ks), _row(ks)
        if op == "attention":
            elements = m * dv + 2 * m * n + m * d  # acc, qk and p, the query tile
        elif op == "attention_grad_kv":
            elements = 2 * n * (d + dv) + 2 * m * n  # k, v, dk, dv; pT and dsT
        else:
            elements = m * (2 * d + dv) + 2 * m * n  # q, dq, do; p and ds
        if ks.params.get("score_mod"):
            elements += m * n  # the block of q @ kᵀ, kept for f (and its derivative)
        return elements // (32 * cfg["num_warps"]), "accumulators, score block and held tiles"

    def shared_bytes(self, ks: KernelSource, cfg: dict) -> int:
        """The pipeline's buffers (``num_stages - 1`` of each tile loaded in the loop) and a held
        tile for ``tl.dot`` (within 2x of what ptxas reports for the configs of GPU_CONFIGS)."""
        m, n, d, dv = cfg["BLOCK_M"], cfg["BLOCK_N"], *_padded(ks)
        isz = ks.params["itemsize"]
        looped, held = (m, n) if ks.params["op"] == "attention_grad_kv" else (n, m)
        return (max(cfg.get("num_stages", 1) - 1, 1) * looped * (d + dv) + held * d) * isz

    def modeled_time(self, ks: KernelSource, body: Graph, cfg: dict, sizes: tuple, nbytes: float, flops: float,
                     gpu: GPU, registers: int, shared: int) -> float:
        sq, sk, programs, kv, *splits = sizes
        m, n, d, dv = cfg["BLOCK_M"], cfg["BLOCK_N"], *_padded(ks)
        p, isz = ks.params, ks.params["itemsize"]
        held, looped = (sk, sq) if kv else (sq, sk)
        if splits:  # attention_split: each (query block, head) is `splits` programs of a chunk of keys each
            programs, looped = programs * splits[0], min(sk, p["chunk"])
        held_block, looped_block = (n, m) if kv else (m, n)
        blocks = math.ceil(held / held_block)
        visited = 0.5 if p["causal"] else 1.0  # of the looped blocks, per program
        looped_sq = p["group"] if kv else 1  # a key/value program loops over the query heads of its group
        # Each program reads its held tiles once and every looped tile it visits (L2 may serve them).
        traffic = nbytes + programs * blocks * looped * looped_sq * (d + dv) * isz * visited
        padded_flops = flops * (blocks * held_block / max(held, 1)) * (math.ceil(looped / looped_block) *
                                                                     looped_block / max(looped, 1))
        stages = cfg.get("num_stages", 1)
        efficiency = (m * n / (m * n + 32 * (m + n)))
        resident = blocks_per_sm(gpu, cfg["num_warps"], registers, shared or self.shared_bytes(ks, cfg))
        return config_time(gpu, programs=blocks * programs, resident=resident,
                           nbytes=traffic, flops=padded_flops,
                           in_flight=max(stages - 1, 1) * looped_block * (d + dv) * isz,
                           tensor_cores=isz < 4, compute_efficiency=efficiency, overlap=stages > 1)


def _block(n: int, most: int) -> int:
    """A block of at most ``most`` (and at least 16, for ``tl.dot``) covering ``n`` if it can."""
    return max(16, min(most, next_pow2(n)))


def _row(ks: KernelSource) -> str:
    """The op whose GPU config and register estimate a kernel takes (attention_split: attention's)."""
    return "attention" if ks.params["op"] == "attention_split" else ks.params["op"]


def _padded(ks: KernelSource) -> tuple[int, int]:
    return max(16, next_pow2(ks.params["head_dim"])), max(16, next_pow2(ks.params["head_dim_v"]))


ATTENTION = Attention()
