"""``TRITON_EXPR``: how each pointwise op is written in Triton, one row per op.

Operands are substituted for ``{0}``, ``{1}``, ``{2}``; ``{attr}`` names an attribute. Operands
arrive already cast to the op's compute dtype (fp32 for fp16/bf16 math). Only ``tl`` builtins
and plain arithmetic are used, because libdevice functions return nothing in Triton's CPU
interpreter (triton 3.9) and a kernel must run in both. Triton's own ``@jit`` library
functions (``tl.sum``, ``tl.sigmoid``, ``tl.max``...) are avoided too: they are bound to the
interpreter or not when triton is imported, while mlc chooses per kernel. Reductions use
``tl.reduce`` with the combine functions in ``HELPERS``. NaN semantics follow torch: maximum,
minimum, relu and clamp propagate NaN, which ``tl.maximum`` does not promise.
"""

from __future__ import annotations

_SIGMOID = "(1 / (1 + tl.exp(-({0}))))"
_TANH = "(2 / (1 + tl.exp(-2 * ({0}))) - 1)"

TRITON_EXPR: dict[str, str] = {
    "exp": "tl.exp({0})",
    "exp2": "tl.exp2({0})",
    "expm1": "(tl.exp({0}) - 1)",
    "log": "tl.log({0})",
    "log2": "tl.log2({0})",
    "log10": "(tl.log({0}) * 0.4342944819032518)",
    "log1p": "tl.log(1 + ({0}))",
    "sqrt": "tl.sqrt({0})",
    "rsqrt": "tl.rsqrt({0})",
    "sin": "tl.sin({0})",
    "cos": "tl.cos({0})",
    "tanh": _TANH,
    "sigmoid": _SIGMOID,
    "erf": "tl.erf({0})",
    "erfc": "(1 - tl.erf({0}))",
    "reciprocal": "(1 / ({0}))",
    "silu": "(({0}) / (1 + tl.exp(-({0}))))",
    "neg": "(-({0}))",
    "abs": "tl.abs({0})",
    "relu": "tl.where(({0}) < 0, 0, ({0}))",
    "floor": "tl.floor({0})",
    "ceil": "tl.ceil({0})",
    "trunc": "tl.where(({0}) < 0, tl.ceil({0}), tl.floor({0}))",
    "sign": "tl.where(({0}) > 0, 1, tl.where(({0}) < 0, -1, 0))",
    "isnan": "(({0}) != ({0}))",
    "isinf": "(tl.abs({0}) == float('inf'))",
    "logical_not": "(({0}) == 0)",
    "add": "(({0}) + ({1}))",
    "sub": "(({0}) - ({1}))",
    "mul": "(({0}) * ({1}))",
    "maximum": "tl.where((({0}) > ({1})) | (({0}) != ({0})), ({0}), ({1}))",
    "minimum": "tl.where((({0}) < ({1})) | (({0}) != ({0})), ({0}), ({1}))",
    "fmod": "(({0}) % ({1}))",
    "remainder": "_remainder({0}, {1})",
    "bitwise_and": "(({0}) & ({1}))",
    "bitwise_or": "(({0}) | ({1}))",
    "bitwise_not": "(~({0}))",  # on b8 too: Triton inverts an i1 as one bit (~True is False)
    "bitwise_xor": "(({0}) ^ ({1}))",
    "eq": "(({0}) == ({1}))",
    "ne": "(({0}) != ({1}))",
    "lt": "(({0}) < ({1}))",
    "le": "(({0}) <= ({1}))",
    "gt": "(({0}) > ({1}))",
    "ge": "(({0}) >= ({1}))",
    "logical_and": "((({0}) != 0) & (({1}) != 0))",
    "logical_or": "((({0}) != 0) | (({1}) != 0))",
    "logical_xor": "((({0}) != 0) ^ (({1}) != 0))",
    "where": "tl.where({0}, {1}, {2})",
}

# gelu and its two forms; erf-based is exact, the tanh form is what approximate="tanh" asks.
GELU = {
    "none": "(0.5 * ({0}) * (1 + tl.erf(({0}) * 0.7071067811865476)))",
    "tanh": "(0.5 * ({0}) * (1 + " + _TANH.format("0.7978845608028654 * (({0}) + 0.044715 * ({0}) * ({0}) * ({0}))") + "))",
}

# pow with a constant exponent is multiplication or a root; a general pow needs libdevice.
POW_BY_CONSTANT = {
    0: "tl.full({0}.shape, 1, {0}.dtype)" , 1: "({0})", 2: "(({0}) * ({0}))", 3: "(({0}) * ({0}) * ({0}))",
    0.5: "tl.sqrt({0})", -0.5: "tl.rsqrt({0})", -1: "(1 / ({0}))", -2: "(1 / (({0}) * ({0})))",
}

# Helpers that generated modules define before their kernels, when used.
HELPERS = {
    "_add": '''@triton.jit
def _add(a, b):
    return a + b
''',
    "_remainder": '''@triton.jit
def _remainder(a, b):
    # Python's remainder: the sign of the divisor (Triton's % keeps the dividend's).
    r = a % b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)
''',
    "_to_bf16": '''@triton.jit
def _to_bf16(x):
    # fp32 -> bf16 rounding to nearest even, spelled out: GPUs round so, but Triton 3.9's
    # CPU interpreter truncates. Written here, both agree with torch.
    bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
''',
    "_maximum": '''@triton.jit
def _maximum(a, b):
    # max that propagates NaN, as torch.amax does
    return tl.where((a > b) | (a != a), a, b)
''',
    "_minimum": '''@triton.jit
def _minimum(a, b):
    return tl.where((a < b) | (a != a), a, b)
''',
}
