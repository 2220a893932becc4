"""One test per kind of broken graph; each pins the verifier's message.

Broken graphs are put together from ``Node`` and ``Graph`` directly where ``GraphBuilder``
would refuse (it infers types, so it cannot make most of these mistakes).
"""

from __future__ import annotations

import re

import pytest
import sympy
import torch

from mlc.ir import Graph, GraphBuilder, Node, Operand, SymType, TensorType, Value, VerifyError, verify

F32, F16, I64, B8 = torch.float32, torch.float16, torch.int64, torch.bool
S0, S1 = (sympy.Symbol(n, integer=True, positive=True) for n in ("s0", "s1"))


def T(dtype, *shape, strides=None) -> TensorType:
    return TensorType(shape, dtype, strides=strides)


def inp(name="x", t=None) -> Node:
    return Node("input", (), {}, (t or T(F32, 4, 8),), name)


def node(op, *inputs, types=None, attrs=None, name=None) -> Node:
    return Node(op, [v.out if isinstance(v, Node) else v for v in inputs], attrs or {},
                types if types is not None else (T(F32, 4, 8),), name)


def graph(inputs, nodes, outputs=None, constants=None, name="g") -> Graph:
    if outputs is None:
        outputs = [nodes[-1].results[0]] if nodes else []
    return Graph(name, tuple(inputs), tuple(nodes), tuple(outputs), constants or {})


def broken(g: Graph, message: str):
    with pytest.raises(VerifyError, match=message) as info:
        verify(g)
    return str(info.value)


def test_a_valid_graph_passes_and_is_returned():
    b = GraphBuilder("ok")
    x = b.input("x", T(F32, S0, 8))
    w = b.constant("w", torch.ones(8, 4))
    y = b.op("sum", b.op("mm", x, w), dims=[1])
    g = b.build([y, b.add("symint", (), {"expr": 2 * S0}).out])
    assert verify(g) is g


# --- operands ---------------------------------------------------------------------------


def test_operand_used_before_its_definition():
    x = inp()
    a = node("exp", x)
    c = node("neg", a)
    broken(graph([x], [c, a], [c.out]), re.escape("%0 = neg: operand 0 is defined later (not in SSA order)"))


def test_operand_from_another_graph():
    b = GraphBuilder("other")
    foreign = b.op("exp", b.input("x", T(F32, 4, 8)))
    x = inp()
    c = node("add", x, foreign)
    broken(graph([x], [c]), re.escape("%0 = add: operand 1 is not defined in this graph"))


def test_operand_is_an_input_of_another_graph():
    x, other = inp(), inp()
    broken(graph([x], [node("exp", other)]), re.escape("%0 = exp: operand 0 is not defined in this graph"))


def test_operand_names_a_result_the_node_does_not_have():
    x = inp()
    a = node("exp", x)
    c = Node("neg", [Value(a, 1)], {}, (T(F32, 4, 8),))
    broken(graph([x], [a, c]), re.escape("%1 = neg: operand 0 is result 1 of a exp node with 1 results"))


def test_wrong_arity():
    x = inp()
    broken(graph([x], [node("add", x)]), re.escape("%0 = add: takes 2 operands, got 1"))
    broken(graph([x], [node("exp", x, x)]), re.escape("%0 = exp: takes 1 operands, got 2"))


# --- ops and attributes -----------------------------------------------------------------


def test_unknown_op():
    x = inp()
    broken(graph([x], [node("frobnicate", x)]), re.escape("%0 = frobnicate: unknown op 'frobnicate'"))


def test_input_node_in_the_body():
    x = inp()
    broken(graph([x], [inp("y")]), re.escape("%y = input: 'input' nodes belong in the graph's inputs, not its body"))


def test_graph_input_that_is_not_an_input_node():
    x = inp()
    broken(graph([node("exp", x)], []), re.escape("graph input %None must be an 'input' node with one type"))


def test_unknown_attribute():
    x = inp()
    broken(graph([x], [node("exp", x, attrs={"alpha": 2})]),
           re.escape("%0 = exp: unknown attribute 'alpha' (valid: none)"))
    broken(graph([x], [node("sum", x, attrs={"dim": 1}, types=(T(F32),))]),
           re.escape("%0 = sum: unknown attribute 'dim' (valid: dims, keepdim)"))


def test_missing_required_attribute():
    x = inp()
    broken(graph([x], [node("convert", x)]), re.escape("%0 = convert: missing required attribute 'dtype'"))
    broken(graph([x], [node("select", x, attrs={"dim": 0}, types=(T(F32, 8),))]),
           re.escape("%0 = select: missing required attribute 'index'"))


def test_attribute_value_of_a_bad_type():
    x = inp()
    broken(graph([x], [node("sum", x, attrs={"dims": (torch.tensor(1),)}, types=(T(F32, 4),))]),
           re.escape("%0 = sum: attribute value tensor(1) of type Tensor is not allowed"))
    broken(graph([x], [node("clamp", x, attrs={"min": {"lo": 0}})]),
           re.escape("%0 = clamp: attribute value {'lo': 0} of type dict is not allowed"))


