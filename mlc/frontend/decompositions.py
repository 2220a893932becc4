"""The decomposition table handed to AOT autograd: ATen ops broken into mlc's primitives.

PyTorch's core ATen decompositions, plus the composites that mlc wants as primitives so
that its fusion pass sees reductions and pointwise math (softmax, layer_norm, batch_norm).
``gelu`` and ``silu`` stay one op each: they are pointwise already, and keeping them whole
lets matmul epilogues match them by name (core ATen breaks ``silu`` into ``x * sigmoid(x)``).
"""

from __future__ import annotations

import functools

import torch
from torch._decomp import core_aten_decompositions, decomposition_table

aten = torch.ops.aten

_EXTRA = [
    aten._softmax.default,
    aten._log_softmax.default,
    aten.native_layer_norm.default,
    aten._native_batch_norm_legit_functional.default,
    aten._native_batch_norm_legit.default,
    aten._native_batch_norm_legit_no_training.default,
    aten.native_batch_norm.default,
]
# gelu, silu: see above. _scaled_dot_product_flash_attention_for_cpu: core's decomposition gives a
# math forward whose saved logsumexp the real flash backward misreads, so gradients come out
# wrong (checked with torch 2.13: max error 35 on a 2x4x8x16 causal attention). Kept whole, it
# and its backward lower to mlc's attention ops (FlashAttention kernels: codegen/templates/attention.py).
_KEEP = {aten.gelu.default, aten.silu.default, aten._scaled_dot_product_flash_attention_for_cpu.default}


def decompositions() -> dict:
    return dict(_table())  # a copy: the caller may change it


# The optimizers' multi-tensor ops (``foreach=True``): one ATen call per list, which PyTorch does
# not decompose. Each becomes its op once per tensor, so that the fusion pass sees every
# parameter's update as pointwise work (and writes the parameters and states in place).
_PER_TENSOR = {"maximum": torch.clamp_min, "minimum": torch.clamp_max}  # with a Scalar: torch.maximum needs a tensor
_FOREACH_SKIP = {"copy", "zero", "norm", "max", "sign"}  # not elementwise math, or no same-named torch function


def _foreach_decomposition(op: torch._ops.OpOverload):
    name = op._schema.name.split("::")[1][len("_foreach_"):]
    fn = _PER_TENSOR.get(name) if op._overloadname in ("Scalar", "ScalarList") else None
    fn = fn or getattr(torch, name, None)
    args = op._schema.arguments
    per_tensor = [k for k, a in enumerate(args) if str(a.type) in ("List[Tensor]", "List[number]", "List[Scalar]")]
    if fn is None or name in _FOREACH_SKIP or not per_tensor or str(op._schema.returns[0].type) != "List[Tensor]":
        return None
    tensor_scalars = name in ("addcmul", "addcdiv") and op._overloadname == "Tensor"

    def decomposition(*xs, **kwargs):
        n = len(xs[per_tensor[0]])
        out = []
        for j in range(n):
            row = [x[j] if k in per_tensor else x for k, x in enumerate(xs)]
            if tensor_scalars:  # addcmul(self, t1, t2, scalars): one scalar per tensor, in a tensor
                self_, t1, t2, scalars = row
                term = t1 * t2 if name == "addcmul" else t1 / t2
                out.append(self_ + scalars[j] * term)
            elif name in ("addcmul", "addcdiv") and len(row) == 4:  # the value, positional
                out.append(fn(*row[:3], value=row[3], **kwargs))
            else:
                out.append(fn(*row, **kwargs))
        return out

    return decomposition


def _foreach_table() -> dict:
    table = {}
    for packet_name in dir(torch.ops.aten):
        if not packet_name.startswith("_foreach_") or packet_name.endswith("_"):
            continue
        packet = getattr(torch.ops.aten, packet_name)
        for overload in packet.overloads():
            if "out" in overload:
                continue
            op = getattr(packet, overload)
            decomposition = _foreach_decomposition(op)
            if decomposition is not None:
                table[op] = decomposition
    return table


@functools.lru_cache(maxsize=None)
def _table() -> dict:
    # Built once: core_aten_decompositions() walks every registered op (~0.1 s), which was
    # half the time of compiling a small graph.
    table = {op: fn for op, fn in core_aten_decompositions().items() if op not in _KEEP}
    for op in _EXTRA:
        if op in decomposition_table:
            table[op] = decomposition_table[op]
    table.update(_foreach_table())
    return table
