"""The pointwise and reduction templates against eager, in Triton's interpreter.

Each case is a region body in IR text; the kernel's outputs must equal the reference
executor's (which is eager torch, op by op) over odd shapes, size-1 dims, broadcasting,
non-contiguous inputs and all three float dtypes.
"""

import pytest
import sympy
import torch

from mlc.codegen.templates import CodegenError, generate
from mlc.ir import parse, verify
from mlc.runtime.plan import KernelLaunch
from mlc.ir.reference import run_reference

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3),
       torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}


def make_input(shape, dtype, layout, gen):
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if not dtype.is_floating_point:
        return torch.randint(0, 4, shape, generator=gen).to(dtype)  # valid as an index into any dim >= 4
    if layout == "transposed" and len(shape) >= 2:  # same shape, reversed strides
        return torch.randn(tuple(reversed(shape)), generator=gen).to(dtype).permute(*reversed(range(len(shape))))
    if layout == "sliced" and len(shape) >= 1:  # every other element along the last dim
        return torch.randn(*shape[:-1], shape[-1] * 2, generator=gen).to(dtype)[..., ::2]
    return torch.randn(shape, generator=gen).to(dtype)


def check(text, layout="contiguous", sizes=None, persistent_limit=4096, tol=None):
    body = verify(parse(text))
    sizes = sizes or {}
    env = {sympy.Symbol(k, integer=True, positive=True): v for k, v in sizes.items()}
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for node in body.inputs:
        t = node.types[0]
        shape = tuple(int(d.xreplace(env)) if isinstance(d, sympy.Expr) else d for d in t.shape)
        inputs.append(make_input(shape, t.dtype, layout, gen))
    launch = KernelLaunch(body, interpret=True, persistent_limit=persistent_limit)
    got = launch(inputs, env)
    want = run_reference(body, inputs)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        kw = tol or TOL.get(w.dtype, dict(atol=0, rtol=0))
        torch.testing.assert_close(g, w, equal_nan=True, **kw)
    return launch.source


POINTWISE = {
    "chain": """graph @k(%x: {t}[{a},{b}], %y: {t}[{b}]) {{
      %0 = add(%x, %y) : {t}[{a},{b}]
      %1 = gelu(%0) {{approximate="tanh"}} : {t}[{a},{b}]
      %2 = exp(%x) : {t}[{a},{b}]
      %3 = mul(%1, %2) : {t}[{a},{b}]
      return %3
    }}""",
    "where_compare_cast": """graph @k(%x: {t}[{a},{b}], %y: {t}[{a},1]) {{
      %0 = gt(%x, %y) : b8[{a},{b}]
      %1 = neg(%x) : {t}[{a},{b}]
      %2 = where(%0, %x, %1) : {t}[{a},{b}]
      %3 = convert(%2) {{dtype=f32}} : f32[{a},{b}]
      %4 = sigmoid(%3) : f32[{a},{b}]
      return %4, %0
    }}""",
    "views": """graph @k(%x: {t}[{a},{b}]) {{
      %0 = permute(%x) {{dims=[1, 0]}} : {t}[{b},{a}]
      %1 = relu(%0) : {t}[{b},{a}]
      %2 = view(%1) {{shape=[{n}]}} : {t}[{n}]
      %3 = silu(%2) : {t}[{n}]
      return %3
    }}""",
}
SHAPES = [(1, 1), (3, 5), (1, 9), (7, 1), (33, 65)]


@pytest.mark.parametrize("case", sorted(POINTWISE))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_pointwise(case, shape, dtype, layout):
    a, b = shape
    check(POINTWISE[case].format(t=dtype, a=a, b=b, n=a * b), layout)


REDUCTIONS = {
    "softmax": """graph @k(%x: {t}[{a},{b}]) {{
      %0 = convert(%x) {{dtype=f32}} : f32[{a},{b}]
      %1 = amax(%0) {{dims=[1], keepdim=true}} : f32[{a},1]
      %2 = sub(%0, %1) : f32[{a},{b}]
      %3 = exp(%2) : f32[{a},{b}]
      %4 = sum(%3) {{dims=[1], keepdim=true}} : f32[{a},1]
      %5 = div(%3, %4) : f32[{a},{b}]
      %6 = convert(%5) {{dtype={t}}} : {t}[{a},{b}]
      return %6
    }}""",
    "log_softmax": """graph @k(%x: {t}[{a},{b}]) {{
      %1 = amax(%x) {{dims=[1], keepdim=true}} : {t}[{a},1]
      %2 = sub(%x, %1) : {t}[{a},{b}]
      %3 = exp(%2) : {t}[{a},{b}]
      %4 = sum(%3) {{dims=[1], keepdim=true}} : {t}[{a},1]
      %5 = log(%4) : {t}[{a},1]
      %6 = sub(%2, %5) : {t}[{a},{b}]
      return %6
    }}""",
    "layer_norm": """graph @k(%x: {t}[{a},{b}], %w: {t}[{b}], %bias: {t}[{b}]) {{
      %0 = var(%x) {{dims=[1], correction=0, keepdim=true}} : {t}[{a},1]
      %1 = mean(%x) {{dims=[1], keepdim=true}} : {t}[{a},1]
      %2 = full {{shape=[], value=1e-05, dtype={t}}} : {t}[]
      %3 = add(%0, %2) : {t}[{a},1]
      %4 = rsqrt(%3) : {t}[{a},1]
      %5 = sub(%x, %1) : {t}[{a},{b}]
      %6 = mul(%5, %4) : {t}[{a},{b}]
      %7 = mul(%6, %w) : {t}[{a},{b}]
      %8 = add(%7, %bias) : {t}[{a},{b}]
      return %8, %1, %4
    }}""",
    "rms_norm_keepdim_false": """graph @k(%x: {t}[{a},{b}]) {{
      %0 = mul(%x, %x) : {t}[{a},{b}]
      %1 = mean(%0) {{dims=[1]}} : {t}[{a}]
      %2 = view(%1) {{shape=[{a}, 1]}} : {t}[{a},1]
      %3 = rsqrt(%2) : {t}[{a},1]
      %4 = mul(%x, %3) : {t}[{a},{b}]
      return %4
    }}""",
    "arg_and_extremes": """graph @k(%x: {t}[{a},{b}]) {{
      %0 = argmax(%x) {{dim=1}} : i64[{a}]
      %1 = argmin(%x) {{dim=1, keepdim=true}} : i64[{a},1]
      %2 = amin(%x) {{dims=[1]}} : {t}[{a}]
      %3 = var(%x) {{dims=[1]}} : {t}[{a}]
      return %0, %1, %2, %3
    }}""",
    "leading_dim": """graph @k(%x: {t}[{a},{b}]) {{
      %0 = sum(%x) {{dims=[0]}} : {t}[{b}]
      %1 = gt(%x, %x) : b8[{a},{b}]
      %2 = any(%1) {{dims=[0]}} : b8[{b}]
      return %0, %2
    }}""",
}
RSHAPES = [(1, 1), (3, 5), (4, 1), (5, 33), (2, 300)]


