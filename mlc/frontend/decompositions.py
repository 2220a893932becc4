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


@functools.lru_cache(maxsize=None)
def _table() -> dict:
    # Built once: core_aten_decompositions() walks every registered op (~0.1 s), which was
    # half the time of compiling a small graph.
    table = {op: fn for op, fn in core_aten_decompositions().items() if op not in _KEEP}
    for op in _EXTRA:
        if op in decomposition_table:
            table[op] = decomposition_table[op]
    return table
