"""The matmul template against eager, in Triton's interpreter: shapes, strides, dtypes, epilogues."""

import pytest
import torch

from mlc.codegen.templates import CodegenError, generate
from mlc.ir import parse, verify
from mlc.runtime.plan import KernelLaunch
from mlc.ir.reference import run_reference

NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def run(text, inputs, dtype):
    body = verify(parse(text))
    launch = KernelLaunch(body, interpret=True)
    got = launch(inputs, {})
    want = run_reference(body, inputs)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, atol=TOL[dtype], rtol=TOL[dtype])
    return launch.source


@pytest.mark.parametrize("m,k,n", [(1, 40, 24), (5, 7, 3), (33, 40, 17), (16, 64, 32)], ids=str)
@pytest.mark.parametrize("dtype", list(NAMES), ids=list(NAMES.values()))
@pytest.mark.parametrize("layout", ["nn", "nt", "tn"])
def test_mm_shapes_layouts_dtypes(m, k, n, dtype, layout):
    t = NAMES[dtype]
    a_decl, a_view = (f"%a: {t}[{m},{k}]", "") if layout[0] == "n" else \
        (f"%a: {t}[{k},{m}]", f"%a2 = permute(%a) {{dims=[1, 0]}} : {t}[{m},{k}]")
    b_decl, b_view = (f"%b: {t}[{k},{n}]", "") if layout[1] == "n" else \
        (f"%b: {t}[{n},{k}]", f"%b2 = permute(%b) {{dims=[1, 0]}} : {t}[{k},{n}]")
    a_name, b_name = ("%a2" if a_view else "%a"), ("%b2" if b_view else "%b")
    text = f"""graph @k({a_decl}, {b_decl}, %bias: {t}[{n}]) {{
      {a_view}
      {b_view}
      %0 = mm({a_name}, {b_name}) : {t}[{m},{n}]
      %1 = add(%0, %bias) : {t}[{m},{n}]
      return %1
    }}"""
    a = torch.randn(*((m, k) if layout[0] == "n" else (k, m))).to(dtype)
    b = torch.randn(*((k, n) if layout[1] == "n" else (n, k))).to(dtype)
    src = run(text, [a, b, torch.randn(n).to(dtype)], dtype)
    assert "tl.dot" in src.source and src.kind == "matmul"


EPILOGUES = {
    "bias": "%1 = add(%0, %bias) : f32[9,12]",
    "scale": "%s = full {shape=[], value=0.125, dtype=f32} : f32[]\n%1 = mul(%0, %s) : f32[9,12]",
    "relu": "%1 = relu(%0) : f32[9,12]",
    "gelu": "%1 = gelu(%0) : f32[9,12]",
    "gelu_tanh": '%1 = gelu(%0) {approximate="tanh"} : f32[9,12]',
    "silu": "%1 = silu(%0) : f32[9,12]",
    "sigmoid": "%1 = sigmoid(%0) : f32[9,12]",
    "tanh": "%1 = tanh(%0) : f32[9,12]",
    "residual": "%1 = add(%res, %0) : f32[9,12]",
    "cast": "%c = convert(%0) {dtype=f16} : f16[9,12]\n%1 = convert(%c) {dtype=f32} : f32[9,12]",
}


@pytest.mark.parametrize("epilogue", sorted(EPILOGUES))
def test_each_epilogue(epilogue):
    text = f"""graph @k(%a: f32[9,20], %b: f32[20,12], %bias: f32[12], %res: f32[9,12]) {{
      %0 = mm(%a, %b) : f32[9,12]
      {EPILOGUES[epilogue]}
      return %1
    }}"""
    src = run(text, [torch.randn(9, 20), torch.randn(20, 12), torch.randn(12), torch.randn(9, 12)], torch.float32)
    assert src.name.startswith("fused_mm")


@pytest.mark.parametrize("dtype", list(NAMES), ids=list(NAMES.values()))
def test_batched_and_broadcast_batched(dtype):
    t = NAMES[dtype]
    text = f"""graph @k(%q: {t}[3,5,16], %kt: {t}[3,16,7], %w: {t}[1,16,7]) {{
      %0 = bmm(%q, %kt) : {t}[3,5,7]
      %1 = expand(%w) {{shape=[3, 16, 7]}} : {t}[3,16,7]
      %2 = bmm(%q, %1) : {t}[3,5,7]
      %3 = mul(%0, %2) : {t}[3,5,7]
      return %3
    }}"""
    inputs = [torch.randn(3, 5, 16).to(dtype), torch.randn(3, 16, 7).to(dtype), torch.randn(1, 16, 7).to(dtype)]
    src = run(text, inputs, dtype)
    assert "pid_b = tl.program_id(1)" in src.source and src.source.count("tl.dot(") == 2


