"""The reduction template: rows x reduced elements, persistent or looped.

All reductions in a region reduce the same dims ``D`` of the same shape ``F``. The kept dims
index rows (``xindex``), the reduced dims index ``rindex``. A value is either full (shape
``F``) or per row; per-row values are read only at their own row, which the index check in
``reduction_value`` enforces. In the looped form each reduction is a loop over ``RBLOCK``
chunks that recomputes its pointwise producers; full-shaped outputs get one last loop.

Launch sizes: ``(rows, elements per row)``; ``params["persistent"]`` says whether a row is one
block (no loop).
"""

from __future__ import annotations

import itertools
import math

import torch

from ...cost import GPU, blocks_per_sm, config_time
from ...ir.graph import Graph, Node
from ...ir.ops import REDUCTIONS
from ...ir.types import normalize_dim
from .. import indexing as ix
from ..compile import next_pow2
from ..source import KernelSource
from ..writer import TL_DTYPE, CodegenError, KernelWriter, check_ops, compute_dtype, is_literal, kernel_name, \
    kernel_symbols
from .base import INTERPRET_MAX_BLOCK, Template

PERSISTENT_LIMIT = 4096  # a row of at most this many elements stays in registers


def _reduced_dims(node: Node) -> tuple[int, ...]:
    x = node.inputs[0].type
    if x.rank == 0:  # dim 0 (or -1) of a 0-d tensor names no dim: nothing is reduced
        return ()
    if node.op in ("argmax", "argmin"):
        dim = node.attrs["dim"]
        return tuple(range(x.rank)) if dim is None else (normalize_dim(dim, x.rank),)
    dims = node.attrs["dims"]
    return tuple(range(x.rank)) if not dims else tuple(sorted({normalize_dim(d, x.rank) for d in dims}))


