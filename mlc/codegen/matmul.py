"""The matmul template: tiles of C = A @ B with the epilogue applied before the store.

As in Triton's tutorial 03: programs walk C in groups of ``GROUP_SIZE_M`` row blocks (for L2
reuse), each accumulating a ``BLOCK_SIZE_M x BLOCK_SIZE_N`` tile in fp32 over K. A and B are
read through their strides (and through any views, such as a weight's transpose), so no
operand is copied first. Several matmuls of the same A (SwiGLU's ``x @ w1`` and ``x @ w3``)
share the loop: one A tile, one accumulator each. The epilogue is every pointwise op of the
region, computed on the accumulator tile; ``bmm`` adds a batch axis on ``program_id(1)``.
"""

from __future__ import annotations

import torch

from ..ir.graph import Graph, Node, Value
from ..ir.ops import OPS, Category
from . import indexing as ix
from .kernel import TL_DTYPE, CodegenError, KernelSource, _header, _is_literal, _module, _symbols, _Writer, kernel_name


class _MatmulWriter(_Writer):
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


def generate_matmul(body: Graph, matmuls: list[Node], interpret: bool) -> KernelSource:
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
    total = ix.product(out_shape)
    for v in body.outputs:
        if ix.product(v.type.shape) != total:
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
        val, idx = _emit_output(w, v, out_shape)
        if idx[-2:] == w.tile_index()[:-3:-1]:
            layout.append(f"out{k} {v.type} written transposed (the tile's [N, M] positions)")
        if _is_literal(val):
            val = f"tl.full((BLOCK_SIZE_M, BLOCK_SIZE_N), {val}, {TL_DTYPE[v.type.dtype]})"
        elif w.dtypes.get(val) != v.type.dtype:
            val = w.convert(val, v.type.dtype)
        w.line(f"tl.store(out{k}_ptr + {ix.ravel(idx, v.type.shape)}, {val}, mask=c_mask)")
    symbols = _symbols(body)
    name = kernel_name(body)
    args, strides, sig = _header(name, w, "matmul", [str(s) for s in symbols] + ["M", "N", "K"])
    source = _module(name, w, args, strides, ["BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M"])
    return KernelSource(name, "matmul", source, args + strides, sig, symbols, M * N * batch, K,
                        input_strided=[sorted(s) for s in w.strided], mnk=(M, N, K, batch),
                        layout=layout)


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

