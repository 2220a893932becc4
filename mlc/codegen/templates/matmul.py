"""The matmul template: tiles of C = A @ B with the epilogue applied before the store.

As in Triton's tutorial 03: programs walk C in groups of ``GROUP_SIZE_M`` row blocks (for L2
reuse), each accumulating a ``BLOCK_SIZE_M x BLOCK_SIZE_N`` tile in fp32 over K. A and B are
read through their strides (and through any views, such as a weight's transpose), so no
operand is copied first. Several matmuls of the same A (SwiGLU's ``x @ w1`` and ``x @ w3``)
share the loop: one A tile, one accumulator each. The epilogue is every pointwise op of the
region, computed on the accumulator tile; ``bmm`` adds a batch axis on ``program_id(1)``.
A column sum of an epilogue value (``sum`` over M, in fp32: a bias gradient in a backward
graph) is an epilogue too: each program sums its tile's rows and adds them atomically into
the output, which the plan zeroes before the launch (``Template.zeroed_outputs``).

Launch sizes: ``(M, N, K, batch)``. Besides its tiles, the tuning space has ``ATEN``: the
matmul through torch (cuBLAS on a GPU), then the epilogue.
"""

from __future__ import annotations

import itertools
import math

import torch
import triton

from ...cost import GPU, blocks_per_sm, config_time
from ...ir.graph import Graph, Node, Value
from ...ir.ops import OPS, REDUCTIONS, Category
from .. import indexing as ix
from ..compile import next_pow2
from ..source import KernelSource
from ..writer import TL_DTYPE, CodegenError, KernelWriter, is_literal, kernel_name, kernel_symbols
from .base import ATEN, Template, is_aten


class _MatmulWriter(KernelWriter):
    tile_names = KernelWriter.tile_names | {"offs_m", "offs_n", "offs_k", "kk", "c_mask"}

    def __init__(self, body: Graph, matmuls: list[Node]):
        super().__init__(body)
        self.acc: dict[Node, str] = {}
        self.batched = matmuls[0].op == "bmm"

    def tile_index(self) -> list[str]:
        return (["pid_b"] if self.batched else []) + ["offs_m[:, None]", "offs_n[None, :]"]

    def _emit(self, value: Value, idx: list[str]) -> str:
        if value.node in self.acc:
            shape = value.type.shape  # size-1 dims may be indexed by 0 or by their tile offsets
            if ix.reshape(idx, shape, shape) != ix.reshape(self.tile_index(), shape, shape):
                raise CodegenError("a matmul's result is read at another position than its own tile")
            return self.acc[value.node]
        return super()._emit(value, idx)


def _operand_key(v: Value, body: Graph):
    """Equal for two operands that read the same input through the same views."""
    inputs = {n.out: k for k, n in enumerate(body.inputs)}
    key = []
    while v not in inputs:
        key.append((v.node.op, tuple(sorted((k, str(x)) for k, x in v.node.attrs.items()))))
        v = v.node.inputs[0]
    return inputs[v], tuple(key)


def _operand_is_read_from_memory(v: Value, body: Graph) -> bool:
    """Is ``v`` an input read through views, copies and casts (a cast is done on the loaded tile)?"""
    inputs = {n.out for n in body.inputs}
    while v not in inputs:
        node = v.node
        if OPS[node.op].category is not Category.VIEW and node.op not in ("copy", "convert"):
            return False
        v = node.inputs[0]
    return True


