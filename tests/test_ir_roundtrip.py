"""Every op in the op table survives print -> parse -> print, verifies, and runs the same.

``test_op_round_trip`` is parametrized over ``OPS`` itself, so a new op is picked up
automatically: pointwise ops and reductions get a generic example from their category,
anything else needs a row in ``EXAMPLES`` (``test_every_op_has_a_round_trip_example``
fails until it has one).
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import sympy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlc.ir import (
    DTYPE_NAMES,
    OPS,
    Category,
    Graph,
    GraphBuilder,
    Node,
    Operand,
    SymType,
    TensorType,
    Value,
    parse,
    verify,
)
from mlc.ir.ops import REQUIRED, complete_attrs
from mlc.ir.reference import bind_symbols, example_inputs, run_reference


def sym(name: str) -> sympy.Symbol:
    # The assumptions PyTorch (and the parser) give size symbols.
    return sympy.Symbol(name, integer=True, positive=True)


S0, S1 = sym("s0"), sym("s1")
F32, F16, I64, I32, B8 = torch.float32, torch.float16, torch.int64, torch.int32, torch.bool


def T(dtype, *shape, strides=None, device="cpu") -> TensorType:
    return TensorType(shape, dtype, device, strides)


# ---------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------


def _concrete(d, env) -> int:
    return int(d.xreplace(env)) if isinstance(d, sympy.Expr) else d


def _same_attr(a, b) -> bool:
    """Equal attribute values, with NaN equal to itself and types compared too (1 is not 1.0)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_attr(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(_same_attr, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, sympy.Expr):
        return a == b  # a size may come back as an int (sympy.Integer(3) == 3)
    if isinstance(a, Graph):  # a kernel's body: graphs are equal when they print the same
        return isinstance(b, Graph) and str(a) == str(b)
    return type(a) is type(b) and a == b


def check_round_trip(g: Graph, sizes: dict[str, int] | None = None, run: bool = True) -> Graph:
    """verify, print, parse, print again; compare the two graphs and (if ``run``) their results."""
    verify(g)
    text = str(g)
    parsed = parse(text, constants=g.constants)
    assert str(parsed) == text, f"printed:\n{text}\n\nreprinted:\n{parsed}"
    verify(parsed)
    # The same values, not just the same text (a dtype and a symbol could print alike).
    assert len(parsed.nodes) == len(g.nodes)
    for a, p in zip((*g.inputs, *g.nodes), (*parsed.inputs, *parsed.nodes)):
        assert (a.op, a.types) == (p.op, p.types), f"{a} != {p}"
        want_attrs = complete_attrs(a.op, dict(a.attrs))  # a node built directly may leave defaults out
        assert _same_attr(want_attrs, dict(p.attrs)), f"{a.op}: {want_attrs} != {dict(p.attrs)}"
    if not run:
        return parsed

    args = example_inputs(g, sizes)
    env = bind_symbols(g, args)
    want, got = run_reference(g, args), run_reference(parsed, args)
    assert len(want) == len(got) == len(g.outputs)
    for i, (w, o, v) in enumerate(zip(want, got, g.outputs)):
        t = v.type
        if isinstance(t, SymType):
            assert w == o == _concrete(t.expr, env), f"output {i}"
            continue
        # The reference agrees with the declared type, and both graphs compute the same.
        assert w.dtype == t.dtype, f"output {i}: {w.dtype} but typed {t}"
        assert tuple(w.shape) == tuple(_concrete(d, env) for d in t.shape), f"output {i}: {tuple(w.shape)} but typed {t}"
        torch.testing.assert_close(o, w, rtol=0, atol=0, equal_nan=True, msg=f"output {i}")
    return parsed


# ---------------------------------------------------------------------------------------
# Examples: one builder makes one graph that uses ``op``
# ---------------------------------------------------------------------------------------

Builder = Callable[[GraphBuilder, str], list[Value]]


def unary(dtype=F32) -> Builder:
    def build(b, op):
        # A column-major input: strides print as {1,s0}.
        x = b.input("x", T(dtype, S0, 8, strides=(1, S0)))
        return [b.op(op, x)]

    return build


def unary_attrs(**attrs) -> Builder:
    def build(b, op):
        return [b.op(op, b.input("x", T(F32, S0, 8)), **attrs)]

    return build


def binary(a=F32, c=F32) -> Builder:
    def build(b, op):
        x = b.input("x", T(a, S0, 8))
        y = b.input("y", T(c, 8))  # broadcast along dim 0
        return [b.op(op, x, y)]

    return build


def binary_scalar(a=I64, c=F32) -> Builder:
    def build(b, op):
        x = b.input("x", T(a, 2, S0))
        y = b.input("y", T(c))  # a 0-dim tensor: promotes below dimensioned operands
        return [b.op(op, x, y)]

    return build


def binary_attrs(**attrs) -> Builder:
    def build(b, op):
        return [b.op(op, b.input("x", T(F32, S0, 8)), b.input("y", T(F32, 1, 8)), **attrs)]

    return build


def reduce(dtype=F32, **attrs) -> Builder:
    def build(b, op):
        return [b.op(op, b.input("x", T(dtype, S0, 4, 8)), **attrs)]

    return build


def _source_inputs(b, op):
    # Graph inputs of every kind, returned unchanged: every dtype, strides, derived sizes,
    # a size-1 dim with an odd stride and a symbolic-int input.
    outs = [b.input(f"x_{DTYPE_NAMES[d]}", T(d, S0, 3)) for d in DTYPE_NAMES]
    outs.append(b.input("strided", T(F32, 4, S0, S1, strides=(1, 4 * S1, 4))))
    outs.append(b.input("doubled", T(F32, 2 * S0, S0 + S1)))
    outs.append(b.input("one", T(F32, 1, 8, strides=(32, 1))))
    outs.append(b.input("scalar", T(torch.float64)))
    outs.append(b.input("n", SymType(S1)))
    return outs


def _constant(b, op):
    x = b.input("x", T(F32, S0, 8))
    w = b.constant("w", torch.randn(4, 8).t())  # non-contiguous: f32[8,4]{1,8}
    bias = b.constant("layer.bias", torch.arange(4, dtype=torch.int32))
    return [b.op("add", b.op("mm", x, w), bias), w]


def _where(b, op):
    c = b.input("c", T(B8, S0, 1))
    return [b.op(op, c, b.input("x", T(F32, S0, 8)), b.input("y", T(F32)))]


def _mm(b, op):
    return [b.op(op, b.input("x", T(F32, S0, 8)), b.input("w", T(F32, 8, S1)))]


def _bmm(b, op):
    return [b.op(op, b.input("x", T(F32, 2, S0, 8)), b.input("w", T(F32, 2, 8, 4)))]


def _attention(b, op):
    q = b.input("q", T(F32, S0, 4, S1, 8))
    kv = [b.input(n, T(F32, S0, 2, 5, 8)) for n in ("k", "v")]  # grouped-query heads
    mask = b.input("m", T(B8, S0, 1, 1, 5))
    rows = T(F32, S0, 4, S1)
    grad_in = [b.input("do", T(F32, S0, 4, S1, 8)), q, *kv, b.input("lse", rows), b.input("delta", rows)]
    node = b.add(op, (q, *kv, mask) if op == "attention" else (*grad_in, mask), {"scale": 0.35, "is_causal": True})
    return list(node.results)


def _attention_split(b, op):
    """flash-decoding's split: a static key length (40 keys in 3 ranges of 16, the last 8 long)."""
    q = b.input("q", T(F32, S0, 4, 1, 8))
    kv = [b.input(n, T(F32, S0, 2, 40, 8)) for n in ("k", "v")]
    mask = b.input("m", T(B8, S0, 1, 1, 40))
    return list(b.add(op, (q, *kv, mask), {"scale": 0.35, "splits": 3, "chunk": 16}).results)


def _attention_scores(b, op):
    """attention written by hand, as fusion rewrites it: f(attention_scores(q, k)) as the scores."""
    q = b.input("q", T(F32, S0, 4, S1, 8))
    k, v = (b.input(n, T(F32, S0, 2, 5, 8)) for n in ("k", "v"))
    s = b.op("tanh", b.op(op, q, k))
    return list(b.add("attention", (q, k, v, s), {"scale": 1.0, "score_mod": True}).results)


def _score_mod_grads(b, op):
    """attention written by hand, in training: the gradients of f(attention_scores(q, k)), whose
    derivative reads attention_probs_grad (frontend/hand_attention.py)."""
    q = b.input("q", T(F32, S0, 4, S1, 8))
    k, v = (b.input(n, T(F32, S0, 2, 5, 8)) for n in ("k", "v"))
    rows = T(F32, S0, 4, S1)
    grad_in = [b.input("do", T(F32, S0, 4, S1, 8)), q, k, v, b.input("lse", rows), b.input("delta", rows)]
    t = b.op("tanh", b.op("attention_scores", q, k))
    g = b.op("attention_probs_grad", *grad_in, t)
    ds = b.op("mul", g, b.op("sub", b.op("full", shape=[], value=1.0, dtype=F32), b.op("mul", t, t)))
    if op == "attention_probs_grad":
        return [g]
    return list(b.add(op, (*grad_in, t, ds), {"scale": 1.0, "score_mod": True}).results)


def one_input(in_shape, dtype=F32, **attrs) -> Builder:
    def build(b, op):
        return [b.op(op, b.input("x", T(dtype, *in_shape)), **attrs)]

    return build


def _cat(b, op):
    x, y = b.input("x", T(F32, S0, 8)), b.input("y", T(F32, 2, 8, strides=(1, 2)))
    return [b.op(op, x, y, x, dim=0), b.op(op, x, x), b.op(op, x, x, dim=-1)]  # s0+2, 2*s0, 16


def _gather(b, op):
    return [b.op(op, b.input("x", T(F32, S0, 8)), b.input("i", T(I64, S0, 4)), dim=1)]


def _index_select(b, op):
    return [b.op(op, b.input("x", T(F32, S0, 8)), b.input("i", T(I32, 5)), dim=1)]


def _index_copy(b, op):
    cache = b.input("cache", T(F32, S0, 8, 4))  # example inputs' indices are below 8
    return [b.op(op, cache, b.input("pos", T(I64, 2)), b.input("k", T(F32, S0, 2, 4)), dim=1)]


def _embedding(b, op):
    return [b.op(op, b.input("w", T(F32, 10, 4)), b.input("i", T(I64, S0, 3)))]


def _index(b, op):
    x = b.input("x", T(F32, 5, 8, 8))
    i, j = b.input("i", T(I64, S0, 1)), b.input("j", T(I64, 4))
    return [b.op(op, x, i, dims=[1]), b.op(op, x, i, j, dims=[1, 2])]  # [5,s0,1,8], [5,s0,4]


def _full(b, op):
    b.input("x", T(F32, S0))  # binds s0
    return [b.op(op, shape=[S0, 4], value=1.5, dtype=F32), b.op(op, shape=[], value=7, dtype=I64),
            b.op(op, shape=[2], value=True, dtype=B8)]


def _arange(b, op):
    b.input("x", T(F32, S0))
    return [b.op(op, end=S0, dtype=I64), b.op(op, start=1, end=10, step=3, dtype=F32)]


def _symint(b, op):
    b.input("x", T(F32, S0, 4))
    b.input("n", SymType(S1))
    return [b.op(op, expr=2 * S0 + 1), b.op(op, expr=S0 * S1), b.op(op, expr=sympy.floor(S1 / 2))]


def _aten(b, op):
    x, y = b.input("x", T(F32, S0, 8)), b.input("y", T(F32, 2 * S0, 8))
    cumsum = b.add(op, [x], {"target": "aten.cumsum.default", "args": [Operand(0), 1]}, T(F32, S0, 8)).out
    # Several results, none picked: every item of ATen's tuple is a result.
    values, indices = b.add(op, [x], {"target": "aten.sort.default", "args": [Operand(0), -1]},
                            [T(F32, S0, 8), T(I64, S0, 8)]).results
    # kwargs, and a pick that keeps only the indices of topk's (values, indices).
    (top,) = b.add(op, [y], {"target": "aten.topk.default", "args": [Operand(0), 2],
                             "kwargs": [["dim", 0], ["largest", False]], "pick": [1]}, [T(I64, 2, 8)]).results
    # Several operands, and a size expression among the arguments.
    fma = b.add(op, [x, cumsum, values], {"target": "aten.addcmul.default", "args": [Operand(0), Operand(1), Operand(2)],
                                         "kwargs": [["value", 0.5]]}, T(F32, S0, 8)).out
    narrow = b.add(op, [y], {"target": "aten.narrow.default", "args": [Operand(0), 0, S0, S0]}, T(F32, S0, 8)).out
    return [fma, indices, top, narrow]


def _kernel(b, op):
    # A fused region: a softmax-like body over a symbolic number of rows, and a second
    # kernel that reads the first one's result.
    x, bias = b.input("x", T(F32, S0, 8)), b.input("bias", T(F32, 8))
    body = GraphBuilder("fused_add_amax_sub_exp")
    bx, bb = body.input("in0", T(F32, S0, 8)), body.input("in1", T(F32, 8))
    s = body.op("add", bx, bb)
    m = body.op("amax", s, dims=(1,), keepdim=True)
    e = body.op("exp", body.op("sub", s, m))
    k1 = b.add(op, [x, bias], {"body": body.build([e, m])}).results
    body2 = GraphBuilder("fused_neg")
    body2_out = body2.op("neg", body2.input("in0", T(F32, S0, 8)))
    k2 = b.add(op, [k1[0]], {"body": body2.build([body2_out])}).out
    return [k2, k1[1]]


INT_ONLY = {"bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor"}

# Ops whose generic example does not fit, or that need more than one.
EXAMPLES: dict[str, list[Builder]] = {
    "input": [_source_inputs],
    "constant": [_constant],
    **{op: [unary(I64), unary(B8)] if op == "bitwise_not" else [binary(I64, I32), binary_scalar(B8, I64)]
       for op in INT_ONLY},
    "gelu": [unary(), unary_attrs(approximate="tanh")],
    "clamp": [unary(), unary_attrs(min=-0.5, max=0.5), unary_attrs(min=-math.inf), unary_attrs(max=3)],
    "convert": [unary_attrs(dtype=F16), unary_attrs(dtype=I32), unary_attrs(dtype=B8)],
    "div": [binary(), binary_scalar(I64, I64), binary_attrs(rounding_mode="floor"), binary_attrs(rounding_mode="trunc")],
    "where": [_where],
    "var": [reduce(), reduce(dims=[1], correction=0), reduce(dims=[0, -1], correction=2, keepdim=True)],
    "argmax": [reduce(), reduce(dim=1), reduce(dim=-1, keepdim=True), reduce(keepdim=True)],
    "argmin": [reduce(), reduce(dim=1), reduce(dim=-1, keepdim=True), reduce(I64, dim=0)],
    "mm": [_mm],
    "bmm": [_bmm],
    "attention": [_attention], "attention_split": [_attention_split],
    "attention_scores": [_attention_scores], "attention_grad_kv": [_attention, _score_mod_grads],
    "attention_grad_q": [_attention, _score_mod_grads], "attention_probs_grad": [_score_mod_grads],
    "view": [one_input((S0, 8), shape=[2 * S0, 4]), one_input((S0, 8), shape=[S0 * 8]), one_input((2, 3), shape=[3, 1, 2])],
    "permute": [one_input((S0, 4, 8), dims=[2, 0, 1]), one_input((S0, 8), dims=[-1, 0])],
    "expand": [one_input((S0, 1), shape=[2, S0, 8]), one_input((S0, 1, 8), shape=[S0, 3, 8])],
    "slice": [one_input((S0, 8), dim=1, start=1, end=7, step=2), one_input((S0, 8), dim=0, start=1),
              one_input((S0, 8), dim=0, end=2**63 - 1), one_input((S0, 8), dim=-1, start=-3, end=-1)],
    "select": [one_input((S0, 8), dim=1, index=2), one_input((S0, 8), dim=0, index=-1)],
    "copy": [unary()],
    "cat": [_cat],
    "gather": [_gather],
    "index_select": [_index_select],
    "index_copy": [_index_copy],
    "embedding": [_embedding],
    "index": [_index],
    "full": [_full],
    "arange": [_arange],
    "symint": [_symint],
    "aten": [_aten],
    "kernel": [_kernel],
}


def examples_for(op: str) -> list[Builder]:
    """The explicit examples for ``op``, or a generic one from its category (or none)."""
    if op in EXAMPLES:
        return EXAMPLES[op]
    opdef = OPS[op]
    if any(d is REQUIRED for d in opdef.attrs.values()):
        return []
    if opdef.category is Category.POINTWISE and opdef.arity == 1:
        return [unary()]
    if opdef.category is Category.POINTWISE and opdef.arity == 2:
        return [binary(), binary_scalar()]
    if opdef.category is Category.REDUCTION and set(opdef.attrs) == {"dims", "keepdim"}:
        return [reduce(), reduce(dims=[1]), reduce(dims=[0, -1], keepdim=True)]
    return []


def test_every_op_has_a_round_trip_example():
    missing = sorted(op for op in OPS if not examples_for(op))
    assert not missing, f"ops with no round-trip example (add them to EXAMPLES): {missing}"


@pytest.mark.parametrize("op", sorted(OPS))
def test_op_round_trip(op):
    builders = examples_for(op)
    if not builders:
        pytest.fail(f"no round-trip example for '{op}'")
    for k, build in enumerate(builders):
        b = GraphBuilder(f"{op}_{k}")
        outputs = build(b, op)
        g = b.build(outputs)
        assert op in ("input", "constant") or g.count(op) >= 1, f"example {k} does not use {op}"
        check_round_trip(g)


# ---------------------------------------------------------------------------------------
# Things the per-op examples do not reach
# ---------------------------------------------------------------------------------------


def test_devices_round_trip():
    b = GraphBuilder("dev")
    x = b.input("x", T(F32, S0, 8, device="cuda:0"))
    y = b.input("y", T(F32, device="cpu"))  # a 0-dim cpu tensor may meet a cuda one
    g = b.build([b.op("add", b.op("exp", x), y), b.op("full", shape=[2], value=0.0, dtype=F16, device="cuda:1")])
    assert "f32[s0,8]@cuda:0" in str(g) and 'device="cuda:1"' in str(g) and "f16[2]@cuda:1" in str(g)
    check_round_trip(g, run=False)  # no GPU to run it on


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e-05, -0.0, 1e20, 0.1, 3.0, -7, 2**40])
def test_scalar_attribute_values_round_trip(value):
    b = GraphBuilder("f")
    b.input("x", T(F32, S0))
    g = b.build([b.op("full", shape=[S0], value=value, dtype=F32)])
    parsed = check_round_trip(g)
    got = parsed.nodes[0].attrs["value"]
    assert type(got) is type(value) and (got == value or math.isnan(value) and math.isnan(got))
    if value == 0 and isinstance(value, float):
        assert math.copysign(1, got) == -1.0


