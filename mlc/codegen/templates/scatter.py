"""The scatter template: write a source's slices into a destination at indexed positions.

A region whose outputs are ``index_copy`` nodes (a KV cache written at the decode position,
``index_put`` by one index tensor) is one program per ``BLOCK_SIZE`` elements of the
*source*: each lane computes its source value (the source's pointwise producers are inlined,
like a pointwise kernel's), loads its slice's index, and stores at that slice of the
destination. The rest of the destination is not touched, so the kernel's output must already
hold the destination's values: the launch either hands the destination's own buffer as the
output (in place: the plan knows nothing else reads it) or a contiguous copy of it
(``params["in_place"]`` names, per output, the kernel input it starts from).

Several outputs (the K and V caches) are one launch when their sources have as many elements.
An index out of range writes nothing (eager raises); a negative one counts from the end, as in
``index_put``. Launch sizes: ``(source numel,)``.
"""

from __future__ import annotations

import torch

from ...ir.graph import Graph
from .. import indexing as ix
from ..compile import next_pow2
from ..source import KernelSource
from ..writer import CodegenError, KernelWriter, check_ops, kernel_name, kernel_symbols
from .base import INTERPRET_MAX_BLOCK, Template
from .pointwise import store_value


class Scatter(Template):
    name = "scatter"
    meta = ("BLOCK_SIZE",)
    starts_from_targets = True

    def takes(self, body: Graph) -> bool:
        return any(n.op == "index_copy" for n in body.nodes)

    def generate(self, body: Graph, *, persistent_limit: int, interpret: bool) -> KernelSource:
        check_ops(body)
        inputs = {n.out: k for k, n in enumerate(body.inputs)}
        users = body.users()
        nodes = [v.node for v in body.outputs]
        if any(n.op != "index_copy" for n in nodes) or sum(n.op == "index_copy" for n in body.nodes) != len(nodes):
            raise CodegenError("an index_copy kernel writes only its index_copy results (they are written in place)")
        if any(users[n] for n in nodes):
            raise CodegenError("an index_copy result is read from memory, after its kernel wrote it")
        numel = ix.product(nodes[0].inputs[2].type.shape)
        for n in nodes:
            if n.inputs[0] not in inputs:
                raise CodegenError("index_copy writes into a tensor in memory: its destination must be a kernel input")
            if ix.product(n.inputs[2].type.shape) != numel:
                raise CodegenError("the sources of one index_copy kernel must have the same number of elements")
        w = KernelWriter(body)
        w.line("pid = tl.program_id(0)")
        w.line("offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)")
        w.line("mask = offs < xnumel")
        stores = []
        for k, n in enumerate(nodes):
            dst, idx, src = n.inputs
            dim, size = n.attrs["dim"], dst.type.shape[n.attrs["dim"]]
            at = ix.unravel("offs", src.type.shape)
            value = w.emit(src, at)
            i = w.cast(w.emit(idx, [at[dim]]), torch.int64)
            pos = w.var("pos", f"tl.where({i} < 0, {i} + {ix.size(size)}, {i})", torch.int64)
            target = ix.ravel(at[:dim] + [pos] + at[dim + 1:], dst.type.shape)
            stores.append((k, target, pos, size, store_value(w, value, n.types[0])))
        w.line("")
        for k, target, pos, size, value in stores:
            w.line(f"tl.store(out{k}_ptr + {target}, {value}, mask=mask & ({pos} >= 0) & ({pos} < {ix.size(size)}))")
        symbols = kernel_symbols(body)
        source, args, sig = w.finish(kernel_name(body), [str(s) for s in symbols] + ["xnumel"], list(self.meta))
        return KernelSource(kernel_name(body), self.name, source, args, sig, symbols, (numel,),
                            params={"in_place": [[inputs[n.inputs[0]]] for n in nodes]},
                            input_strided=w.input_strides())

    def fixed_config(self, ks: KernelSource, sizes: tuple, interpret: bool) -> dict:
        block = min(next_pow2(sizes[0]), INTERPRET_MAX_BLOCK) if interpret else 512
        return {"BLOCK_SIZE": max(block, 16), "num_warps": 4}

    def space(self, ks: KernelSource, sizes: tuple, level: str) -> list[dict]:
        return [{"BLOCK_SIZE": b, "num_warps": w} for b in (128, 256, 512, 1024) for w in (2, 4)]

    def clip(self, ks: KernelSource, cfg: dict, sizes: tuple) -> dict:
        return {**cfg, "BLOCK_SIZE": max(16, min(cfg["BLOCK_SIZE"], next_pow2(sizes[0])))}


SCATTER = Scatter()