def _generate(body: Graph, matmuls: list[Node], interpret: bool) -> KernelSource:
    first = matmuls[0]
    a, b = first.inputs
    out_shape = first.types[0].shape
    for mm in matmuls:
        for v in mm.inputs:
            if not _operand_is_read_from_memory(v, body):
                raise CodegenError("a matmul operand computed in the kernel (operands are read from memory)")
            if not v.type.dtype.is_floating_point:
                raise CodegenError("integer matmuls are not generated (they run through ATen)")
        if mm.op != first.op or mm.types[0].shape != out_shape or \
                _operand_key(mm.inputs[0], body) != _operand_key(a, body):
            raise CodegenError("matmuls in one kernel must share their first operand and their shape")
    sums = _column_sums(body, out_shape, first.op == "bmm")
    total = ix.product(out_shape)
    for v in body.outputs:
        if v.node not in sums and ix.product(v.type.shape) != total:
            raise CodegenError("an output that is not the size of the matmul's result")
    M, N, K = out_shape[-2], out_shape[-1], a.type.shape[-1]
    batch = out_shape[0] if first.op == "bmm" else 1
    w = _MatmulWriter(body, matmuls)
    dot_dtype = torch.float32 if interpret and a.type.dtype == torch.bfloat16 else a.type.dtype
    # fp32 stays fp32, as in eager, unless the graph asks for tf32 (the ``precision`` option).
    # bf16 tiles multiplied in fp32 in the interpreter are exact products: "ieee".
    tf32 = first.attrs["precision"] == "tf32" and a.type.dtype == torch.float32
    precision = f', input_precision="{"tf32" if tf32 else "ieee"}"' if dot_dtype == torch.float32 else ""

    w.line("# -- which tile of C this program computes (grouped order, for L2 reuse) --")
    w.line("pid = tl.program_id(0)")
    if w.batched:
        w.line("pid_b = tl.program_id(1)")
    w.line("num_pid_m = (M + BLOCK_SIZE_M - 1) // BLOCK_SIZE_M")
    w.line("num_pid_n = (N + BLOCK_SIZE_N - 1) // BLOCK_SIZE_N")
    w.line("num_pid_in_group = GROUP_SIZE_M * num_pid_n")
    w.line("group_id = pid // num_pid_in_group")
    w.line("first_pid_m = group_id * GROUP_SIZE_M")
    w.line("group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_SIZE_M)")
    w.line("pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)")
    w.line("pid_n = (pid % num_pid_in_group) // group_size_m")
    w.line("offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)")
    w.line("offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)")
    w.line("offs_k = tl.arange(0, BLOCK_SIZE_K)")
    w.line("")
    w.line("# -- accumulate over K in fp32 --")
    for k, mm in enumerate(matmuls):
        w.acc[mm] = f"acc{k}" if len(matmuls) > 1 else "accumulator"
        w.line(f"{w.acc[mm]} = tl.full((BLOCK_SIZE_M, BLOCK_SIZE_N), 0, dtype=tl.float32)")
    w.line("for k in range(0, (K + BLOCK_SIZE_K - 1) // BLOCK_SIZE_K):")
    w.indent += 1
    w.line("kk = k * BLOCK_SIZE_K + offs_k")
    batch_idx = ["pid_b"] if w.batched else []
    w.raw_loads = True
    saved = w.memo
    w.memo = {}
    w.mask = "(offs_m[:, None] < M) & (kk[None, :] < K)"
    a_tile = w.emit(a, batch_idx + ["offs_m[:, None]", "kk[None, :]"])
    w.mask = "(kk[:, None] < K) & (offs_n[None, :] < N)"
    for mm in matmuls:
        b_tile = w.emit(mm.inputs[1], batch_idx + ["kk[:, None]", "offs_n[None, :]"])
        at, bt = a_tile, b_tile
        if w.dtypes.get(at) != dot_dtype:
            at = f"{at}.to({TL_DTYPE[dot_dtype]})"
        if w.dtypes.get(bt) != dot_dtype:
            bt = f"{bt}.to({TL_DTYPE[dot_dtype]})"
        w.line(f"{w.acc[mm]} = tl.dot({at}, {bt}, {w.acc[mm]}{precision})")
    w.indent -= 1
    w.memo = saved
    w.raw_loads = False
    for mm in matmuls:
        w.dtypes[w.acc[mm]] = torch.float32
    w.line("")
    w.line("# -- epilogue: the fused pointwise ops, then store --")
    w.mask = "(offs_m[:, None] < M) & (offs_n[None, :] < N)"
    w.line(f"c_mask = {w.mask}")
    w.mask = "c_mask"
    layout = []
    for k, v in enumerate(body.outputs):
        if v.node in sums:
            x = v.node.inputs[0]
            tile = w.tile_index()
            val = w.emit(x, tile if x.type.shape == out_shape else ix.reshape(tile, out_shape, x.type.shape))
            if is_literal(val):
                val = f"tl.full((BLOCK_SIZE_M, BLOCK_SIZE_N), {val}, tl.float32)"
            elif w.dtypes.get(val) != torch.float32:
                val = w.convert(val, torch.float32)
            w.helpers.add("_add")
            w.line(f"col_sum{k} = tl.reduce(tl.where(c_mask, {val}, 0.0), 0, _add)")
            w.line(f"tl.atomic_add(out{k}_ptr + offs_n, col_sum{k}, mask=offs_n < N)")
            continue
        val, idx = _emit_output(w, v, out_shape)
        if idx[-2:] == w.tile_index()[:-3:-1]:
            layout.append(f"out{k} {v.type} written transposed (the tile's [N, M] positions)")
        if is_literal(val):
            val = f"tl.full((BLOCK_SIZE_M, BLOCK_SIZE_N), {val}, {TL_DTYPE[v.type.dtype]})"
        elif w.dtypes.get(val) != v.type.dtype:
            val = w.convert(val, v.type.dtype)
        w.store(k, idx, v.type.shape, val, "c_mask", (r"\boffs_m\b", r"\boffs_n\b"))
    symbols = kernel_symbols(body)
    name = kernel_name(body)
    source, args, sig = w.finish(name, [str(s) for s in symbols] + ["M", "N", "K"], list(MATMUL.meta))
    zeroed = [k for k, v in enumerate(body.outputs) if v.node in sums]
    return KernelSource(name, MATMUL.name, source, args, sig, symbols, (M, N, K, batch),
                        params={"zeroed": zeroed} if zeroed else {}, input_strided=w.input_strides(), layout=layout)