def test_strings_with_special_characters_round_trip():
    weird = 'a "quoted", {braced} [list] \\ back\\slash // not a comment \u00e9 \t'
    b = GraphBuilder("f")
    x = b.input("x", T(F32, 4))
    node = b.add("aten", [x], {"target": "aten.gelu.default", "args": [Operand(0)], "kwargs": [["approximate", weird]]},
                 T(F32, 4))
    parsed = check_round_trip(b.build([node.out]), run=False)
    assert parsed.nodes[0].attrs["kwargs"] == (("approximate", weird),)


def test_size_expressions_round_trip():
    # Sizes PyTorch produces: products, sums, floor division, Mod, Max.
    b = GraphBuilder("f")
    x = b.input("x", T(F32, S0, S1))
    exprs = [S0 * S1, S0 + S1 - 1, sympy.floor(S0 / 2), sympy.ceiling(S1 / 3), sympy.Mod(S0, 4), sympy.Max(S0, S1), S0**2]
    outs = [b.op("full", shape=[e], value=0.0, dtype=F32) for e in exprs]
    outs.append(b.op("view", x, shape=[S0 * S1]))
    outs.append(b.op("slice", x, dim=0, start=0, end=S0 - 1, step=2))  # floor((s0-2)/2)+1
    check_round_trip(b.build(outs), sizes={"s0": 5, "s1": 7})