class _ReductionWriter(KernelWriter):
    def __init__(self, body: Graph, full_shape, dims, persistent: bool):
        super().__init__(body)
        self.F, self.D, self.persistent = full_shape, dims, persistent
        self.K = [k for k in range(len(full_shape)) if k not in dims]
        self.reduced: dict[Node, str] = {}
        self.mask = "xmask & rmask"

    def row_vars(self) -> list[str]:
        return [f"x{k}" for k in self.K]

    def full_index(self) -> list[str]:
        return [f"x{k}" if k in self.K else f"r{k}" for k in range(len(self.F))]

    def row_index(self, shape) -> list[str]:
        return ix.reshape(self.row_vars(), [self.F[k] for k in self.K], shape)

    def reduction_value(self, node: Node, idx: list[str]) -> str:
        if idx != self.row_index(node.types[0].shape):
            raise CodegenError(f"the result of '{node.op}' is read at another row than its own")
        return self.reduced[node]  # computed in order, before anything reads it

    # One reduction: in the persistent form its operand tile is in registers already; in the
    # looped form each pass is a loop over the reduced elements.
    def _reduce(self, node: Node) -> str:
        x = node.inputs[0]
        op = node.op
        in_dt = compute_dtype(x.type.dtype)
        acc_dt = torch.int64 if op in ("sum", "mean") and not in_dt.is_floating_point else in_dt
        if op in ("amax", "amin", "argmax", "argmin") and not in_dt.is_floating_point:
            raise CodegenError(f"'{op}' on integers is not generated")
        if op in ("sum", "mean"):
            total = self._pass(x, "0", acc_dt, lambda v: v, "+", "_add")
            out = total if op == "sum" else self.var("red", f"{total} / rnumel", acc_dt)
        elif op == "var":
            # Shifted by the row's first element: a row of equal values sums zeros, so its mean is
            # that value exactly and its variance exactly 0, as torch's (Welford) gives; a plain
            # two-pass mean is off by a rounding error there, and var > 0 would flip.
            shift = self._first(x, acc_dt)
            total = self._pass(x, "0", acc_dt, lambda v: f"({v} - {shift})", "+", "_add")
            mean = self.var("red", f"{shift} + {total} / rnumel", acc_dt)
            sq = self._pass(x, "0", acc_dt, lambda v: f"({v} - {mean}) * ({v} - {mean})", "+", "_add")
            out = self.var("red", f"{sq} / tl.maximum(rnumel - {node.attrs['correction']}, 0)", acc_dt)
        elif op in ("amax", "amin"):
            out = self._extreme(x, op == "amax", acc_dt)
        elif op in ("argmax", "argmin"):
            best = self._extreme(x, op == "argmax", acc_dt)
            hit = f"(({{v}} == {best}) | (({{v}} != {{v}}) & ({best} != {best})))"
            out = self._pass(x, "2147483647", torch.int64,
                             lambda v: f"tl.where({hit.format(v=v)}, rindex, 2147483647)", "min", "_minimum",
                             value_dt=in_dt)
        elif op in ("any", "all"):
            out = self._pass(x, "0" if op == "any" else "1", torch.int32,
                             lambda v: f"({v} != 0).to(tl.int32)", "max" if op == "any" else "min",
                             "_maximum" if op == "any" else "_minimum", value_dt=in_dt)
            out = self.var("red", f"{out} != 0", torch.bool)
        else:
            raise CodegenError(f"no Triton code for reduction '{op}'")
        return out

    def _first(self, x, dt) -> str:
        """``x`` at the first element of each row ([XBLOCK, 1]; 0 for an empty row)."""
        saved = self.mask
        self.mask = "xmask & (xindex * 0 < rnumel)"  # a block compare: the interpreter wants a block mask
        try:
            # The reduced dims at 0, written as a block of zeros: the load is then a block, one
            # element per row, even where no kept dim indexes it (a kept dim of size 1 is x0 = 0).
            idx = [f"x{k}" if k in self.K else "(xindex * 0)" for k in range(len(self.F))]
            v = self.cast(self.emit(x, idx), dt)
        finally:
            self.mask = saved
        if self.is_scalar(v):  # a literal, or a 0-d input: the same value for every row
            v = self.var("red", f"tl.full([XBLOCK, 1], 0, {TL_DTYPE[dt]}) + {v}", dt)
        return v

    def _extreme(self, x, is_max: bool, dt) -> str:
        helper = "_maximum" if is_max else "_minimum"
        self.helpers.add(helper)
        neutral = "float('-inf')" if is_max else "float('inf')"
        return self._pass(x, neutral, dt, lambda v: v, helper, helper)

    def _pass(self, x, neutral: str, acc_dt, transform, combine: str, combine_fn: str, value_dt=None) -> str:
        """One pass over the reduced elements of ``x``; returns the per-row result ([XBLOCK, 1]).

        ``combine`` joins a chunk into the loop's accumulator ("+", "min", "max" or a helper);
        ``combine_fn`` is the helper that ``tl.reduce`` folds the row with at the end.
        ``transform`` sees the value in ``value_dt`` (by default the accumulator's dtype).
        """
        value_dt = value_dt or acc_dt
        tl_dt = TL_DTYPE[acc_dt]
        self.helpers.add(combine_fn)

        def masked(v):
            return f"tl.where({self.mask}, {transform(v)}, {neutral})"

        def finish(tile):
            return self.var("red", f"tl.reduce({tile}, 1, {combine_fn})[:, None]", acc_dt)

        if self.persistent:
            v = self.cast(self.emit(x, self.full_index()), value_dt)
            return finish(self.var("tmp", masked(v), acc_dt))
        acc = self.var("acc", f"tl.full([XBLOCK, RBLOCK], {neutral}, {tl_dt})", acc_dt)
        saved = self.memo
        self.memo = {}
        self.open_loop()
        v = self.cast(self.emit(x, self.full_index()), value_dt)
        m = masked(v)
        if combine == "+":
            self.line(f"{acc} = {acc} + {m}")
        elif combine in ("min", "max"):
            self.line(f"{acc} = tl.{combine}imum({acc}, {m})")
        else:
            self.line(f"{acc} = {combine}({acc}, {m})")
        self.indent -= 1
        self.memo = saved
        return finish(acc)

    def open_loop(self):
        self.line("for roffset in range(0, rnumel, RBLOCK):")
        self.indent += 1
        self.line("rindex = roffset + tl.arange(0, RBLOCK)[None, :]")
        self.line("rmask = rindex < rnumel")
        self._unravel_r()

    def _unravel_r(self):
        for k, e in zip(self.D, ix.unravel("rindex", [self.F[k] for k in self.D])):
            self.line(f"r{k} = {e}")
            if e == "0":
                self.scalar_tiles.add(f"r{k}")