def _column_sums(body: Graph, out_shape: tuple, batched: bool) -> set[Node]:
    """The region's reductions, each a column sum the epilogue can add up (or why not)."""
    users = body.users()
    outputs = set(body.outputs)
    sums = set()
    for n in body.nodes:
        if n.op not in REDUCTIONS:
            continue
        x = n.inputs[0]
        rank = x.type.rank
        dims = sorted(d % rank for d in n.attrs["dims"]) if n.attrs.get("dims") is not None and rank else None
        why = None
        if n.op != "sum" or batched:
            why = f"'{n.op}'" if n.op != "sum" else "a sum in a batched matmul"
        elif rank < 2 or dims != list(range(rank - 1)) or x.type.shape[-1] != out_shape[-1] \
                or ix.product(x.type.shape[:-1]) != out_shape[0]:
            # the result's columns, seen as [M, N] or through a view [..., N] of it (a norm's
            # weight gradient sums over batch and sequence)
            why = "a reduction over other dims than a column of the matmul's result"
        elif n.types[0].dtype != torch.float32:
            why = f"a {n.types[0].dtype} column sum (atomic adds are fp32 only)"
        elif users[n] or n.out not in outputs:
            why = "a column sum read inside the kernel"
        if why:
            raise CodegenError(f"a matmul and a reduction in one kernel ({why})")
        sums.add(n)
    return sums


def _emit_output(w: _MatmulWriter, v: Value, out_shape: tuple) -> tuple[str, list[str]]:
    """An output's value on this tile, and the index it is stored at.

    At the tile's own positions when the output is the matmul's result seen through pointwise
    ops and reshapes. An output that reads it transposed (``(x @ w).t().contiguous() + 1``) is
    written transposed instead: element ``[n, m]`` from the tile's ``(m, n)``, so the
    transpose costs no copy kernel.
    """
    tile = w.tile_index()
    candidates = [tile if v.type.shape == out_shape else ix.reshape(tile, out_shape, v.type.shape)]
    shape = tuple(v.type.shape)
    if len(shape) == len(out_shape) and shape[:-2] == tuple(out_shape[:-2]) and shape[-2:] == tuple(out_shape[:-3:-1]):
        candidates.append(tile[:-2] + tile[:-3:-1])
    state = (len(w.lines), dict(w.memo), dict(w.dtypes), set(w.scalars), set(w.helpers), [set(s) for s in w.strided])
    for idx in candidates:
        try:
            return w.emit(v, idx), idx
        except CodegenError as e:
            error = e
            n, memo, dtypes, scalars, helpers, strided = state
            del w.lines[n:]
            w.memo, w.dtypes, w.scalars, w.helpers, w.strided = dict(memo), dict(dtypes), set(scalars), set(helpers), \
                [set(s) for s in strided]
    raise error



