"""Index maps: where an op reads its operand, given where its result is being computed.

Kernels compute every value at symbolic indices (Triton expressions as strings, one per
dim). Views, broadcasts and gathers are then just rewrites of those indices, so no view
ever costs a copy inside a kernel. ``size`` turns a dim (int or sympy expression over size
symbols, which kernels receive as arguments) into code.
"""

from __future__ import annotations

import re

import sympy

from ..ir.types import Dim
from .source import CodegenError


def size(d: Dim) -> str:
    """A dim as Triton code; size symbols are kernel arguments of the same name."""
    return str(d) if isinstance(d, int) else _code(sympy.sympify(d))


def _code(e: sympy.Expr) -> str:
    if e.is_Integer:
        return str(int(e))
    if e.is_Symbol:
        return e.name
    if isinstance(e, sympy.Add):
        return "(" + " + ".join(_code(a) for a in e.args) + ")"
    if isinstance(e, sympy.Mul) and all(a.is_Integer or not a.is_Rational for a in e.args):
        return "(" + " * ".join(_code(a) for a in e.args) + ")"
    if isinstance(e, sympy.Pow) and e.exp.is_Integer and e.exp > 0:  # Triton tensors have no **
        return "(" + " * ".join([_code(e.base)] * int(e.exp)) + ")"
    if isinstance(e, sympy.floor):
        num, den = sympy.fraction(sympy.together(e.args[0]))
        return f"({_code(num)} // {_code(den)})"
    if isinstance(e, sympy.Mod):
        return f"({_code(e.args[0])} % {_code(e.args[1])})"
    if isinstance(e, (sympy.Max, sympy.Min)):
        fn = "tl.maximum" if isinstance(e, sympy.Max) else "tl.minimum"
        out = _code(e.args[0])
        for a in e.args[1:]:
            out = f"{fn}({out}, {_code(a)})"
        return out
    raise CodegenError(f"no Triton code for the size expression {e}")


def product(dims) -> Dim:
    out = 1
    for d in dims:
        out = out * d
    return out if isinstance(out, int) else sympy.expand(out)


# unravel's results, so that ravel can give back the flat index instead of rebuilding it as
# (a // 16) * 16 + a % 16: a reshape and its inverse then read a value at the same string.
_UNRAVELED: dict[tuple, str] = {}


def unravel(flat: str, shape) -> list[str]:
    """The row-major multi-index of ``flat`` in ``shape``."""
    out = _unravel(flat, shape)
    _UNRAVELED[(tuple(out), tuple(shape))] = flat
    return out


def _unravel(flat: str, shape) -> list[str]:
    out = []
    for k, d in enumerate(shape):
        if d == 1:
            out.append("0")
            continue
        inner = product(shape[k + 1:])
        expr = flat if inner == 1 else f"({flat} // {size(inner)})"
        if any(x != 1 for x in shape[:k]):
            expr = f"({expr} % {size(d)})"
        out.append(expr)
    return out


def ravel(idx: list[str], shape) -> str:
    known = _UNRAVELED.get((tuple(idx), tuple(shape)))
    # Only where the index is written in terms of that flat name: an all-zero index (a
    # one-element shape) says nothing of it, and another kernel may have no such name.
    if known is not None and re.search(rf"(?<!\w){re.escape(known)}(?!\w)", " ".join(idx)):
        return known
    terms = []
    for k, (i, d) in enumerate(zip(idx, shape)):
        if i == "0":
            continue
        inner = product(shape[k + 1:])
        terms.append(i if inner == 1 else f"{i} * {size(inner)}")
    if len(terms) > 1:
        return "(" + " + ".join(terms) + ")"
    return terms[0] if terms else "0"


def broadcast(idx: list[str], out_shape, in_shape) -> list[str]:
    """Index into an operand of shape ``in_shape`` broadcast to ``out_shape``."""
    lead = len(out_shape) - len(in_shape)
    return ["0" if d == 1 else idx[lead + k] for k, d in enumerate(in_shape)]


def reshape(idx: list[str], out_shape, in_shape) -> list[str]:
    """Index into the operand of a reshape.

    Dims are matched in groups covering equal numbers of elements; a group of one dim on
    each side maps directly, others go through a flat index. Any grouping whose products
    match is correct, so when symbolic sizes make the grouping unclear this falls back to
    raveling the whole index.
    """
    if any(d == 0 for d in (*out_shape, *in_shape)):
        return ["0"] * len(in_shape)  # no element is ever read: any index does (and sizes do not divide)
    out: list[str] = []
    i, n, m = 0, len(out_shape), len(in_shape)
    j = 0
    while j < m:
        if in_shape[j] == 1:
            out.append("0")
            j += 1
            continue
        while i < n and out_shape[i] == 1:
            i += 1
        if i >= n:
            return unravel(ravel(idx, out_shape), in_shape)
        gi, gj = [i], [j]
        pi, pj = out_shape[i], in_shape[j]
        while pi != pj:
            if _smaller(pi, pj) and gi[-1] + 1 < n:
                gi.append(gi[-1] + 1)
                pi = product([out_shape[k] for k in gi])
            elif gj[-1] + 1 < m:
                gj.append(gj[-1] + 1)
                pj = product([in_shape[k] for k in gj])
            else:
                return unravel(ravel(idx, out_shape), in_shape)
        if len(gi) == 1 and len(gj) == 1:
            out.append(idx[i])
        else:
            flat = ravel([idx[k] for k in gi], [out_shape[k] for k in gi])
            out.extend(unravel(flat, [in_shape[k] for k in gj]))
        i, j = gi[-1] + 1, gj[-1] + 1
    return out


def _smaller(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a < b
    ratio = sympy.simplify(sympy.sympify(b) / a)
    return ratio > 1 if ratio.is_number else bool(sympy.fraction(ratio)[0].free_symbols)


def permute(idx: list[str], dims) -> list[str]:
    out = [""] * len(dims)
    for k, d in enumerate(dims):
        out[d] = idx[k]
    return out


def slice_(idx: list[str], dim: int, start, step) -> list[str]:
    out = list(idx)
    term = idx[dim] if step == 1 else f"{idx[dim]} * {step}"
    out[dim] = term if start in (None, 0) else f"({size(start)} + {term})"
    return out


def select(idx: list[str], dim: int, index, dim_size) -> list[str]:
    if isinstance(index, int) and index < 0:
        index = dim_size + index
    return idx[:dim] + [size(index)] + idx[dim:]
