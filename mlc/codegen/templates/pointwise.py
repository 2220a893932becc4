"""The pointwise template: one program writes ``BLOCK_SIZE`` elements of every output.

All outputs have the same number of elements; each is computed at the unraveled flat offset
(``offs``), so broadcasts, views, gathers and ``cat`` are index arithmetic on the loads.
Launch sizes: ``(numel,)``.
"""

from __future__ import annotations

from ...ir.graph import Graph
from ...ir.ops import OPS, Category
from ...ir.types import TensorType
from .. import indexing as ix
from ..compile import next_pow2
from ..source import KernelSource
from ..writer import TL_DTYPE, CodegenError, KernelWriter, check_ops, compute_dtype, is_literal, kernel_name, \
    kernel_symbols
from .base import INTERPRET_MAX_BLOCK, Template


class Pointwise(Template):
    name = "pointwise"
    meta = ("BLOCK_SIZE",)

    def takes(self, body: Graph) -> bool:
        return True  # whatever no other template takes: the last in the registry

    def generate(self, body: Graph, *, persistent_limit: int, interpret: bool) -> KernelSource:
        check_ops(body)
        numel = ix.product(body.outputs[0].type.shape)
        for v in body.outputs:
            if ix.product(v.type.shape) != numel:
                raise CodegenError("outputs of a pointwise kernel must have the same number of elements")
        w = KernelWriter(body)
        name = kernel_name(body)
        w.line("pid = tl.program_id(0)")
        w.line("offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)")
        w.line("mask = offs < xnumel")
        stores = [(k, w.emit(v, ix.unravel("offs", v.type.shape)), v.type) for k, v in enumerate(body.outputs)]
        w.line("")
        for k, val, t in stores:
            w.line(f"tl.store(out{k}_ptr + offs, {store_value(w, val, t)}, mask=mask)")
        symbols = kernel_symbols(body)
        source, args, sig = w.finish(name, [str(s) for s in symbols] + ["xnumel"], list(self.meta))
        return KernelSource(name, self.name, source, args, sig, symbols, (numel,), input_strided=w.input_strides(),
                            params={"in_place": in_place_targets(body)})

    def fixed_config(self, ks: KernelSource, sizes: tuple, interpret: bool) -> dict:
        block = min(next_pow2(sizes[0]), INTERPRET_MAX_BLOCK) if interpret else 1024
        return {"BLOCK_SIZE": max(block, 16), "num_warps": 4}

    def space(self, ks: KernelSource, sizes: tuple, level: str) -> list[dict]:
        big = level == "max"
        blocks = [128, 256, 512, 1024, 2048, 4096, 8192] if big else [512, 1024, 2048, 4096]
        warps = [1, 2, 4, 8, 16] if big else [4, 8]
        return [{"BLOCK_SIZE": b, "num_warps": w} for b in blocks for w in warps if big or (w == 8) == (b >= 2048)]

    def clip(self, ks: KernelSource, cfg: dict, sizes: tuple) -> dict:
        return {**cfg, "BLOCK_SIZE": max(16, min(cfg["BLOCK_SIZE"], next_pow2(sizes[0])))}


def in_place_targets(body: Graph) -> list[list[int]]:
    """Per output, the inputs it could be stored over: those of its shape and dtype whose values
    reach the outputs through pointwise ops only (no view, gather or cat anywhere after them), so
    that each lane reads exactly the element it writes, before writing it. A value that passes a
    permute on its way would be read at another lane's element, which that lane may have
    overwritten already. An optimizer's update of a parameter is such an output; the plan decides
    whether it may (``Plan.write_in_place``)."""
    users = body.users()

    def elementwise(node) -> bool:
        seen, stack = set(), list(users[node])
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            if OPS[n.op].category is not Category.POINTWISE:
                return False
            seen.add(n)
            stack.extend(users[n])
        return bool(seen)

    readable = [j for j, node in enumerate(body.inputs) if isinstance(node.types[0], TensorType) and elementwise(node)]
    return [[j for j in readable if body.inputs[j].types[0].shape == v.type.shape
             and body.inputs[j].types[0].dtype == v.type.dtype] for v in body.outputs]


def store_value(w: KernelWriter, val: str, t: TensorType) -> str:
    if is_literal(val):
        val = f"tl.full([BLOCK_SIZE], {val}, {TL_DTYPE[compute_dtype(t.dtype)]})"
    return w.convert(val, t.dtype) if w.dtypes.get(val, t.dtype) != t.dtype or "tl.full" in val else val


POINTWISE = Pointwise()