@pytest.mark.parametrize("case", sorted(REDUCTIONS))
@pytest.mark.parametrize("shape", [s for s in RSHAPES], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "looped"])
def test_reduction(case, shape, dtype, persistent):
    a, b = shape
    text = REDUCTIONS[case].format(t=dtype, a=a, b=b)
    reduced = a if case == "leading_dim" else b
    try:
        source = check(text, persistent_limit=4096 if persistent else 16, layout="transposed" if a > 2 else "contiguous")
    except CodegenError as e:
        assert reduced == 1 and "size-1" in str(e)  # a reduction over one element is not a kernel
        return
    assert source.params["persistent"] == (persistent or reduced <= 16)
    assert ("for roffset" in source.source) != source.params["persistent"]


def test_reduction_over_several_middle_dims_and_symbolic_rows():
    src = check("""graph @k(%x: f32[s0,3,5,4]) {
      %0 = sum(%x) {dims=[1, 3], keepdim=true} : f32[s0,1,5,1]
      %1 = sub(%x, %0) : f32[s0,3,5,4]
      return %1
    }""", sizes={"s0": 3}, layout="transposed")
    assert "s0" in src.arg_names


def test_symbolic_pointwise_serves_many_sizes():
    text = """graph @k(%x: f32[s0,8], %y: f32[8]) {
      %0 = mul(%x, %y) : f32[s0,8]
      return %0
    }"""
    for n in (1, 5, 17):
        src = check(text, sizes={"s0": n})
    assert "s0" in src.arg_names


def test_gather_ops_and_cat_read_through_indices():
    check("""graph @k(%w: f32[10,6], %i: i64[3,4]) {
      %0 = embedding(%w, %i) : f32[3,4,6]
      %1 = mul(%0, %0) : f32[3,4,6]
      return %1
    }""")
    check("""graph @k(%x: f32[3,4], %i: i64[3,4]) {
      %1 = gather(%x, %i) {dim=1} : f32[3,4]
      %2 = cat(%x, %1) {dim=1} : f32[3,8]
      %3 = slice(%2) {dim=1, start=1, step=2} : f32[3,4]
      %4 = exp(%3) : f32[3,4]
      return %4
    }""")


def test_generated_source_reads_like_the_tutorials():
    src = generate(verify(parse(REDUCTIONS["softmax"].format(t="f16", a=4, b=10))))
    assert src.name == "fused_convert_amax_sub_exp_sum_div"
    text = src.source
    assert "def fused_convert_amax_sub_exp_sum_div(\n    in0_ptr, out0_ptr,\n    xnumel, rnumel," in text
    assert "XBLOCK: tl.constexpr, RBLOCK: tl.constexpr" in text
    assert "tl.sum" not in text  # the @jit standard library is not used; see codegen/exprs.py


def test_unsupported_op_is_a_codegen_error():
    with pytest.raises(CodegenError, match="atan2"):
        generate(verify(parse("""graph @k(%x: f32[4], %y: f32[4]) {
          %0 = atan2(%x, %y) : f32[4]
          return %0
        }""")))


def test_pow_of_a_positive_constant_base_to_a_computed_exponent():
    # Adam's bias correction, beta ** step: written as exp2(step * log2(beta)), within a few ulps.
    source = check("""graph @k(%step: f32[5], %x: f16[5]) {
      %0 = full {shape=[], value=0.9, dtype=f32} : f32[]
      %1 = pow(%0, %step) : f32[5]
      %2 = convert(%x) {dtype=f32} : f32[5]
      %3 = mul(%1, %2) : f32[5]
      return %3
    }""", tol=dict(atol=1e-6, rtol=1e-5))
    assert "tl.exp2(" in source.source