_PTR_BYTES = {"fp64": 8, "i64": 8, "fp32": 4, "i32": 4, "fp16": 2, "bf16": 2, "i16": 2, "i8": 1, "u8": 1, "i1": 1}


def operand_itemsize(ks: KernelSource) -> int:
    """The widest input element of a kernel, read from its signature (``*fp32`` -> 4)."""
    sizes = [_PTR_BYTES[t[1:]] for a, t in ks.signature.items() if a.startswith("in") and a.endswith("_ptr")]
    return max(sizes, default=4)


class Matmul(Template):
    name = "matmul"
    meta = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M")

    def takes(self, body: Graph) -> bool:
        return any(n.op in ("mm", "bmm") for n in body.nodes)

    def generate(self, body: Graph, *, persistent_limit: int, interpret: bool) -> KernelSource:
        return _generate(body, [n for n in body.nodes if n.op in ("mm", "bmm")], interpret)

    def grid(self, sizes: tuple, meta: dict) -> tuple[int, ...]:
        m, n, _, batch = sizes
        # At least one row of programs: with no rows, a column sum still writes its zeros (its
        # programs add nothing, every row masked off).
        return (triton.cdiv(max(m, 1), meta["BLOCK_SIZE_M"]) * triton.cdiv(n, meta["BLOCK_SIZE_N"]), batch)

    def size_args(self, sizes: tuple) -> list[int]:
        return list(sizes[:3])  # the batch is the grid's second axis

    def fixed_config(self, ks: KernelSource, sizes: tuple, interpret: bool) -> dict:
        """Tile sizes without tuning. ``tl.dot`` needs every tile dim to be at least 16.

        fp32 operands (multiplied in full precision) get 64x64x16 tiles in two stages over 8
        warps: larger tiles or fewer warps spill registers on sm_80 and sm_90 (``ptxas -v``,
        via mlc aot-check).
        """
        m, n, k = sizes[:3]
        itemsize = operand_itemsize(ks)
        if interpret:  # few, large programs
            bm, bn, bk = (max(16, min(next_pow2(d), 128)) for d in (m, n, k))
            return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk, "GROUP_SIZE_M": 8,
                    "num_warps": 4, "num_stages": 1}
        big = 64 if itemsize >= 4 else 128
        bm = 16 if m <= 16 else 64 if m <= 64 else big  # M=1 (decode) still gets a 16-row tile
        bn = 64 if n <= 64 else big
        if itemsize >= 4:  # fp32 FMA tiles: a 16-deep K step in 2 stages over 8 warps keeps them out of local memory
            return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": 16, "GROUP_SIZE_M": 8,
                    "num_warps": 8, "num_stages": 2}
        bn = min(bn, 64) if bm == 128 else bn  # 128x128 tiles with an epilogue spilled (aot-check)
        return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8,
                "num_warps": 4 if bm * bn < 128 * 64 else 8, "num_stages": 3}

    def space(self, ks: KernelSource, sizes: tuple, level: str) -> list[dict]:
        if level == "max":
            tiles = itertools.product([16, 32, 64, 128, 256], [32, 64, 128, 256], [16, 32, 64, 128], [2, 4, 8],
                                      [1, 2, 3, 4, 5], [1, 8])
            out = [{"BLOCK_SIZE_M": m, "BLOCK_SIZE_N": n, "BLOCK_SIZE_K": k, "GROUP_SIZE_M": g, "num_warps": w,
                    "num_stages": s} for m, n, k, w, s, g in tiles]
        else:
            bk = 16 if operand_itemsize(ks) >= 4 else 32
            tiles = [(64, 64, bk, 4, 3), (128, 64, bk, 8, 3), (64, 128, bk, 8, 3), (32, 64, 2 * bk, 4, 4),
                     (128, 128, bk, 8, 3)]
            out = [{"BLOCK_SIZE_M": m, "BLOCK_SIZE_N": n, "BLOCK_SIZE_K": k, "GROUP_SIZE_M": 8, "num_warps": w,
                    "num_stages": s} for m, n, k, w, s in tiles]
        return out + [dict(ATEN)]

    def clip(self, ks: KernelSource, cfg: dict, sizes: tuple) -> dict:
        if is_aten(cfg):
            return dict(cfg)
        c = dict(cfg)
        for key, n in zip(("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K"), sizes):  # tl.dot needs 16 in every dim
            c[key] = max(16, min(c[key], next_pow2(n)))
        return c

    def registers(self, ks: KernelSource, cfg: dict) -> tuple[int, str]:
        m, n, k = cfg["BLOCK_SIZE_M"], cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"]
        accumulators = max(ks.source.count("tl.dot("), 1)  # SwiGLU's pair keeps two
        return (m * n * accumulators + m * k + k * n) // (32 * cfg["num_warps"]), "accumulator and operand tiles"

    def shared_bytes(self, ks: KernelSource, cfg: dict) -> int:
        """``num_stages`` A and B tiles in the software pipeline."""
        m, n, k = cfg["BLOCK_SIZE_M"], cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"]
        return max(cfg.get("num_stages", 1), 1) * (m * k + k * n) * operand_itemsize(ks)

    def modeled_time(self, ks: KernelSource, body: Graph, cfg: dict, sizes: tuple, nbytes: float, flops: float,
                     gpu: GPU, registers: int, shared: int) -> float:
        m, n, k, batch = sizes
        isz = operand_itemsize(ks)
        tensor_cores = isz < 4
        mm_bytes = (m * k + k * n) * isz * batch
        epilogue_bytes = max(nbytes - mm_bytes, 0)  # outputs and epilogue operands
        if is_aten(cfg):
            # cuBLAS: a well-chosen tile (modeled as 128x128 at full efficiency), then each epilogue
            # op is one more launch reading and writing an M x N tensor.
            ops = [x for x in body.nodes if OPS[x.op].category is Category.POINTWISE]
            mm = config_time(gpu, programs=math.ceil(m / 128) * math.ceil(n / 128) * batch, resident=1,
                             nbytes=mm_bytes + m * n * batch * 4, flops=2 * m * n * k * batch,
                             in_flight=3 * 128 * 64 * isz, tensor_cores=tensor_cores)
            per_op = config_time(gpu, programs=max(m * n * batch // 1024, 1), resident=8,
                                 nbytes=2 * m * n * batch * 4, flops=m * n * batch, in_flight=1024 * 4)
            return mm + len(ops) * per_op
        bm, bn, bk = cfg["BLOCK_SIZE_M"], cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"]
        pm, pn = math.ceil(m / bm), math.ceil(n / bn)
        # Tile re-reads: A is read once per column of tiles, B once per row of tiles; grouped
        # ordering keeps GROUP_SIZE_M rows of tiles in flight together, so B tiles hit L2 that often.
        reuse = min(cfg["GROUP_SIZE_M"], pm)
        traffic = isz * batch * (m * k * pn + k * n * pm / reuse) + epilogue_bytes
        padded_flops = 2 * pm * bm * pn * bn * k * batch  # tiles past the edge compute too
        stages = cfg.get("num_stages", 1)
        # A K step issues one A and one B tile; fewer, smaller steps keep the MMA units less busy.
        efficiency = (bm * bn / (bm * bn + 32 * (bm + bn))) * (bk / (bk + 8))
        return config_time(gpu, programs=pm * pn * batch,
                           resident=blocks_per_sm(gpu, cfg["num_warps"], registers, shared or self.shared_bytes(ks, cfg)),
                           nbytes=traffic, flops=padded_flops, in_flight=max(stages - 1, 1) * (bm + bn) * bk * isz,
                           tensor_cores=tensor_cores, compute_efficiency=efficiency, overlap=stages > 1)


MATMUL = Matmul()
