"""Constant folding, as IR text in and out; folded graphs compute what the originals did."""

import dataclasses
import textwrap

import torch

from mlc.ir import parse, verify
from mlc.passes import bind, eliminate_dead_code, fold_constants, run_passes
from mlc.passes.fold_constants import FOLD_LIMIT
from mlc.options import make_options
from mlc.ir.reference import example_inputs, run_reference
from tests.irtext import assert_ir, run_on_text


def folded(text: str, constants: dict | None = None, limit: float = FOLD_LIMIT.default):
    """(graph before, graph after fold_constants + DCE), constants attached by name."""
    graph = parse(textwrap.dedent(text))
    graph = verify(dataclasses.replace(graph, constants=dict(constants or {})))
    fold = bind(fold_constants, fold_limit=limit)
    return graph, run_passes(graph, [fold, eliminate_dead_code], verify_each=True)


def assert_same_results(before, after):
    """The folded graph computes what the original did, within the dtype's tolerance: a folded
    weight is a contiguous tensor where the original read a transposed or concatenated view, so
    a matmul over it may sum in another order (BLAS picks its kernel by layout)."""
    args = example_inputs(before)
    for a, b in zip(run_reference(before, args), run_reference(after, args)):
        torch.testing.assert_close(b, a)


W = torch.randn(8, 4)


def test_weight_transpose_and_cast_fold_into_one_constant():
    before, after = folded("""
        graph @f(%x: f16[8,2]) {
          %w = constant : f32[8,4]
          %t = permute(%w) {dims=[1, 0]} : f32[4,8]
          %h = convert(%t) {dtype=f16} : f16[4,8]
          %y = mm(%h, %x) : f16[4,2]
          return %y
        }""", {"w": W})
    assert_ir(str(after), """
        graph @f(%x: f16[8,2]) {
          %w_convert = constant : f16[4,8]
          %y = mm(%w_convert, %x) : f16[4,2]
          return %y
        }""")
    assert torch.equal(after.constants["w_convert"], W.t().half())
    assert after.constants["w_convert"].is_contiguous()
    assert_same_results(before, after)


def test_qkv_concatenation_folds():
    q, k, v = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    before, after = folded("""
        graph @f(%x: f32[3,8]) {
          %q = constant : f32[4,8]
          %k = constant : f32[4,8]
          %v = constant : f32[4,8]
          %w = cat(%q, %k, %v) : f32[12,8]
          %t = permute(%w) {dims=[1, 0]} : f32[8,12]
          %y = mm(%x, %t) : f32[3,12]
          return %y
        }""", {"q": q, "k": k, "v": v})
    assert after.count("cat") == 0 and after.count("permute") == 0 and after.count("constant") == 1
    assert_same_results(before, after)


def test_batchnorm_scale_folds_into_one_vector():
    var, weight = torch.rand(8) + 0.5, torch.randn(8)
    before, after = folded("""
        graph @f(%x: f32[2,8,4,4]) {
          %var = constant : f32[8]
          %weight = constant : f32[8]
          %eps = full {shape=[], value=1e-05, dtype=f32} : f32[]
          %0 = add(%var, %eps) : f32[8]
          %1 = rsqrt(%0) : f32[8]
          %2 = mul(%1, %weight) : f32[8]
          %3 = view(%2) {shape=[8, 1, 1]} : f32[8,1,1]
          %4 = mul(%x, %3) : f32[2,8,4,4]
          return %4
        }""", {"var": var, "weight": weight})
    assert_ir(str(after), """
        graph @f(%x: f32[2,8,4,4]) {
          %var_view = constant : f32[8,1,1]
          %4 = mul(%x, %var_view) : f32[2,8,4,4]
          return %4
        }""")
    assert_same_results(before, after)


def test_scalar_arithmetic_folds_into_a_full():
    got = run_on_text("""
        graph @f(%x: f32[s0,8]) {
          %a = full {shape=[], value=2.0, dtype=f32} : f32[]
          %b = full {shape=[], value=3.0, dtype=f32} : f32[]
          %c = mul(%a, %b) : f32[]
          %d = sqrt(%c) : f32[]
          %y = div(%x, %d) : f32[s0,8]
          return %y
        }""", fold_constants, eliminate_dead_code)
    assert_ir(got, f"""
        graph @f(%x: f32[s0,8]) {{
          %d = full {{shape=[], value={float(torch.tensor(6.0).sqrt())!r}, dtype=f32}} : f32[]
          %y = div(%x, %d) : f32[s0,8]
          return %y
        }}""")


