"""Crash classes the fuzzer (``mlc.testing.fuzz``) found, each as the region that showed it.

Every case is a kernel body in IR text run in Triton's interpreter against the reference
executor, as in ``test_templates``; the comment says what broke and where it was fixed.
"""

import torch

from mlc.codegen.templates import generate
from mlc.ir import parse, verify
from tests.codegen.test_templates import check


def test_matmul_with_one_row_stores_a_full_tile_pointer():
    # M = 1: the row index of the [1, N] result is 0, so the store's pointer had no row axis
    # while the value and mask were [BLOCK_M, BLOCK_N] ("Expected pointer argument to have shape
    # [16, 16] but got [1, 16]"). KernelWriter.store widens such a pointer to the mask's shape.
    source = check("""graph @k(%x: f32[1,4], %w: f32[4,4], %b: f32[4]) {
      %0 = mm(%x, %w) : f32[1,4]
      %1 = add(%0, %b) : f32[1,4]
      %2 = view(%1) {shape=[4]} : f32[4]
      return %2
    }""")
    assert "(c_mask) * 0" in source.source


def test_matmul_to_one_element_stores_through_a_block_pointer():
    # [1, 16] @ [16, 1] seen as [1]: the offset was the literal 0, a scalar pointer for a block
    # value ("Value argument cannot be block type if pointer argument is not a block").
    check("""graph @k(%x: f16[1,16], %w: f16[16,1]) {
      %0 = mm(%x, %w) : f16[1,1]
      %1 = full {shape=[], value=1, dtype=f16} : f16[]
      %2 = add(%0, %1) : f16[1,1]
      %3 = relu(%2) : f16[1,1]
      %4 = view(%3) {shape=[1]} : f16[1]
      return %4
    }""")


def test_reduction_storing_a_row_shaped_full_output():
    # A full-sized output whose rows are a size-1 dim: its store offset leaves the row axis out.
    check("""graph @k(%x: f32[1,1,37]) {
      %0 = amax(%x) {dims=[2], keepdim=true} : f32[1,1,1]
      %1 = sub(%x, %0) : f32[1,1,37]
      %2 = exp(%1) : f32[1,1,37]
      return %2, %0
    }""")


def test_flat_index_of_one_kernel_is_not_reused_by_another():
    # indexing.ravel remembered that ("0",) in shape (1,) came from unravelling "offs" (a
    # pointwise kernel over one element) and gave "offs" back inside a reduction kernel, which
    # has no such name (NameError in the interpreter, a compile error on a GPU).
    generate(verify(parse("""graph @k(%x: f32[1]) {
      %0 = exp(%x) : f32[1]
      return %0
    }""")))
    source = check("""graph @k(%x: f32[1,300]) {
      %0 = sum(%x) {dims=[1]} : f32[1]
      %1 = view(%0) {shape=[1]} : f32[1]
      %2 = sum(%x) {dims=[1], keepdim=true} : f32[1,1]
      %3 = div(%x, %2) : f32[1,300]
      return %1, %3
    }""")
    assert "offs" not in source.source


def test_reduction_over_an_empty_dim_beside_an_empty_output():
    # The launch was skipped when any output was empty: here the [0, 17] output is, but the
    # mean's [1, 17] rows (nan: 0 / 0, as in torch) must still be written.
    check("""graph @k(%x: f32[0,17]) {
      %0 = mean(%x) {dims=[0], keepdim=true} : f32[1,17]
      %1 = full {shape=[], value=2, dtype=f32} : f32[]
      %2 = mul(%x, %1) : f32[0,17]
      return %2, %0
    }""")
    body = verify(parse("""graph @k(%x: f32[0,5]) {
      %0 = sum(%x) {dims=[0]} : f32[5]
      return %0
    }"""))
    from mlc.runtime.plan import KernelLaunch

    (out,) = KernelLaunch(body, interpret=True)([torch.empty(0, 5)], {})
    assert torch.equal(out, torch.zeros(5))


def test_comparisons_see_fp16_values_as_eager_rounds_them():
    # A backward that recomputes an fp16 product in a kernel (the min-cut partitioner's
    # rematerialization) compared it, still in fp32, with the fp16 minimum the forward stored:
    # no element was equal, amin's gradient divided by zero ties (inf). The fuzzer found it in
    # fp16 and bf16 training programs; comparisons now round fp16/bf16 operands to their type.
    from mlc.runtime.plan import KernelLaunch

    for t, dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        body = verify(parse(f"""graph @k(%x: {t}[2,7,5], %y: {t}[2,7,5], %m: {t}[1,7,5]) {{
          %0 = mul(%x, %y) : {t}[2,7,5]
          %1 = eq(%0, %m) : b8[2,7,5]
          return %1
        }}"""))
        gen = torch.Generator().manual_seed(0)
        x, y = (torch.randn(2, 7, 5, generator=gen).to(dtype) for _ in range(2))
        m = (x * y).amin(0, keepdim=True)  # the forward's stored minimum, rounded to fp16/bf16
        (got,) = KernelLaunch(body, interpret=True)([x, y, m], {})
        assert torch.equal(got, x * y == m) and got.any(0).all()  # every column finds its minimum


def test_variance_of_equal_values_is_exactly_zero():
    # A two-pass variance of 7 equal values came out ~1e-15, not 0 (the mean rounds), so a
    # `var > 0` test flipped against eager's (torch's Welford gives exactly 0); the reduction
    # template now shifts each row by its first element.
    from mlc.runtime.plan import KernelLaunch

    body = verify(parse("""graph @k(%x: f32[1,8]) {
      %0 = expand(%x) {shape=[7, 8]} : f32[7,8]
      %1 = var(%0) {dims=[0], keepdim=true} : f32[1,8]
      %2 = full {shape=[], value=0, dtype=f32} : f32[]
      %3 = gt(%1, %2) : b8[1,8]
      return %1, %3
    }"""))
    x = torch.tensor([[0.1, 1 / 3, 7.7, -2.9, 1e-3, 5.5, 0.7, 1e4]])
    var, positive = KernelLaunch(body, interpret=True)([x], {})
    assert torch.equal(var, torch.zeros(1, 8)) and not positive.any()