def test_size_symbol_spelled_like_a_dtype_round_trips():
    # torch names unbacked sizes u0, u1, ...: u8 must not read back as uint8.
    u8 = sym("u8")
    b = GraphBuilder("f")
    x = b.input("x", T(F32, u8, 2))
    g = b.build([b.op("view", x, shape=[2 * u8]), b.op("view", x, shape=[u8, 2])])
    parsed = check_round_trip(g, sizes={"u8": 4})
    assert parsed.nodes[1].attrs["shape"] == (u8, 2)


def test_attribute_order_does_not_change_the_text():
    b = GraphBuilder("f")
    x = b.input("x", T(F32, 8))
    a = b.append(Node("slice", [x], {"step": 2, "start": 1, "dim": 0}, [T(F32, 4)]))
    c = b.append(Node("slice", [x], {"dim": 0, "start": 1, "step": 2}, [T(F32, 4)]))
    g = b.build([a.out, c.out])
    lines = str(g).splitlines()
    assert lines[1].split("=", 1)[1] == lines[2].split("=", 1)[1] == " slice(%x) {dim=0, start=1, step=2} : f32[4]"
    check_round_trip(g)


def test_list_attributes_are_stored_as_tuples():
    b = GraphBuilder("f")
    x = b.input("x", T(F32, S0, 8))
    node = b.add("view", [x], {"shape": [8, S0]})
    assert node.attrs["shape"] == (8, S0)
    # A list default (args=[] against the table's ()) is still recognized as the default.
    fallback = b.add("aten", [x], {"target": "aten.clone.default", "args": [Operand(0)], "kwargs": []}, T(F32, S0, 8))
    assert "kwargs" not in str(b.build([node.out, fallback.out]))
    check_round_trip(b.build([node.out, fallback.out]))


