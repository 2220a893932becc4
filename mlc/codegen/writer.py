"""The code writer every kernel template shares (``KernelWriter``), and its vocabulary.

A region is a small ``Graph`` (the body of a ``kernel`` node). The writer computes any of
its values at symbolic indices (see ``indexing``): loads through strides and views, casts,
pointwise arithmetic from ``TRITON_EXPR``, gathers and ``cat``. The templates in
``templates/`` decide the loops and the stores around it.

Arithmetic on fp16/bf16 values runs in fp32 registers, and each fp16/bf16 value the graph
computes is rounded to its type there (see ``KernelWriter.emit``): a register holds what
eager's tensor would, wherever the kernel boundaries fall.
"""

from __future__ import annotations

import math
import re

import sympy
import torch

from ..ir.graph import Graph, Node, Value
from ..ir.ops import OPS, REDUCTIONS, Category, promote
from ..ir.types import TensorType, free_symbols, normalize_dim
from . import indexing as ix
from .budget import Tally
from .exprs import GELU, HELPERS, POW_BY_CONSTANT, TRITON_EXPR
from .source import CodegenError


# Per-dim tile indices (x0, r1) and accumulators are blocks too (see KernelWriter.is_scalar).
_TILE_DIM = re.compile(r"[xr]\d+|acc\d*|accumulator")

TL_DTYPE = {
    torch.float32: "tl.float32", torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16",
    torch.float64: "tl.float64", torch.int64: "tl.int64", torch.int32: "tl.int32", torch.int16: "tl.int16",
    torch.int8: "tl.int8", torch.uint8: "tl.uint8", torch.uint64: "tl.uint64", torch.bool: "tl.int1",
}
_PTR_TYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
             torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
             torch.uint64: "u64", torch.bool: "i1"}
CODEGEN_REDUCTIONS = {"sum", "mean", "amax", "amin", "var", "argmax", "argmin", "any", "all"}
CODEGEN_OPS = set(TRITON_EXPR) | {"gelu", "clamp", "convert", "div", "pow", "full", "arange", "view", "permute",
                                  "expand", "slice", "select", "copy", "embedding", "gather", "index_select",
                                  "index", "cat", "mm", "bmm"} | CODEGEN_REDUCTIONS | \
    {"attention", "attention_split", "attention_grad_kv", "attention_grad_q",  # templates/attention.py
     "index_copy"}  # templates/scatter.py


def without_triton_code(graph: Graph) -> list[str]:
    """The op-table ops of ``graph`` (outside kernels) that have no Triton code: mlc's torch
    reference runs them, in Python (a Python-level fallback). Other ops outside a kernel were
    left there by fusion, for a reason its notes give."""
    return sorted({n.op for n in graph.nodes if n.op not in CODEGEN_OPS
                   and OPS[n.op].category in (Category.POINTWISE, Category.REDUCTION)})