def test_attribute_value_the_op_cannot_use():
    x = inp()
    broken(graph([x], [node("sum", x, attrs={"dims": (2,)}, types=(T(F32, 4),))]),
           re.escape("%0 = sum: dim 2 out of range for rank 2"))
    broken(graph([x], [node("sum", x, attrs={"dims": (1, -1)}, types=(T(F32, 4),))]),
           re.escape("%0 = sum: dims [1, -1] name a dim twice"))
    broken(graph([x], [node("permute", x, attrs={"dims": (0, 0)})]),
           re.escape("%0 = permute: (0, 0) is not a permutation of 2 dims"))


# --- result types -----------------------------------------------------------------------


def test_result_shape_disagrees_with_inference():
    x = inp()
    broken(graph([x], [node("exp", x, types=(T(F32, 4, 9),))]),
           re.escape("%0 = exp: result type f32[4,9] does not match the inferred f32[4,8]"))


def test_result_dtype_disagrees_with_inference():
    x = inp()
    broken(graph([x], [node("exp", x, types=(T(F16, 4, 8),))]),
           re.escape("%0 = exp: result type f16[4,8] does not match the inferred f32[4,8]"))
    broken(graph([x], [node("eq", x, x, types=(T(F32, 4, 8),))]),
           re.escape("%0 = eq: result type f32[4,8] does not match the inferred b8[4,8]"))


def test_wrong_number_of_results():
    x = inp()
    broken(graph([x], [node("exp", x, types=(T(F32, 4, 8), T(F32, 4, 8)))]),
           re.escape("%0, %1 = exp: result type f32[4,8], f32[4,8] does not match the inferred f32[4,8]"))
    broken(graph([x], [node("exp", x, types=())], []), re.escape("= exp: has no result types"))


def test_result_strides_do_not_matter_but_their_count_does():
    x = inp()
    verify(graph([x], [node("exp", x, types=(T(F32, 4, 8, strides=(1, 4)),))]))
    broken(graph([x], [node("exp", x, types=(T(F32, 4, 8, strides=(1,)),))]), re.escape("%0 = exp: 1 strides for rank 2"))
    broken(graph([inp("y", T(F32, 4, 8, strides=(8, 1, 1)))], []), re.escape("graph input %y: 3 strides for rank 2"))


def test_dtype_with_no_ir_name():
    x = inp("x", T(torch.complex128, 4))
    broken(graph([x], []), re.escape("graph input %x: dtype torch.complex128 has no IR name (known: f64, f32"))


def test_broadcasting_that_cannot_work():
    x, y = inp(), inp("y", T(F32, 3))
    broken(graph([x, y], [node("add", x, y)]), re.escape("%0 = add: shapes [(4, 8), (3,)] do not broadcast"))
    # Two different size symbols cannot be assumed equal.
    a, c = inp("a", T(F32, S0)), inp("c", T(F32, S1))
    broken(graph([a, c], [node("mul", a, c, types=(T(F32, S0),))]),
           re.escape("%0 = mul: shapes [(s0,), (s1,)] do not broadcast"))


def test_mm_with_mismatched_inner_dims():
    x, w = inp(), inp("w", T(F32, 4, 8))
    broken(graph([x, w], [node("mm", x, w)]), re.escape("%0 = mm: cannot multiply f32[4,8] by f32[4,8]"))


# --- outputs, symbols, duplicates -------------------------------------------------------


def test_output_not_defined():
    x = inp()
    stray = node("exp", x)
    broken(graph([x], [], [stray.out]), re.escape("output 0 is not defined in this graph"))
    broken(graph([x], [], [x.out, Value(x, 1)]), re.escape("output 1 is not defined in this graph"))
    broken(graph([x], [], ["%x"]), re.escape("output 0 is a str, not a Value"))


def test_size_symbol_not_bound_by_any_input():
    x = inp("x", T(F32, S0, 8))
    full = node("full", attrs={"shape": (S1,), "value": 0.0, "dtype": F32}, types=(T(F32, S1),))
    broken(graph([x], [full]), re.escape("%0 = full: size symbols ['s1'] are not bound by any graph input"))
    # s0 appears in an input, but only inside an expression: nothing binds it at run time.
    y = inp("y", T(F32, 2 * S0))
    broken(graph([y], []), re.escape("graph input %y: size symbols ['s0'] are not bound by any graph input"))
    sym = node("symint", attrs={"expr": S0 * S1}, types=(SymType(S0 * S1),))
    broken(graph([x], [sym]), re.escape("%0 = symint: size symbols ['s1'] are not bound by any graph input"))


def test_duplicated_node():
    x = inp()
    a = node("exp", x)
    broken(graph([x], [a, a]), re.escape("%0 = exp: node appears twice in the graph"))


def test_duplicated_input_node():
    x = inp()
    broken(graph([x], [x], [x.out]), re.escape("the name %x is given to two values"))