def _generate(body: Graph, reductions: list[Node], persistent_limit: int) -> KernelSource:
    first = reductions[0]
    F, D = first.inputs[0].type.shape, _reduced_dims(first)
    for r in reductions[1:]:
        if r.inputs[0].type.shape != F or _reduced_dims(r) != D:
            raise CodegenError("reductions over different dims or shapes")
    X = ix.product([F[k] for k in range(len(F)) if k not in D])
    R = ix.product([F[k] for k in D])
    if R == 1 or X == ix.product(F):
        raise CodegenError("a reduction over size-1 dims is a copy")
    full, rows = [], []
    for k, v in enumerate(body.outputs):
        n = ix.product(v.type.shape)
        if n == ix.product(F):
            full.append((k, v))
        elif n == X:
            rows.append((k, v))
        else:
            raise CodegenError("an output that is neither full-sized nor one value per row")
    persistent = isinstance(R, int) and next_pow2(R) <= persistent_limit
    w = _ReductionWriter(body, F, D, persistent)
    w.line("pid = tl.program_id(0)")
    w.line("xindex = pid * XBLOCK + tl.arange(0, XBLOCK)[:, None]")
    w.line("xmask = xindex < xnumel")
    for k, e in zip(w.K, ix.unravel("xindex", [F[k] for k in w.K])):
        w.line(f"x{k} = {e}")
        if e == "0":  # a kept dim of size 1: an int, so a load indexed by it alone is one element
            w.scalar_tiles.add(f"x{k}")
    if persistent:
        w.line("rindex = tl.arange(0, RBLOCK)[None, :]")
        w.line("rmask = rindex < rnumel")
        w._unravel_r()
    for r in (n for n in body.nodes if n.op in REDUCTIONS):
        w.reduced[r] = w._reduce(r)
    w.line("")
    w.mask = "xmask"
    for k, v in rows:
        val = w.emit(v, w.row_index(v.type.shape))
        w.line(f"tl.store(out{k}_ptr + xindex, {_store(w, val, v.type, '[XBLOCK, 1]')}, mask=xmask)")
    if full:
        w.mask = "xmask & rmask"
        if not persistent:
            w.memo = {}
            w.open_loop()
        for k, v in full:
            idx = ix.reshape(w.full_index(), F, v.type.shape)
            val = w.emit(v, idx)
            w.store(k, idx, v.type.shape, _store(w, val, v.type, '[XBLOCK, RBLOCK]'), "xmask & rmask",
                    (r"\b(x\d+|xindex)\b", r"\b(r\d+|rindex)\b"))
    symbols = kernel_symbols(body)
    name = kernel_name(body)
    source, args, sig = w.finish(name, [str(s) for s in symbols] + ["xnumel", "rnumel"], list(REDUCTION.meta))
    return KernelSource(name, REDUCTION.name, source, args, sig, symbols, (X, R), {"persistent": persistent},
                        input_strided=w.input_strides())


def _store(w: KernelWriter, val: str, t, shape: str) -> str:
    if is_literal(val):
        return f"tl.full({shape}, {val}, {TL_DTYPE[t.dtype]})"
    return w.convert(val, t.dtype) if w.dtypes.get(val) != t.dtype else val


class Reduction(Template):
    name = "reduction"
    meta = ("XBLOCK", "RBLOCK")

    def takes(self, body: Graph) -> bool:
        return any(n.op in REDUCTIONS for n in body.nodes)

    def generate(self, body: Graph, *, persistent_limit: int, interpret: bool) -> KernelSource:
        check_ops(body)
        return _generate(body, [n for n in body.nodes if n.op in REDUCTIONS], persistent_limit)

    def fixed_config(self, ks: KernelSource, sizes: tuple, interpret: bool) -> dict:
        numel, rnumel = sizes
        if ks.params["persistent"]:
            rblock = next_pow2(rnumel)  # the whole row: the kernel has no loop
        else:
            rblock = min(next_pow2(rnumel), 4096 if interpret else 1024)
        budget = INTERPRET_MAX_BLOCK if interpret else 4096
        xblock = max(1, min(next_pow2(numel), budget // rblock))
        if not interpret:
            xblock = min(xblock, 8)
        return {"XBLOCK": xblock, "RBLOCK": rblock, "num_warps": 4 if rblock * xblock <= 2048 else 8}

    def space(self, ks: KernelSource, sizes: tuple, level: str) -> list[dict]:
        big = level == "max"
        if ks.params["persistent"]:
            rblocks = [next_pow2(sizes[1])]
        else:
            rblocks = [256, 512, 1024, 2048, 4096] if big else [512, 1024, 2048]
        xblocks = [1, 2, 4, 8, 16, 32] if big else [1, 2, 4, 8]
        warps = [1, 2, 4, 8, 16] if big else [4, 8]
        return [{"XBLOCK": x, "RBLOCK": r, "num_warps": w} for x, r, w in itertools.product(xblocks, rblocks, warps)
                if big or (w == 8) == (x * r >= 4096)]

    def clip(self, ks: KernelSource, cfg: dict, sizes: tuple) -> dict:
        c = {**cfg, "XBLOCK": min(cfg["XBLOCK"], next_pow2(sizes[0]))}
        if not ks.params["persistent"]:
            c["RBLOCK"] = max(16, min(c["RBLOCK"], next_pow2(sizes[1])))
        return c

    def modeled_time(self, ks: KernelSource, body: Graph, cfg: dict, sizes: tuple, nbytes: float, flops: float,
                     gpu: GPU, registers: int, shared: int) -> float:
        per_program = cfg["XBLOCK"] * min(cfg["RBLOCK"], max(sizes[1], 1))
        total = max(sizes[0] * sizes[1], 1)
        return config_time(gpu, programs=math.ceil(sizes[0] / cfg["XBLOCK"]),
                           resident=blocks_per_sm(gpu, cfg["num_warps"], registers, shared), nbytes=nbytes,
                           flops=flops, in_flight=per_program * nbytes / total)


REDUCTION = Reduction()
