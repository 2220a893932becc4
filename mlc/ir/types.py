"""Types of IR values: tensors with (possibly symbolic) shapes, and symbolic integers.

A dimension is an ``int`` or a sympy expression over size symbols (``s0``, ``768*s0``).
Symbols come from PyTorch's dynamic shapes; at run time they are bound from the
shapes of the graph's inputs, so one compiled graph serves every size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import sympy
import torch

Dim = Union[int, sympy.Expr]

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "f64",
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.uint64: "u64",  # the random state FlashAttention's CUDA kernel returns
    torch.bool: "b8",
    torch.complex64: "c64",
}
DTYPES_BY_NAME: dict[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES[dtype]


def make_dim(d) -> Dim:
    """Normalize an int, sympy expression or torch SymInt expression to a Dim."""
    if isinstance(d, (int, sympy.Integer)):
        return int(d)
    expr = sympy.sympify(d)
    if expr.is_Integer:
        return int(expr)
    return expr


def dim_str(d: Dim) -> str:
    return str(d).replace(" ", "")


def shape_str(shape) -> str:
    return ",".join(dim_str(d) for d in shape)


def numel(shape) -> Dim:
    return make_dim(sympy.Mul(*shape)) if shape else 1


def contiguous_strides(shape) -> tuple[Dim, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc = make_dim(acc * d)
    return tuple(reversed(strides))


def free_symbols(dims) -> set[sympy.Symbol]:
    out: set[sympy.Symbol] = set()
    for d in dims:
        if isinstance(d, sympy.Expr):
            out |= d.free_symbols
    return out


@dataclass(frozen=True)
class TensorType:
    """A tensor's shape, dtype, device and (optionally) strides.

    ``strides`` is ``None`` for a row-major contiguous tensor, which is what every
    intermediate is until a layout is chosen; graph inputs carry their real strides.
    """

    shape: tuple[Dim, ...]
    dtype: torch.dtype
    device: str = "cpu"
    strides: tuple[Dim, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(make_dim(d) for d in self.shape))
        if self.strides is not None:
            strides = tuple(make_dim(s) for s in self.strides)
            if strides == contiguous_strides(self.shape):
                strides = None
            object.__setattr__(self, "strides", strides)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> Dim:
        return numel(self.shape)

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def with_(self, **changes) -> "TensorType":
        fields = dict(shape=self.shape, dtype=self.dtype, device=self.device, strides=None)
        fields.update(changes)
        return TensorType(**fields)

    def same_value_type(self, other) -> bool:
        """Equal in everything a computation determines (strides are a layout choice)."""
        return (
            isinstance(other, TensorType)
            and self.shape == other.shape
            and self.dtype == other.dtype
            and self.device == other.device
        )

    def __str__(self) -> str:
        text = f"{dtype_name(self.dtype)}[{shape_str(self.shape)}]"
        if self.strides is not None:
            text += f"{{{shape_str(self.strides)}}}"
        if self.device != "cpu":
            text += f"@{self.device}"
        return text


@dataclass(frozen=True)
class SymType:
    """A symbolic integer (a SymInt in PyTorch): its value is ``expr`` over size symbols."""

    expr: Dim

    def __post_init__(self):
        object.__setattr__(self, "expr", make_dim(self.expr))

    def same_value_type(self, other) -> bool:
        return self == other

    def __str__(self) -> str:
        return f"sym({dim_str(self.expr)})"


Type = Union[TensorType, SymType]


def broadcast_shapes(*shapes) -> tuple[Dim, ...]:
    """NumPy broadcasting over possibly symbolic dims; raises ValueError if impossible."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        non_one = [d for d in dims if d != 1]
        if not non_one:
            out.append(1)
            continue
        first = non_one[0]
        if any(d != first for d in non_one[1:]):
            raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(first)
    return tuple(out)


def normalize_dim(dim: int, rank: int) -> int:
    if not -max(rank, 1) <= dim < max(rank, 1):
        raise ValueError(f"dim {dim} out of range for rank {rank}")
    return dim % max(rank, 1)
