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



def test_values_read_as_fp32_are_rounded_to_their_type():
    # F.layer_norm over a last dim of size 1 in fp16/bf16 training: the backward computes
    # x_f32 - bf16(mean(x_f32)) with mean(x) = x, times rsqrt(0 + eps) = 316. Eager gets 0;
    # the kernel converted the fp32 register of a computed bf16 value (exp, log: never rounded)
    # to fp32 as it was, but rounded it on the way to bf16, so the difference was its rounding
    # error, times 316 (fuzzer seeds 861, 8578, 8874). Every fp16/bf16 value a kernel computes
    # is now rounded to its type (KernelWriter.emit), also where an op promotes it (%y * %0).
    from mlc.ir.reference import run_reference
    from mlc.runtime.plan import KernelLaunch

    for t, dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        body = verify(parse(f"""graph @k(%x: {t}[4,5,1], %y: f32[4,5,1]) {{
          %0 = exp(%x) : {t}[4,5,1]
          %1 = convert(%0) {{dtype=f32}} : f32[4,5,1]
          %2 = copy(%1) : f32[4,5,1]
          %3 = convert(%2) {{dtype={t}}} : {t}[4,5,1]
          %4 = sub(%1, %3) : f32[4,5,1]
          %5 = mul(%y, %0) : f32[4,5,1]
          %6 = sub(%5, %3) : f32[4,5,1]
          return %4, %6
        }}"""))
        x = torch.randn(4, 5, 1, generator=torch.Generator().manual_seed(0)).to(dtype)
        inputs = [x, torch.ones(4, 5, 1)]
        got = KernelLaunch(body, interpret=True)(inputs, {})
        want = run_reference(body, inputs)
        assert all(torch.equal(w, torch.zeros(4, 5, 1)) for w in want)
        assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_a_value_is_the_same_whichever_kernel_stores_it():
    # amax/amin's gradient finds the ties between the forward's stored result and the backward's
    # recomputation of its input; the two kernels round where they store, and the min-cut
    # partitioner decides which values those are. Seed 7564: the forward stored silu(x) (saved)
    # but took amin(silu(x) * y) from the unrounded silu, while the backward recomputed the
    # product from the saved one: no tie, a division by 0 ties (inf). Seed 8841, the other way:
    # the backward stored rsqrt(mean(x^2) + eps) (needed later) and computed x * rsqrt + x from
    # it rounded, the forward from it unrounded. With every fp16/bf16 value rounded, a value is
    # the same in every kernel that computes it.
    from mlc.runtime.plan import KernelLaunch

    for t, dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        body = verify(parse(f"""graph @k(%x: {t}[3,4,16], %y: {t}[3,4,16]) {{
          %0 = silu(%x) : {t}[3,4,16]
          %1 = mul(%0, %y) : {t}[3,4,16]
          %2 = amin(%1) {{dims=[2], keepdim=true}} : {t}[3,4,1]
          return %0, %2
        }}"""))
        gen = torch.Generator().manual_seed(0)
        x, y = (torch.randn(3, 4, 16, generator=gen).to(dtype) for _ in range(2))
        silu, low = KernelLaunch(body, interpret=True)([x, y], {})
        assert torch.equal(silu, torch.nn.functional.silu(x))
        assert torch.equal(low, (silu * y).amin(2, keepdim=True))  # the backward's recomputation ties

        rms = f"""graph @k(%x: {t}[3,16]) {{
          %0 = full {{shape=[], value=2, dtype={t}}} : {t}[]
          %1 = pow(%x, %0) : {t}[3,16]
          %2 = mean(%1) {{dims=[-1], keepdim=true}} : {t}[3,1]
          %3 = full {{shape=[], value=1e-06, dtype={t}}} : {t}[]
          %4 = add(%2, %3) : {t}[3,1]
          %5 = rsqrt(%4) : {t}[3,1]
          %6 = mul(%x, %5) : {t}[3,16]
          %7 = add(%6, %x) : {t}[3,16]
          return %7 OUTPUTS
        }}"""
        x = torch.randn(3, 16, generator=gen).to(dtype)
        (forward,) = KernelLaunch(verify(parse(rms.replace(" OUTPUTS", ""))), interpret=True)([x], {})
        backward, _ = KernelLaunch(verify(parse(rms.replace(" OUTPUTS", ", %5"))), interpret=True)([x], {})
        assert torch.equal(forward, backward)


def test_ops_of_constants_only_compute_on_a_block():
    # sin() of a nan full that folding left in a matmul's epilogue (fuzzer seed 8956: a var
    # over one element, correction 1) was written `tl.sin(float('nan'))`, a scalar: the
    # interpreter mistypes comparisons of scalars, and _maximum's `|` failed. An op of
    # constants only (the bf16 2 * 2 below: a Python float, with no .to) now computes on a
    # block of its first constant.
    check("""graph @k(%x: f32[3,7]) {
      %0 = full {shape=[3, 7], value=nan, dtype=f32} : f32[3,7]
      %1 = sin(%0) : f32[3,7]
      %2 = maximum(%1, %x) : f32[3,7]
      %3 = full {shape=[], value=2, dtype=bf16} : bf16[]
      %4 = mul(%3, %3) : bf16[]
      %5 = convert(%4) {dtype=f32} : f32[]
      %6 = add(%x, %5) : f32[3,7]
      return %2, %6
    }""")


def test_a_load_indexed_only_by_a_size_1_dims_tile_index_is_one_element():
    # x0 = 0 (a kept dim of size 1) read as a block index: the load's pointer was one element
    # while its mask was a block ("Mask argument cannot be block type if pointer argument is not
    # a block"); fuzz seeds 5097, 5230. The reduction template marks such indices scalar_tiles.
    check("""graph @k(%x: f32[16,1]) {
      %0 = full {shape=[16, 1], value=0, dtype=i64} : i64[16,1]
      %1 = gather(%x, %0) {dim=0} : f32[16,1]
      %2 = amin(%1) {dims=[0]} : f32[1]
      return %2
    }""")


def test_a_cat_over_a_size_1_dim_keeps_its_load_masks_blocks():
    # cat's branch conditions on the int index 0 were Python bools and'ed into a block mask
    # ("mask has unsupported dtype"); fuzz seeds 3772, 5186. They are now written as blocks.
    check("""graph @k(%x: f32[16,1,17]) {
      %0 = cat(%x, %x) {dim=1} : f32[16,2,17]
      %1 = view(%0) {shape=[16, 2, 17, 1]} : f32[16,2,17,1]
      %2 = cat(%1, %1) {dim=3} : f32[16,2,17,2]
      %3 = slice(%2) {dim=3, step=2} : f32[16,2,17,1]
      %4 = copy(%3) : f32[16,2,17,1]
      %5 = var(%4) {dims=[-2], keepdim=true} : f32[16,2,1,1]
      return %5
    }""")


def test_a_bool_constant_block_stays_one_bit():
    # ~ of a boolean constant (``~torch.ones(1, 1, dtype=bool).tril()``, folded to a full of
    # True): the constant was made a block by adding the mask's 0, which turned the i1 into an
    # i32, and ~1 is -2, nonzero, so True. Found by the causal mask of one token in training
    # (tests/test_attention.py); KernelWriter compares the block with 0 to keep it i1.
    source = check("""graph @k() {
      %0 = full {shape=[1, 1], value=true, dtype=b8} : b8[1,1]
      %1 = bitwise_not(%0) : b8[1,1]
      return %1
    }""")
    assert "!= 0)" in source.source
