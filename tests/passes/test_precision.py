"""Precision lowering (``lower_precision``, ``narrow_storage``) and int8 weights (``quantize_weights``).

Pass tests are IR text in, IR text out; the end-to-end tests compile zoo models with each
``precision`` mode and check them against fp32 eager within the README's tolerances.
"""

import dataclasses
import re
import textwrap
import warnings

import pytest
import torch

import mlc
from mlc.ir import parse, verify
from mlc.options import make_options
from mlc.passes import (bind, eliminate_dead_code, fuse, lower_precision, narrow_storage, quantize_weights,
                        run_passes)
from mlc.passes.quantize_weights import quantize_int8
from mlc.ir.reference import example_inputs, run_reference
from mlc.testing.models import MODELS
from tests.irtext import assert_ir, run_on_text

MLP_IR = """
    graph @f(%x: f32[8,16], %w: f32[32,16], %b: f32[32]) {
      %t = permute(%w) {dims=[1, 0]} : f32[16,32]
      %y = mm(%x, %t) : f32[8,32]
      %z = add(%y, %b) : f32[8,32]
      %r = relu(%z) : f32[8,32]
      %s = sum(%r) {dims=[1], keepdim=true} : f32[8,1]
      %o = div(%r, %s) : f32[8,32]
      return %o
    }"""


def test_bf16_casts_matmul_operands_and_casts_the_result_back():
    """An operand read through a view (the weight's transpose) is cast before the view."""
    assert_ir(run_on_text(MLP_IR, bind(lower_precision, precision="bf16"), eliminate_dead_code), """
        graph @f(%x: f32[8,16], %w: f32[32,16], %b: f32[32]) {
          %x1 = convert(%x) {dtype=bf16} : bf16[8,16]
          %w1 = convert(%w) {dtype=bf16} : bf16[32,16]
          %t1 = permute(%w1) {dims=[1, 0]} : bf16[16,32]
          %y1 = mm(%x1, %t1) : bf16[8,32]
          %y = convert(%y1) {dtype=f32} : f32[8,32]
          %z = add(%y, %b) : f32[8,32]
          %r = relu(%z) : f32[8,32]
          %s = sum(%r) {dims=[1], keepdim=true} : f32[8,1]
          %o = div(%r, %s) : f32[8,32]
          return %o
        }""")


def test_lower_precision_from_the_pass_pipeline_text_lowers():
    """``lower_precision{precision=bf16}`` (mlc opt's syntax) is the bound pass, not the default one."""
    from mlc.passes import PASSES, parse_pipeline

    parsed = parse_pipeline("lower_precision{precision=bf16},eliminate_dead_code", PASSES)
    got = run_on_text(MLP_IR, *parsed)
    assert got == run_on_text(MLP_IR, bind(lower_precision, precision="bf16"), eliminate_dead_code)
    assert "mm(%0, %2) : bf16[8,32]" in got and got != run_on_text(MLP_IR, lower_precision, eliminate_dead_code)


def test_tf32_marks_fp32_matmuls_and_leaves_fp16_ones():
    assert_ir(run_on_text("""
        graph @f(%a: f32[4,8], %b: f32[8,2], %c: f16[2,4,8], %d: f16[2,8,2]) {
          %y = mm(%a, %b) : f32[4,2]
          %z = bmm(%c, %d) : f16[2,4,2]
          return %y, %z
        }""", bind(lower_precision, precision="tf32")), """
        graph @f(%a: f32[4,8], %b: f32[8,2], %c: f16[2,4,8], %d: f16[2,8,2]) {
          %y = mm(%a, %b) {precision="tf32"} : f32[4,2]
          %z = bmm(%c, %d) : f16[2,4,2]
          return %y, %z
        }""")


def test_default_precision_changes_nothing():
    assert run_on_text(MLP_IR, lower_precision, narrow_storage) == run_on_text(MLP_IR)