_LOW = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class KernelWriter:
    """Writes one kernel's body: the code every template shares.

    A template makes one (or a subclass), writes its own lines around the values it needs,
    then calls ``finish``:

    - ``line(text)`` appends a statement at the current ``indent``;
    - ``emit(value, idx)`` returns the name (or literal) of ``value`` at the symbolic index
      ``idx`` (one index expression per dim, see ``indexing``), writing the loads and the
      arithmetic it needs once per (value, index, mask); inputs are loaded under ``mask``
      (and ``cond``, a branch of ``cat``), fp16/bf16 values are computed in fp32 and rounded
      to their type;
    - ``var(prefix, expr, dtype)`` names an expression; ``convert``/``cast`` change dtypes;
    - ``finish(name, sizes, meta)`` returns the module's source, its runtime argument names
      and their Triton signature: pointers (``in{k}_ptr``, ``out{k}_ptr``), ``sizes``, the
      strides the loads used (``in{k}_stride{d}``), then the ``meta`` constexprs.

    A template whose code has tile names of its own lists them in ``tile_names``; one that
    computes some values itself (a reduction's result, a matmul's accumulator) overrides
    ``_emit`` or ``reduction_value``.
    """

    tile_names = frozenset({"offs", "mask", "xindex", "xmask", "rindex", "rmask", "roffset", "arange", "full",
                            "zeros"})

    def __init__(self, body: Graph):
        self.body = body
        self.lines: list[str] = []
        self.indent = 1
        self.counter = 0
        self.memo: dict = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.scalars: set[str] = set()  # variables holding one value, not a block (see is_scalar)
        self.scalar_tiles: set[str] = set()  # tile indices a template set to 0 (a size-1 dim): one value
        self.exact: dict[str, torch.dtype] = {}  # fp32 variables holding a value of this fp16/bf16 type exactly
        self.helpers: set[str] = set()
        self.users = body.users()
        self.input_index = {n.out: k for k, n in enumerate(body.inputs)}
        self.strided: list[set[int]] = [set() for _ in body.inputs]
        self.mask = "mask"
        self.cond: list[str] = []  # extra load conditions (inside a branch of cat)
        self.raw_loads = False  # matmul operands keep their dtype (fp16 tiles for tl.dot)
        self.tally = Tally(body)  # copies and lines, against the fusion pass's budget (``budget``)

    def line(self, text: str):
        self.lines.append("    " * self.indent + text)
        self.tally.line(len(self.lines))

    def var(self, prefix: str, expr: str, dtype: torch.dtype) -> str:
        name = f"{prefix}{self.counter}"
        self.counter += 1
        self.line(f"{name} = {expr}")
        self.dtypes[name] = dtype
        if self.is_scalar(expr):
            self.scalars.add(name)
        return name

    def is_scalar(self, expr: str) -> bool:
        """Is ``expr`` one value rather than a block: does it use no tile index, mask or block var?"""
        return not any((n in self.tile_names or _TILE_DIM.fullmatch(n)) and n not in self.scalar_tiles
                       or (n in self.dtypes and n not in self.scalars)
                       for n in re.findall(r"[A-Za-z_]\w*", expr))

    def convert(self, v: str, dtype: torch.dtype) -> str:
        """Code converting ``v`` to ``dtype`` (exactly as torch rounds)."""
        if dtype == torch.bfloat16 and self.dtypes.get(v) != torch.bfloat16 and self.exact.get(v) != dtype:
            self.helpers.add("_to_bf16")
            return f"_to_bf16({v})"
        return f"{v}.to({TL_DTYPE[dtype]})"

    def cast(self, v: str, dtype: torch.dtype) -> str:
        dtype = compute_dtype(dtype)
        if self.dtypes.get(v, dtype) == dtype or is_literal(v):
            return v
        if dtype == torch.bool:
            return f"({v} != 0)"
        return f"{v}.to({TL_DTYPE[dtype]})"

    # --- values -------------------------------------------------------------------------

    def emit(self, value: Value, idx: list[str]) -> str:
        key = (value, tuple(idx), tuple(self.cond), self.mask, self.raw_loads)
        if key not in self.memo:
            self.tally.enter(value)
            try:
                v = self._emit(value, idx)
            finally:
                self.tally.depth -= 1
            if value.type.dtype in _LOW and not self.raw_loads:
                v = self._rounded(v, value.type.dtype)
            self.memo[key] = v
        return self.memo[key]

    def _emit(self, value: Value, idx: list[str]) -> str:
        node = value.node
        t = value.type
        if value in self.input_index:
            return self._load(self.input_index[value], t, idx)
        op, a = node.op, node.attrs
        if op in REDUCTIONS:
            return self.reduction_value(node, idx)
        if op == "full":
            return literal(a["value"], t.dtype)
        if op == "arange":
            dt = compute_dtype(t.dtype)
            return self.var("tmp", f"({a['start']} + {idx[0]} * {a['step']})", dt) if dt.is_floating_point else \
                self.var("tmp", f"({ix.size(a['start'])} + {idx[0]} * {a['step']})", dt)
        if op in ("view", "permute", "expand", "slice", "select", "copy"):
            return self.emit(node.inputs[0], self._view_index(node, idx))
        if op in ("embedding", "gather", "index_select", "index"):
            return self._gather(node, idx)
        if op == "cat":
            return self._cat(node, idx)
        if op == "index_copy":
            raise CodegenError("an index_copy result is read from memory: its kernel (templates/scatter.py) writes "
                               "only the indexed slices, in place")
        if OPS[op].category is not Category.POINTWISE or op not in CODEGEN_OPS:
            raise CodegenError(f"no Triton code for '{op}'")
        return self._pointwise(node, idx)

    def _load(self, k: int, t: TensorType, idx: list[str]) -> str:
        terms = []
        for d, (i, size) in enumerate(zip(idx, t.shape)):
            if i == "0":  # a size-1 dim indexed by tile offsets is still read: it shapes the pointer block
                continue
            self.strided[k].add(d)
            terms.append(f"{i} * in{k}_stride{d}")
        offset = " + ".join(terms) or "0"
        mask = " & ".join([self.mask, *self.cond])
        if self.is_scalar(offset):
            # One element (a 0-d input, a select, a one-element index tensor), read into every
            # lane of the tile. Left a scalar, it would break a masked load that uses it as an
            # index (a block mask needs a block pointer), and Triton 3.9's interpreter mistypes
            # comparisons of scalars (x != 0 stays fp32, so (x != 0) & y fails).
            offset = f"{offset} + ({mask}) * 0"
        v = self.var("tmp", f"tl.load(in{k}_ptr + ({offset}), mask={mask}, other=0)", t.dtype)
        if t.dtype == torch.bool:
            v = self.var("tmp", f"{v} != 0", torch.bool)
        if self.raw_loads or compute_dtype(t.dtype) == t.dtype:
            return v
        v = self.var("tmp", self.cast(v, t.dtype), compute_dtype(t.dtype))
        self.exact[v] = t.dtype
        return v

    def _view_index(self, node: Node, idx: list[str]) -> list[str]:
        x, out = node.inputs[0].type, node.types[0]
        a = node.attrs
        if node.op == "view":
            return ix.reshape(idx, out.shape, x.shape)
        if node.op == "permute":
            return ix.permute(idx, [normalize_dim(d, x.rank) for d in a["dims"]])
        if node.op == "expand":
            return ix.broadcast(idx, out.shape, x.shape)
        if node.op == "slice":
            return ix.slice_(idx, a["dim"], a["start"], a["step"])
        if node.op == "select":
            dim = normalize_dim(a["dim"], x.rank)
            return ix.select(idx, dim, a["index"], x.shape[dim])
        return idx  # copy

    def _gather(self, node: Node, idx: list[str]) -> list[str]:
        x, index = node.inputs[0], node.inputs[1]
        if node.op == "embedding":
            i = self.cast(self.emit(index, idx[:-1]), torch.int64)
            return self.emit(x, [i, idx[-1]])
        dim = node.attrs.get("dim")
        if node.op == "gather":
            i = self.cast(self.emit(index, idx), torch.int64)
            return self.emit(x, idx[:dim] + [i] + idx[dim + 1:])
        if node.op == "index_select":
            if x.type.rank == 0:  # the one element of a 0-d tensor (the index can only be 0)
                return self.emit(x, [])
            i = self.cast(self.emit(index, [idx[dim]] if index.type.rank else []), torch.int64)
            return self.emit(x, idx[:dim] + [i] + idx[dim + 1:])
        dims = list(node.attrs["dims"])
        mid_rank = node.types[0].rank - (x.type.rank - len(dims))
        mid = idx[dims[0]:dims[0] + mid_rank]
        mid_shape = node.types[0].shape[dims[0]:dims[0] + mid_rank]
        xi = list(idx[:dims[0]])
        for d, t in zip(dims, node.inputs[1:]):
            i = self.cast(self.emit(t, ix.broadcast(mid, mid_shape, t.type.shape)), torch.int64)
            xi.append(self.var("idx", f"tl.where({i} < 0, {i} + {ix.size(x.type.shape[d])}, {i})", torch.int64))
        return self.emit(x, xi + idx[dims[0] + mid_rank:])

    def _cat(self, node: Node, idx: list[str]) -> str:
        dim = node.attrs["dim"]
        out_dtype = compute_dtype(node.types[0].dtype)
        parts, start = [], 0
        for v in node.inputs:
            parts.append((start, v))
            start = start + v.type.shape[dim]
        result = None
        for k, (begin, v) in reversed(list(enumerate(parts))):
            end = parts[k + 1][0] if k + 1 < len(parts) else None
            conds = ([f"({idx[dim]} >= {ix.size(begin)})"] if begin != 0 else []) + \
                    ([f"({idx[dim]} < {ix.size(end)})"] if end is not None else [])
            if self.is_scalar(idx[dim]):
                # One value (a size-1 dim's index is the int 0): as a block, or the load's mask
                # would mix a Python bool into it (the interpreter refuses that mask's dtype).
                conds = [f"((({self.mask}) * 0 + {c}) != 0)" for c in conds]
            self.cond.extend(conds)
            sub = list(idx)
            sub[dim] = idx[dim] if begin == 0 else f"({idx[dim]} - {ix.size(begin)})"
            val = self.cast(self.emit(v, sub), out_dtype)
            del self.cond[len(self.cond) - len(conds):]
            if result is None:
                result = val
            else:
                result = self.var("tmp", f"tl.where({idx[dim]} < {ix.size(end)}, {val}, {result})", out_dtype)
        return result

    def _pointwise(self, node: Node, idx: list[str]) -> str:
        out_t = node.types[0]
        operands = [self.emit(v, ix.broadcast(idx, out_t.shape, v.type.shape)) for v in node.inputs]
        op, a = node.op, node.attrs
        if out_t.dtype == torch.bool and op != "where":
            cd = compute_dtype(promote([v.type for v in node.inputs])) if node.inputs else torch.bool
        else:
            cd = compute_dtype(out_t.dtype)
        if op == "convert":
            v = operands[0]
            if out_t.dtype == torch.bool:
                return self.var("tmp", f"({v} != 0)", torch.bool)
            expr = self.convert(v, out_t.dtype)
            if self.raw_loads:  # a matmul operand's cast (a prologue): the tile stays in the new type
                return self.var("tmp", expr, out_t.dtype)
            if out_t.dtype == cd:
                return self.var("tmp", expr, cd)
            v = self.var("tmp", f"{expr}.to({TL_DTYPE[cd]})", cd)  # rounded, then computed in fp32 again
            self.exact[v] = out_t.dtype
            return v
        args = [operands[0]] + [self.cast(o, cd) for o in operands[1:]] if op == "where" else \
            [self.cast(o, cd) for o in operands]
        k = 1 if op == "where" else 0
        if args[k:] and all(is_literal(o) for o in args):
            # Of constants only (a full that folding left: sin(nan)), the expression would be a
            # Python float, which has no .to; a block of the constant instead, as _load reads one
            # element (Triton 3.9's interpreter mistypes comparisons of scalars: `|` then fails).
            if cd == torch.bool:  # adding the mask's 0 would make an i1 an i32, which ~ then inverts bitwise
                args[k] = self.var("tmp", f"((tl.full([], {args[k]}, tl.int32) + ({self.mask}) * 0) != 0)", cd)
            else:
                args[k] = self.var("tmp", f"tl.full([], {args[k]}, {TL_DTYPE[cd]}) + ({self.mask}) * 0", cd)
        if op == "gelu":
            expr = GELU[a["approximate"]].format(*args)
        elif op == "clamp":
            expr = args[0]
            # Bounds as literals of the compute dtype: an infinite bound is float('-inf'), not inf.
            if a["min"] is not None:
                lo = literal(a["min"], cd)
                expr = f"tl.where({expr} < {lo}, {lo}, {expr})"
            if a["max"] is not None:
                hi = literal(a["max"], cd)
                expr = f"tl.where({expr} > {hi}, {hi}, {expr})"
        elif op == "div":
            expr = self._div(args, cd, a["rounding_mode"])
        elif op == "pow":
            expr = self._pow(node, args)
        elif op in ("floor", "ceil", "trunc") and not cd.is_floating_point:
            expr = args[0]  # integers are whole already; tl.floor and tl.ceil take floats only
        else:
            expr = TRITON_EXPR[op].format(*args)
            self.helpers.update(h for h in HELPERS if h + "(" in expr)
        if out_t.dtype in _LOW:  # rounded on the same line (see _rounded)
            v = self.var("tmp", f"{self.convert(f'({expr})', out_t.dtype)}.to(tl.float32)", torch.float32)
            self.exact[v] = out_t.dtype
            return v
        result_dtype = torch.bool if out_t.dtype == torch.bool else cd
        return self.var("tmp", expr, result_dtype)

    def _rounded(self, v: str, dtype: torch.dtype) -> str:
        """``v``, computed in fp32 registers, rounded to the fp16/bf16 ``dtype`` the graph gives it.

        Every fp16/bf16 value is (``emit``). Left in fp32 between the graph's casts and stores,
        a value would differ from the same value stored or converted to its type: a backward
        that recomputes part of the forward (rematerialization) would find no tie with the
        amax/amin the forward stored, or cancel ``x - mean`` over one element to its rounding
        error, times ``rsqrt(eps)``, instead of to 0. Where a kernel stores a value, where it
        converts one, and so where the min-cut partitioner splits forward from backward,
        changes from graph to graph; only rounding every value agrees with all of them, as
        eager does.
        """
        if dtype not in _LOW or is_literal(v) or self.dtypes.get(v) == dtype or self.exact.get(v) == dtype:
            return v
        v = self.var("tmp", f"{self.convert(v, dtype)}.to(tl.float32)", torch.float32)
        self.exact[v] = dtype
        return v

    def _div(self, args, cd, mode) -> str:
        a, b = args
        if cd.is_floating_point:
            q = f"({a} / {b})"
            return {None: q, "trunc": TRITON_EXPR["trunc"].format(q), "floor": f"tl.floor({q})"}[mode]
        if mode is None:
            return f"({a}.to(tl.float32) / {b}.to(tl.float32))"
        q = f"({a} // {b})"  # Triton truncates toward zero, like C
        return q if mode == "trunc" else f"({q} - ((({a} % {b}) != 0) & (({a} < 0) != ({b} < 0))).to({TL_DTYPE[cd]}))"

    def _pow(self, node: Node, args) -> str:
        exp_node = node.inputs[1].node
        if exp_node.op == "full" and exp_node.attrs["value"] in POW_BY_CONSTANT:
            base = args[0]
            if is_literal(base):  # a constant base becomes a 0-d tensor: the forms use .shape, tl.sqrt
                base = self.var("tmp", f"tl.full([], {base}, {TL_DTYPE[compute_dtype(node.types[0].dtype)]})",
                                compute_dtype(node.types[0].dtype))
            return POW_BY_CONSTANT[exp_node.attrs["value"]].format(base)
        base_node = node.inputs[0].node
        if base_node.op == "full" and isinstance(base_node.attrs["value"], (int, float)) \
                and base_node.attrs["value"] > 0 and node.types[0].dtype.is_floating_point:
            # A positive constant to a computed power (Adam's beta ** step): exp2(e * log2(b)),
            # within a few ulps of pow, in the instructions Triton has everywhere.
            log2 = math.log2(base_node.attrs["value"])
            return f"tl.exp2({self.cast(args[1], torch.float32)} * {log2!r})"
        raise CodegenError("pow with an exponent that is not a small constant needs libdevice")

    def finish(self, name: str, sizes: list[str], meta: list[str]) -> tuple[str, list[str], dict[str, str]]:
        """(module source, runtime argument names, their Triton types) of the kernel written so far.

        Arguments come grouped as the Triton tutorials write them: pointers, then ``sizes``
        (the size symbols and the template's launch sizes), then the strides the loads used,
        then the ``meta`` constexprs.
        """
        body = self.body
        ptrs = [f"in{k}_ptr" for k in range(len(body.inputs))] + [f"out{k}_ptr" for k in range(len(body.outputs))]
        strides = [f"in{k}_stride{d}" for k in range(len(body.inputs)) for d in sorted(self.strided[k])]
        sig = {f"in{k}_ptr": "*" + _PTR_TYPE[n.types[0].dtype] for k, n in enumerate(body.inputs)}
        sig.update({f"out{k}_ptr": "*" + _PTR_TYPE[v.type.dtype] for k, v in enumerate(body.outputs)})
        sig.update({s: "i64" if "stride" in s else "i32" for s in sizes + strides})
        head = ["import triton", "import triton.language as tl", "", ""]
        for h in sorted(self.helpers):
            head += [HELPERS[h], ""]
        groups = [ptrs, sizes, strides, [f"{m}: tl.constexpr" for m in meta]]
        params = ",\n    ".join(", ".join(g) for g in groups if g)
        source = "\n".join(head + ["@triton.jit", f"def {name}(", f"    {params},", "):"] + self.lines) + "\n"
        return source, ptrs + sizes + strides, sig

    def store(self, k: int, idx: list[str], shape, value: str, mask: str, axes: tuple[str, ...]):
        """Store ``value`` into output ``k`` (of ``shape``) at ``idx``, under ``mask``.

        ``tl.store`` broadcasts the value and the mask to the pointer's shape, never the pointer
        to theirs. ``axes`` are patterns of the names that index each axis of the tile (the
        matmul's ``offs_m`` and ``offs_n``); an offset that leaves one out (a size-1 dim is
        indexed by 0, a ``[1, N]`` result read as ``[N]``) is widened to the mask's shape.
        """
        offset = ix.ravel(idx, shape)
        if not all(re.search(axis, offset) for axis in axes):
            offset = f"{offset} + ({mask}) * 0"
        self.line(f"tl.store(out{k}_ptr + {offset}, {value}, mask={mask})")

    def input_strides(self) -> list[list[int]]:
        """Per input, the dims whose stride the kernel takes as an argument."""
        return [sorted(s) for s in self.strided]

    def reduction_value(self, node: Node, idx: list[str]) -> str:
        raise CodegenError(f"reduction '{node.op}' in a pointwise kernel")