def test_two_values_with_one_name():
    x, y = inp(), inp("x", T(F32, 8))
    broken(graph([x, y], []), re.escape("the name %x is given to two values"))
    c = Node("constant", (), {}, (T(F32, 2),), "x")
    broken(graph([x], [c], [], {"x": torch.ones(2)}), re.escape("the name %x is given to two values"))


def test_names_the_text_form_cannot_carry():
    broken(graph([inp("my input")], []), re.escape("input name 'my input' is not a valid IR name"))
    broken(graph([inp("0")], []), re.escape("input name '0' is not a valid IR name"))
    broken(graph([], [], [], name="forward.0"), re.escape("graph name 'forward.0' is not a valid IR name"))


# --- constants --------------------------------------------------------------------------


def test_constant_with_no_tensor():
    a = Node("constant", (), {}, (T(F32, 2),), "a")
    c = Node("constant", (), {}, (T(F32, 3),), "c")
    broken(graph([], [a, c], [a.out, c.out], {"a": torch.ones(2)}),
           re.escape("constant %c has no tensor in graph.constants"))
    # A graph read from text has no tensors at all; that is allowed.
    verify(graph([], [a, c], [a.out, c.out]))


def test_constant_whose_tensor_does_not_match_its_type():
    a = Node("constant", (), {}, (T(F32, 2),), "a")
    broken(graph([], [a], [], {"a": torch.ones(3)}), re.escape("constant %a is typed f32[2] but its tensor is f32[3]"))
    broken(graph([], [a], [], {"a": torch.ones(2, dtype=I64)}),
           re.escape("constant %a is typed f32[2] but its tensor is i64[2]"))


def test_constant_shape_and_name_rules():
    nameless = Node("constant", (), {}, (T(F32, 2),))
    broken(graph([], [nameless], []), re.escape("constant name None is not a valid IR name"))
    two = Node("constant", (), {}, (T(F32, 2), T(F32, 2)), "two")
    broken(graph([], [two], []), re.escape("%0, %1 = constant: a constant has exactly one tensor result"))
    x = inp()
    fed = Node("constant", (x.out,), {}, (T(F32, 2),), "fed")
    broken(graph([x], [fed], []), re.escape("%fed = constant: takes 0 operands, got 1"))


# --- fallback nodes ---------------------------------------------------------------------


def aten(target, *inputs, args=None, kwargs=(), pick=None, types=None):
    attrs = {"target": target, "args": args if args is not None else tuple(Operand(i) for i in range(len(inputs))),
             "kwargs": kwargs, "pick": pick}
    return node("aten", *inputs, attrs=attrs, types=types)


def test_a_valid_fallback_node_passes():
    x = inp()
    n = aten("aten.sort.default", x, args=(Operand(0), -1), kwargs=(("stable", True),),
             types=(T(F32, 4, 8), T(I64, 4, 8)))
    verify(graph([x], [n], list(n.results)))


def test_fallback_target_not_of_the_right_form():
    x = inp()
    broken(graph([x], [aten("aten.sort", x)]),
           re.escape("%0 = aten: fallback target 'aten.sort' is not of the form namespace.op.overload"))


def test_fallback_target_that_does_not_exist():
    x = inp()
    broken(graph([x], [aten("aten.frobnicate.default", x)]),
           re.escape("%0 = aten: no ATen op named 'aten.frobnicate.default'"))
    broken(graph([x], [aten("aten.sort.nosuchoverload", x)]),
           re.escape("%0 = aten: no ATen op named 'aten.sort.nosuchoverload'"))


def test_fallback_target_that_is_not_a_string():
    x = inp()
    broken(graph([x], [aten(None, x)]), re.escape("%0 = aten: 'target' must be a string"))


def test_fallback_missing_target():
    x = inp()
    broken(graph([x], [node("aten", x, attrs={"args": (Operand(0),)})]),
           re.escape("%0 = aten: missing required attribute 'target'"))


def test_fallback_operand_not_used():
    x, y = inp(), inp("y")
    broken(graph([x, y], [aten("aten.neg.default", x, y, args=(Operand(0),))]),
           re.escape("%0 = aten: operands [0] are referenced but it has 2 inputs"))


def test_fallback_refers_to_an_operand_it_does_not_have():
    x = inp()
    broken(graph([x], [aten("aten.add.Tensor", x, args=(Operand(0), Operand(1)))]),
           re.escape("%0 = aten: operands [0, 1] are referenced but it has 1 inputs"))
    # Operands inside kwargs count.
    verify(graph([x], [aten("aten.add.Tensor", x, args=(Operand(0),), kwargs=(("other", Operand(0)),))]))


def test_fallback_kwargs_that_are_not_pairs():
    x = inp()
    broken(graph([x], [aten("aten.neg.default", x, kwargs=("alpha", 1))]),
           re.escape("""%0 = aten: 'kwargs' must be a list of ["name", value] pairs, got ["alpha", 1]"""))


def test_fallback_pick_that_does_not_match_the_results():
    x = inp()
    n = aten("aten.sort.default", x, pick=(0, 1), types=(T(F32, 4, 8),))
    broken(graph([x], [n]), re.escape("%0 = aten: 'pick' selects 2 results but the node has 1 types"))