def test_tensors_between_kernels_are_stored_in_the_lower_type():
    """The matmul kernel stores bf16; the softmax-like kernel casts it back as it loads."""
    got = run_on_text(MLP_IR, bind(lower_precision, precision="bf16"), fuse,
                      bind(narrow_storage, precision="bf16"), eliminate_dead_code)
    assert_ir(got, """
        graph @f(%x: f32[8,16], %w: f32[32,16], %b: f32[32]) {
          %0 = kernel @fused_convert_mm_add_relu(%x, %w, %b) : bf16[8,32] {
            %1 = convert(%x) {dtype=bf16} : bf16[8,16]
            %2 = convert(%w) {dtype=bf16} : bf16[32,16]
            %3 = permute(%2) {dims=[1, 0]} : bf16[16,32]
            %4 = mm(%1, %3) : bf16[8,32]
            %5 = convert(%4) {dtype=f32} : f32[8,32]
            %6 = add(%5, %b) : f32[8,32]
            %7 = relu(%6) : f32[8,32]
            %8 = convert(%7) {dtype=bf16} : bf16[8,32]
            yield %8
          }
          %9 = kernel @fused_convert_sum_div(%0) : f32[8,32] {
            %10 = convert(%0) {dtype=f32} : f32[8,32]
            %11 = sum(%10) {dims=[1], keepdim=true} : f32[8,1]
            %12 = div(%10, %11) : f32[8,32]
            yield %12
          }
          return %9
        }""")


def test_graph_outputs_and_aten_operands_keep_fp32():
    got = run_on_text("""
        graph @f(%x: f32[8,16]) {
          %e = exp(%x) : f32[8,16]
          %s = sum(%e) {dims=[1], keepdim=true} : f32[8,1]
          %c = aten(%e) {target="aten.cumsum.default", args=[$0, 1]} : f32[8,16]
          return %s, %c
        }""", fuse, bind(narrow_storage, precision="fp16"))
    assert "f16" not in got


def test_unknown_precision_is_a_value_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match="valid precisions: default, tf32, bf16, fp16"):
        lower_precision(parse(textwrap.dedent(MLP_IR)), precision="int4")
    with pytest.raises(ValueError, match="'default', 'tf32', 'bf16', 'fp16'"):
        make_options(options={"precision": "fp8"})
    with pytest.raises(ValueError, match="'int8-weight'"):
        make_options(options={"quantize": "int4"})


def test_quantized_weight_is_int8_with_per_column_scales():
    w = torch.randn(16, 32)
    graph = verify(dataclasses.replace(parse(textwrap.dedent("""
        graph @f(%x: f32[8,16]) {
          %w = constant : f32[16,32]
          %y = mm(%x, %w) : f32[8,32]
          return %y
        }""")), constants={"w": w}))
    after = run_passes(graph, [bind(quantize_weights, quantize="int8-weight"), eliminate_dead_code], verify_each=True)
    assert_ir(str(after), """
        graph @f(%x: f32[8,16]) {
          %w_int8 = constant : i8[16,32]
          %w_scale = constant : f32[32]
          %d = convert(%w_int8) {dtype=f32} : f32[16,32]
          %y0 = mm(%x, %d) : f32[8,32]
          %y = mul(%y0, %w_scale) : f32[8,32]
          return %y
        }""")
    q, scale = after.constants["w_int8"], after.constants["w_scale"]
    assert q.dtype == torch.int8 and q.abs().amax(dim=0).eq(127).all()
    torch.testing.assert_close(scale, w.abs().amax(dim=0) / 127)
    # Against the dequantized weight, the result is exact up to fp32 rounding; against the
    # original, within half a quantization step per element.
    args = example_inputs(graph)
    (y,) = run_reference(after, args)
    torch.testing.assert_close(y, args[0] @ (q.float() * scale), rtol=1e-5, atol=1e-5)
    assert (q.float() * scale - w).abs().le(scale / 2 + 1e-7).all()
    assert any(n.startswith("quantized int8: w f32[16,32]") for n in after.notes)


def test_quantize_int8_keeps_zero_columns_finite():
    q, scale = quantize_int8(torch.zeros(4, 3))
    assert scale.eq(1).all() and q.eq(0).all()


# --- end to end ---------------------------------------------------------------------------