# ---------------------------------------------------------------------------------------
# Random chains of pointwise ops, reductions and views
# ---------------------------------------------------------------------------------------

SIZES = {"s0": 5}
_UNARY = sorted(op for op in OPS if OPS[op].category is Category.POINTWISE and OPS[op].arity == 1
                and op not in INT_ONLY and not any(d is REQUIRED for d in OPS[op].attrs.values()))
_BINARY = sorted(op for op in OPS if OPS[op].category is Category.POINTWISE and OPS[op].arity == 2
                 and op not in INT_ONLY and not any(d is REQUIRED for d in OPS[op].attrs.values()))
_REDUCE = sorted(op for op in OPS if OPS[op].category is Category.REDUCTION)


def _size(d) -> int:
    return _concrete(d, {S0: SIZES["s0"]})


@st.composite
def chains(draw):
    """A graph: one input, then up to 6 random steps, each result typed by inference."""
    dims = [S0 if draw(st.booleans()) else draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(range(len(dims))))  # physical layout, outermost first
    strides, acc = [0] * len(dims), 1
    for d in reversed(order):
        strides[d], acc = acc, acc * dims[d]
    b = GraphBuilder("chain")
    cur = b.input("x", T(F32, *dims, strides=strides))
    outputs, n_inputs = [], 1
    for _ in range(draw(st.integers(1, 6))):
        t = cur.type
        if t.dtype != F32:  # keep the chain in floating point for the next op
            cur = b.op("convert", cur, dtype=F32)
        shape, rank = t.shape, t.rank
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "view", "permute", "slice", "expand", "select"]))
        if kind == "unary":
            op = draw(st.sampled_from(_UNARY))
            attrs = {"approximate": "tanh"} if op == "gelu" and draw(st.booleans()) else {}
            cur = b.op(op, cur, **attrs)
        elif kind == "binary":
            # The other operand: this value, or a new input that broadcasts against it.
            if draw(st.booleans()):
                other = cur
            else:
                keep = draw(st.integers(0, rank))
                other_shape = [1 if draw(st.booleans()) else d for d in shape[rank - keep:]]
                other = b.input(f"y{n_inputs}", T(F32, *other_shape))
                n_inputs += 1
            a, c = (cur, other) if draw(st.booleans()) else (other, cur)
            cur = b.op(draw(st.sampled_from(_BINARY)), a, c)
        elif kind == "reduce" and rank:
            op = draw(st.sampled_from(_REDUCE))
            keepdim = draw(st.booleans())
            if op in ("argmax", "argmin"):
                cur = b.op(op, cur, dim=draw(st.integers(-rank, rank - 1)), keepdim=keepdim)
            else:
                picked = draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
                negative = draw(st.booleans())  # spell them -1, -2, ... sometimes
                cur = b.op(op, cur, dims=[d - rank if negative else d for d in picked], keepdim=keepdim)
        elif kind == "view":
            if rank >= 2 and draw(st.booleans()):  # merge the last two dims
                new = list(shape[:-2]) + [shape[-2] * shape[-1]]
            elif draw(st.booleans()):  # flatten
                new = [math.prod(shape)]
            else:  # a new size-1 dim
                at = draw(st.integers(0, rank))
                new = list(shape[:at]) + [1] + list(shape[at:])
            cur = b.op("view", cur, shape=new)
        elif kind == "permute" and rank:
            cur = b.op("permute", cur, dims=draw(st.permutations(range(rank))))
        elif kind == "slice" and rank:
            dim = draw(st.integers(0, rank - 1))
            if _size(shape[dim]) >= 3:  # so that no size reaches 0
                cur = b.op("slice", cur, dim=dim, start=draw(st.integers(0, 1)), step=draw(st.integers(1, 2)))
        elif kind == "expand":
            sizes = [2, S0] if S0 in dims else [2]  # s0 only where an input binds it
            new = [draw(st.sampled_from(sizes)) if d == 1 else d for d in shape]
            cur = b.op("expand", cur, shape=([2] if draw(st.booleans()) else []) + new)
        elif kind == "select" and rank:
            dim = draw(st.integers(0, rank - 1))
            cur = b.op("select", cur, dim=dim, index=draw(st.sampled_from([0, -1])))
        if draw(st.booleans()):
            outputs.append(cur)
    return b.build([*outputs, cur])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_random_chains_round_trip(g):
    check_round_trip(g, sizes=SIZES)