def test_swiglu_pair_shares_the_a_tile():
    text = """graph @k(%x: f16[2,3,32], %w1: f16[24,32], %w3: f16[24,32]) {
      %0 = view(%x) {shape=[6, 32]} : f16[6,32]
      %1 = permute(%w1) {dims=[1, 0]} : f16[32,24]
      %2 = mm(%0, %1) : f16[6,24]
      %3 = permute(%w3) {dims=[1, 0]} : f16[32,24]
      %4 = mm(%0, %3) : f16[6,24]
      %5 = silu(%2) : f16[6,24]
      %6 = mul(%5, %4) : f16[6,24]
      return %6
    }"""
    inputs = [torch.randn(2, 3, 32).half(), torch.randn(24, 32).half(), torch.randn(24, 32).half()]
    src = run(text, inputs, torch.float16).source
    assert src.count("tl.load(in0_ptr") == 1 and src.count("tl.dot(") == 2


def test_operand_computed_in_the_kernel_is_refused():
    with pytest.raises(CodegenError, match="operand computed in the kernel"):
        generate(verify(parse("""graph @k(%a: f32[4,4], %b: f32[4,4]) {
          %0 = exp(%a) : f32[4,4]
          %1 = mm(%0, %b) : f32[4,4]
          return %1
        }""")))


@pytest.mark.parametrize("m,k,n,keepdim", [(1, 8, 5, True), (33, 40, 17, True), (130, 16, 24, False),
                                            (0, 8, 5, False)], ids=str)
def test_a_column_sum_of_the_epilogue_is_added_atomically(m, k, n, keepdim):
    # a backward's bias gradient: the epilogue's value and its sum over the rows, one kernel
    # (several row blocks of programs add into the zeroed sum when m is past one tile)
    out = f"f32[1,{n}]" if keepdim else f"f32[{n}]"
    src = run(f"""graph @k(%dy: f32[{m},{k}], %w: f32[{k},{n}], %h: f32[{m},{n}]) {{
          %0 = mm(%dy, %w) : f32[{m},{n}]
          %1 = mul(%0, %h) : f32[{m},{n}]
          %2 = sum(%1) {{dims=[0], keepdim={str(keepdim).lower()}}} : {out}
          return %1, %2
        }}""", [torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)], torch.float32)
    assert src.params["zeroed"] == [1] and "tl.atomic_add(out1_ptr" in src.source


@pytest.mark.parametrize("reduction,why", [
    ("%2 = sum(%1) {dims=[1]} : f32[8]", "other dims than a column"),
    ("%2 = amax(%1) {dims=[0]} : f32[8]", "'amax'"),
    ("%2 = sum(%1) {dims=[0]} : f16[8]", "column sum"),
])
def test_other_reductions_in_a_matmul_are_refused(reduction, why):
    dtype = "f16" if "f16[8]" in reduction else "f32"
    with pytest.raises(CodegenError, match=f"a matmul and a reduction in one kernel .*{why}"):
        generate(verify(parse(f"""graph @k(%a: {dtype}[8,8], %b: {dtype}[8,8]) {{
          %0 = mm(%a, %b) : {dtype}[8,8]
          %1 = exp(%0) : {dtype}[8,8]
          {reduction}
          return %1, %2
        }}""")))


def test_a_column_sum_through_a_view_of_the_result():
    # a norm's weight gradient: the [16, 24] result seen as [2, 8, 24], summed over batch and sequence
    src = run("""graph @k(%dy: f32[16,40], %w: f32[40,24], %h: f32[2,8,24]) {
          %0 = mm(%dy, %w) : f32[16,24]
          %1 = view(%0) {shape=[2,8,24]} : f32[2,8,24]
          %2 = mul(%1, %h) : f32[2,8,24]
          %3 = sum(%2) {dims=[0,1]} : f32[24]
          %4 = sum(%1) {dims=[1,0], keepdim=true} : f32[1,1,24]
          return %3, %4, %1
        }""", [torch.randn(16, 40), torch.randn(40, 24), torch.randn(2, 8, 24)], torch.float32)
    assert src.params["zeroed"] == [0, 1]