# Largest relative error (max |mlc - eager| / max |eager|) each mode may have against fp32
# eager on the zoo models; the README's options section lists the same numbers.
TOLERANCE = {"default": 1e-5, "tf32": 1e-5, "bf16": 2e-2, "fp16": 4e-3}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def rel_err(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.mark.parametrize("model", ["mlp", "gpt2_block", "llama_block"])
@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
def test_inference_in_each_precision_matches_fp32_eager(model, precision):
    module, inputs = MODELS[model].build(batch=2)
    with torch.no_grad():
        expected = module(*inputs)
        report = mlc.explain(module, *inputs, precision=precision)
        torch._dynamo.reset()
        out = torch.compile(module, backend="mlc", options={"precision": precision})(*inputs)
    assert out.dtype == expected.dtype == torch.float32
    assert rel_err(out, expected) < TOLERANCE[precision]
    kernels = [k.name for k in report.kernels]
    assert not any(name == "fused_convert" for name in kernels), "a cast ran as a kernel of its own"
    (graph,) = report.graphs
    if precision in ("bf16", "fp16"):
        low = "bf16" if precision == "bf16" else "f16"
        assert any(note.startswith(f"stored as {precision}") for note in graph.notes) or model == "mlp"
        # Frozen weights were cast at compile time: weight matrices are constants in the lower
        # type (biases, norm weights and RoPE tables, which no matmul reads, stay fp32).
        assert f"constant : {low}[" in graph.ir and not re.search(r"weight\S* = constant : f32\[\d+,", graph.ir)


def test_bf16_moves_fewer_bytes_than_fp32():
    module, inputs = MODELS["gpt2_block"].build(batch=2)
    with torch.no_grad():
        fp32 = mlc.explain(module, *inputs)
        bf16 = mlc.explain(module, *inputs, precision="bf16")
    assert bf16.launches == fp32.launches
    assert bf16.bytes < 0.65 * fp32.bytes


def test_training_in_bf16_matches_fp32_gradients():
    module, inputs = MODELS["mlp"].build(batch=4, train=True)
    reference = MODELS["mlp"].build(batch=4, train=True)[0]
    compiled = torch.compile(module, backend="mlc", options={"precision": "bf16"})
    out, expected = compiled(*inputs), reference(*inputs)
    assert out.dtype == torch.float32 and rel_err(out, expected) < TOLERANCE["bf16"]
    out.square().mean().backward()
    expected.square().mean().backward()
    for (name, p), q in zip(module.named_parameters(), reference.parameters()):
        assert p.grad.dtype == torch.float32
        assert rel_err(p.grad, q.grad) < 3e-2, name


def test_int8_weights_match_the_dequantized_model():
    module, inputs = MODELS["mlp"].build(batch=2)
    dequantized = MODELS["mlp"].build(batch=2)[0]
    with torch.no_grad():
        for m in dequantized.modules():
            if isinstance(m, torch.nn.Linear):
                q, scale = quantize_int8(m.weight.t())
                m.weight.copy_((q.float() * scale).t())
        expected = dequantized(*inputs)
        out = torch.compile(module, backend="mlc", options={"quantize": "int8-weight"})(*inputs)
        torch._dynamo.reset()
        plain = mlc.explain(module, *inputs)
        int8 = mlc.explain(module, *inputs, quantize="int8-weight")
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    assert int8.bytes < plain.bytes
    assert "i8[" in int8.graphs[0].ir


def test_int8_on_a_training_graph_warns_and_leaves_weights_alone():
    module, inputs = MODELS["mlp"].build(batch=2, train=True)
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        out = torch.compile(module, backend="mlc", options={"quantize": "int8-weight"})(*inputs)
    assert any("unquantized" in str(w.message) and "training graphs are never frozen" in str(w.message)
               for w in log)
    torch.testing.assert_close(out, module(*inputs))


def test_explain_reports_the_error_of_each_precision_against_fp32_eager():
    module, inputs = MODELS["mlp"].build(batch=2)
    with torch.no_grad():
        exact = mlc.explain(module, *inputs).accuracy
        low = mlc.explain(module, *inputs, precision="bf16").accuracy
    assert exact.outputs == low.outputs == 1
    assert exact.max_rel < TOLERANCE["default"] and 1e-4 < low.max_rel < TOLERANCE["bf16"]
    assert low.max_abs > exact.max_abs
    assert f"error against eager: {low}" in str(mlc.explain(module, *inputs, precision="bf16"))