def test_broadcast_of_a_full_stays_a_full_of_any_size():
    got = run_on_text("""
        graph @f(%x: f32[64,64]) {
          %a = full {shape=[], value=2.0, dtype=f32} : f32[]
          %b = expand(%a) {shape=[64, 64]} : f32[64,64]
          %c = neg(%b) : f32[64,64]
          %y = add(%x, %c) : f32[64,64]
          return %y
        }""", fold_constants, eliminate_dead_code)
    assert_ir(got, """
        graph @f(%x: f32[64,64]) {
          %c = full {shape=[64, 64], value=-2.0, dtype=f32} : f32[64,64]
          %y = add(%x, %c) : f32[64,64]
          return %y
        }""")


def test_size_guard_keeps_a_broadcast_constant_computed():
    text = """
        graph @f(%x: f32[16,8]) {
          %b = constant : f32[8]
          %e = expand(%b) {shape=[16, 8]} : f32[16,8]
          %c = exp(%e) : f32[16,8]
          %y = add(%x, %c) : f32[16,8]
          return %y
        }"""
    b = torch.randn(8)
    before, after = folded(text, {"b": b})
    assert str(after) == str(before)  # 128 elements from 8: more than 2x
    _, bigger_limit = folded(text, {"b": b}, limit=16)
    assert bigger_limit.count("exp") == 0 and bigger_limit.count("constant") == 1
    assert_same_results(before, bigger_limit)
    _, off = folded(text, {"b": b}, limit=0)
    assert str(off) == str(before)


def test_arange_expansions_stay_computed():
    text = """
        graph @f(%x: f32[8,8]) {
          %0 = arange {end=8, dtype=i64} : i64[8]
          %1 = view(%0) {shape=[1, 8]} : i64[1,8]
          %2 = view(%0) {shape=[8, 1]} : i64[8,1]
          %3 = sub(%1, %2) : i64[8,8]
          %4 = full {shape=[], value=1, dtype=i64} : i64[]
          %5 = ge(%3, %4) : b8[8,8]
          %6 = full {shape=[], value=-inf, dtype=f32} : f32[]
          %7 = where(%5, %6, %x) : f32[8,8]
          return %7
        }"""
    before, after = folded(text)
    assert str(after) == str(before)


def test_reduction_of_a_constant_folds():
    before, after = folded("""
        graph @f(%x: f32[4]) {
          %w = constant : f32[8,4]
          %s = sum(%w) {dims=[0]} : f32[4]
          %y = mul(%x, %s) : f32[4]
          return %y
        }""", {"w": W})
    assert after.count("sum") == 0
    assert_same_results(before, after)


def test_not_folded_outputs_random_ops_and_symbolic_shapes():
    text = """
        graph @f(%x: f32[s0,4]) {
          %w = constant : f32[8,4]
          %t = permute(%w) {dims=[1, 0]} : f32[4,8]
          %r = aten(%w) {target="aten.bernoulli.p", args=[$0, 0.5]} : f32[8,4]
          %n = full {shape=[s0, 4], value=1.0, dtype=f32} : f32[s0,4]
          %e = exp(%n) : f32[s0,4]
          %y = add(%x, %e) : f32[s0,4]
          return %t, %r, %y
        }"""
    before, after = folded(text, {"w": W})
    # The output %t stays computed (the caller may write to it); bernoulli draws; %e becomes a
    # full (its value is known), with its symbolic shape.
    assert after.count("permute") == 1 and after.count("aten") == 1 and after.count("exp") == 0
    assert "value=2.718281" in str(after)


def test_parsed_constants_without_tensors_are_left_alone():
    got = run_on_text("""
        graph @f(%x: f32[4,8]) {
          %w = constant : f32[8,4]
          %t = permute(%w) {dims=[1, 0]} : f32[4,8]
          %y = add(%x, %t) : f32[4,8]
          return %y
        }""", fold_constants)
    assert "permute" in got


def test_fold_limit_default_is_the_option_default():
    assert make_options().fold_limit == FOLD_LIMIT.default


def test_values_folded_while_aot_autograd_traces_are_real_tensors():
    # AOT autograd compiles under a FakeTensorMode: a folded constant (here the negation of an
    # empty arange, as a training graph over empty inputs has) must still be a real tensor,
    # which kernels can launch with (fuzz seed 21083 crashed on a fake one)
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    graph = verify(parse(textwrap.dedent("""
        graph @g(%x: f32[0]) {
          %a = arange {end=0, dtype=f32} : f32[0]
          %0 = neg(%a) : f32[0]
          %1 = mul(%x, %0) : f32[0]
          return %1
        }""")))
    with FakeTensorMode():
        after = run_passes(graph, [fold_constants, eliminate_dead_code], verify_each=True)
    assert after.constants and not any(isinstance(t, FakeTensor) for t in after.constants.values())