def is_literal(v: str) -> bool:
    try:
        float(v.replace("float('", "").replace("')", ""))
        return True
    except ValueError:
        return v in ("True", "False")


def literal(value, dtype: torch.dtype) -> str:
    if isinstance(value, sympy.Expr):  # a size used as a number: the symbols are kernel arguments
        code = ix.size(value)
        return f"{code}.to({TL_DTYPE[compute_dtype(dtype)]})" if dtype.is_floating_point else code
    if dtype == torch.bool:
        return "True" if value else "False"
    if dtype.is_floating_point:
        v = float(torch.tensor(float(value), dtype=dtype).item())  # rounded as the graph's dtype rounds it
        return repr(v) if math.isfinite(v) else f"float('{v}')"
    return str(int(value))


def kernel_name(body: Graph) -> str:
    """A name that says what the kernel computes: ``fused_`` and its first six ops."""
    ops = []
    for n in body.nodes:
        if n.op not in ops and n.op != "copy" and OPS[n.op].category not in (Category.VIEW, Category.CREATION):
            ops.append(n.op)
    return "fused_" + "_".join(ops[:6] or ["copy"]) + ("_etc" if len(ops) > 6 else "")


def kernel_symbols(body: Graph) -> list[sympy.Symbol]:
    """The size symbols a region's types use: the kernel takes each as an argument."""
    syms = set()
    for n in (*body.inputs, *body.nodes):
        for t in n.types:
            syms |= free_symbols(t.shape)
    for v in body.outputs:
        syms |= free_symbols(v.type.shape)
    return sorted(syms, key=str)


def check_ops(body: Graph) -> None:
    """Raise ``CodegenError`` unless every op of ``body`` has Triton code and it has an output."""
    for n in body.nodes:
        if n.op not in CODEGEN_OPS:
            raise CodegenError(f"no Triton code for '{n.op}'")
    if not body.outputs:
        raise CodegenError("a kernel needs an output")
