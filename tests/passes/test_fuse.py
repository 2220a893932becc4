"""The fusion pass, as IR text in and IR text (or checked lines) out."""

import inspect
import textwrap
import time

import pytest
import torch
from torch.testing import FileCheck

import mlc

from mlc.ir import parse, verify
from mlc.passes import eliminate_dead_code, fuse, run_passes
from tests.irtext import assert_ir, run_on_text


def fused(text: str):
    graph = verify(parse(textwrap.dedent(text)))
    return run_passes(graph, [fuse, eliminate_dead_code], verify_each=True)


def kernels(graph) -> list[str]:
    return [n.attrs["body"].name for n in graph.nodes if n.op == "kernel"]


def test_softmax_is_one_kernel():
    got = run_on_text("""
        graph @softmax(%x: f32[s0,40]) {
          %1 = amax(%x) {dims=[1], keepdim=true} : f32[s0,1]
          %2 = sub(%x, %1) : f32[s0,40]
          %3 = exp(%2) : f32[s0,40]
          %4 = sum(%3) {dims=[1], keepdim=true} : f32[s0,1]
          %5 = div(%3, %4) : f32[s0,40]
          return %5
        }""", fuse)
    assert_ir(got, """
        graph @softmax(%x: f32[s0,40]) {
          %0 = kernel @fused_amax_sub_exp_sum_div(%x) : f32[s0,40] {
            %1 = amax(%x) {dims=[1], keepdim=true} : f32[s0,1]
            %2 = sub(%x, %1) : f32[s0,40]
            %3 = exp(%2) : f32[s0,40]
            %4 = sum(%3) {dims=[1], keepdim=true} : f32[s0,1]
            %5 = div(%3, %4) : f32[s0,40]
            yield %5
          }
          return %0
        }""")


def test_layer_norm_with_two_reductions_and_a_constant_is_one_kernel():
    g = fused("""
        graph @ln(%x: f16[8,64], %w: f16[64], %b: f16[64]) {
          %0 = convert(%x) {dtype=f32} : f32[8,64]
          %1 = var(%0) {dims=[1], correction=0, keepdim=true} : f32[8,1]
          %2 = mean(%0) {dims=[1], keepdim=true} : f32[8,1]
          %3 = full {shape=[], value=1e-05, dtype=f32} : f32[]
          %4 = add(%1, %3) : f32[8,1]
          %5 = rsqrt(%4) : f32[8,1]
          %6 = sub(%0, %2) : f32[8,64]
          %7 = mul(%6, %5) : f32[8,64]
          %8 = convert(%7) {dtype=f16} : f16[8,64]
          %9 = mul(%8, %w) : f16[8,64]
          %10 = add(%9, %b) : f16[8,64]
          return %10, %2, %5
        }""")
    assert kernels(g) == ["fused_convert_var_mean_add_rsqrt_sub_etc"]
    assert g.count("full") == 0  # the constant lives in the kernel as a literal


def test_pointwise_chain_through_views_is_one_kernel_with_no_copies():
    g = fused("""
        graph @rope(%x: f32[2,8,4,16], %cos: f32[8,16], %sin: f32[8,16]) {
          %0 = slice(%x) {dim=3, end=8} : f32[2,8,4,8]
          %1 = slice(%x) {dim=3, start=8} : f32[2,8,4,8]
          %2 = neg(%1) : f32[2,8,4,8]
          %3 = cat(%2, %0) {dim=3} : f32[2,8,4,16]
          %4 = view(%cos) {shape=[1, 8, 1, 16]} : f32[1,8,1,16]
          %5 = view(%sin) {shape=[1, 8, 1, 16]} : f32[1,8,1,16]
          %6 = mul(%x, %4) : f32[2,8,4,16]
          %7 = mul(%3, %5) : f32[2,8,4,16]
          %8 = add(%6, %7) : f32[2,8,4,16]
          %9 = permute(%8) {dims=[0, 2, 1, 3]} : f32[2,4,8,16]
          return %9
        }""")
    assert kernels(g) == ["fused_neg_cat_mul_add"]
    # Only the final permute stays outside: it is free, a view of the kernel's output.
    assert [n.op for n in g.nodes] == ["kernel", "permute"]


def test_siblings_reading_one_input_share_a_kernel():
    g = fused("""
        graph @siblings(%x: f32[16,32]) {
          %0 = exp(%x) : f32[16,32]
          %1 = sigmoid(%x) : f32[16,32]
          %2 = sum(%x) {dims=[1]} : f32[16]
          %3 = amax(%x) {dims=[1]} : f32[16]
          return %0, %1, %2, %3
        }""")
    # One kernel reads x once: the reduction template stores full-sized results too.
    assert kernels(g) == ["fused_exp_sigmoid_sum_amax"]
    (k,) = [n for n in g.nodes if n.op == "kernel"]
    assert [str(t) for t in k.types] == ["f32[16,32]", "f32[16,32]", "f32[16]", "f32[16]"]


def test_independent_same_shaped_pointwise_regions_share_a_kernel():
    # updates that read nothing in common (a foreach step's per-parameter work): one kernel
    # for the two [8,4] results, another for the [4] one
    g = fused("""
        graph @updates(%p: f32[8,4], %g: f32[8,4], %q: f32[8,4], %h: f32[8,4], %b: f32[4], %c: f32[4]) {
          %lr = full {shape=[], value=0.1, dtype=f32} : f32[]
          %0 = mul(%g, %lr) : f32[8,4]
          %1 = sub(%p, %0) : f32[8,4]
          %2 = mul(%h, %lr) : f32[8,4]
          %3 = sub(%q, %2) : f32[8,4]
          %4 = mul(%c, %lr) : f32[4]
          %5 = sub(%b, %4) : f32[4]
          return %1, %3, %5
        }""")
    assert [[str(t) for t in n.types] for n in g.nodes if n.op == "kernel"] == [["f32[8,4]", "f32[8,4]"], ["f32[4]"]]


def test_independent_regions_do_not_wait_across_heavy_work():
    # the second exp reads a fallback's result: merged with the first it would hold that one
    # back past the fallback (and what it reads alive), so it stays a kernel of its own
    g = fused("""
        graph @apart(%x: f32[8,4], %y: f32[8,4]) {
          %0 = exp(%x) : f32[8,4]
          %1 = aten(%y) {target="aten.cumsum.default", args=[$0, 1]} : f32[8,4]
          %2 = exp(%1) : f32[8,4]
          return %0, %2
        }""")
    assert [[str(t) for t in n.types] for n in g.nodes if n.op == "kernel"] == [["f32[8,4]"], ["f32[8,4]"]]


def test_not_fused_reasons_are_recorded():
    g = fused("""
        graph @f(%x: f32[16,32], %w: f32[32,8]) {
          %0 = sum(%x) {dims=[1], keepdim=true} : f32[16,1]
          %1 = sub(%x, %0) : f32[16,32]
          %2 = sum(%1) {dims=[0]} : f32[32]
          %3 = mm(%1, %w) : f32[16,8]
          %4 = atan2(%3, %3) : f32[16,8]
          return %2, %4
        }""")
    notes = "\n".join(g.notes)
    FileCheck().check("not fused: sub -> sum: reductions over different dims or shapes") \
        .check("not fused: sub -> mm: a matmul operand computed in the kernel") \
        .check("not fused: mm -> atan2: atan2 is not generated as a kernel (pointwise)").run(notes)
    # The matmul had nothing to fuse: it stays an ATen call.
    assert [n.op for n in g.nodes] == ["kernel", "kernel", "mm", "atan2"]


def test_a_path_through_an_unfused_op_keeps_two_kernels_apart():
    g = fused("""
        graph @f(%x: f32[16,16]) {
          %0 = exp(%x) : f32[16,16]
          %1 = atan2(%0, %0) : f32[16,16]
          %2 = add(%0, %1) : f32[16,16]
          return %2
        }""")
    assert [n.op for n in g.nodes] == ["kernel", "atan2", "kernel"]
    assert any("would create a cycle" in n for n in g.notes)


def test_matmul_epilogues_and_the_swiglu_pair():
    g = fused("""
        graph @mlp(%x: f32[6,16], %w1: f32[32,16], %w3: f32[32,16], %w2: f32[16,32], %b2: f32[16]) {
          %0 = permute(%w1) {dims=[1, 0]} : f32[16,32]
          %1 = mm(%x, %0) : f32[6,32]
          %2 = silu(%1) : f32[6,32]
          %3 = permute(%w3) {dims=[1, 0]} : f32[16,32]
          %4 = mm(%x, %3) : f32[6,32]
          %5 = mul(%2, %4) : f32[6,32]
          %6 = permute(%w2) {dims=[1, 0]} : f32[32,16]
          %7 = mm(%5, %6) : f32[6,16]
          %8 = add(%7, %b2) : f32[6,16]
          %9 = add(%x, %8) : f32[6,16]
          return %9
        }""")
    # Two kernels, and no transpose is ever copied: weights are read through their strides.
    assert kernels(g) == ["fused_mm_silu_mul", "fused_mm_add"]
    assert [n.op for n in g.nodes] == ["kernel", "kernel"]


def test_fused_graph_round_trips_and_matches_the_reference():
    import torch

    from mlc.ir.reference import example_inputs, run_reference

    g = parse("""
        graph @f(%x: f32[6,10], %i: i64[6]) {
          %0 = amax(%x) {dims=[1], keepdim=true} : f32[6,1]
          %1 = sub(%x, %0) : f32[6,10]
          %2 = view(%i) {shape=[6, 1]} : i64[6,1]
          %3 = gather(%1, %2) {dim=1} : f32[6,1]
          %4 = neg(%3) : f32[6,1]
          return %4
        }""")
    f = fused(str(g))
    text = str(f)
    assert str(parse(text)) == text
    xs = example_inputs(g)
    torch.testing.assert_close(run_reference(f, xs), run_reference(g, xs))


# --- the inlining budget: kernels stay linear in their regions ---------------------------------

# A Hillis-Steele prefix sum over 16 elements, four levels of slices and cats. Each level reads
# the last one at two offsets and in two cat branches: in one kernel the first level would be
# written at 16 (offset, branch) pairs. Within the budget, two levels fit one kernel.
SCAN_16 = """
    graph @scan(%x: f32[2,16]) {
      %a1 = slice(%x) {dim=1, start=1} : f32[2,15]
      %b1 = slice(%x) {dim=1, end=15} : f32[2,15]
      %s1 = add(%a1, %b1) : f32[2,15]
      %h1 = slice(%x) {dim=1, end=1} : f32[2,1]
      %x1 = cat(%h1, %s1) {dim=1} : f32[2,16]
      %a2 = slice(%x1) {dim=1, start=2} : f32[2,14]
      %b2 = slice(%x1) {dim=1, end=14} : f32[2,14]
      %s2 = add(%a2, %b2) : f32[2,14]
      %h2 = slice(%x1) {dim=1, end=2} : f32[2,2]
      %x2 = cat(%h2, %s2) {dim=1} : f32[2,16]
      %a3 = slice(%x2) {dim=1, start=4} : f32[2,12]
      %b3 = slice(%x2) {dim=1, end=12} : f32[2,12]
      %s3 = add(%a3, %b3) : f32[2,12]
      %h3 = slice(%x2) {dim=1, end=4} : f32[2,4]
      %x3 = cat(%h3, %s3) {dim=1} : f32[2,16]
      %a4 = slice(%x3) {dim=1, start=8} : f32[2,8]
      %b4 = slice(%x3) {dim=1, end=8} : f32[2,8]
      %s4 = add(%a4, %b4) : f32[2,8]
      %x4 = cat(%b4, %s4) {dim=1} : f32[2,16]
      return %x4
    }"""


def test_a_value_the_kernel_would_copy_too_often_is_read_from_memory():
    g = fused(SCAN_16)
    assert_ir(str(g), """
        graph @scan(%x: f32[2,16]) {
          %0 = kernel @fused_add_cat(%x) : f32[2,16] {
            %a1 = slice(%x) {dim=1, start=1} : f32[2,15]
            %b1 = slice(%x) {dim=1, end=15} : f32[2,15]
            %s1 = add(%a1, %b1) : f32[2,15]
            %h1 = slice(%x) {dim=1, end=1} : f32[2,1]
            %x1 = cat(%h1, %s1) {dim=1} : f32[2,16]
            %a2 = slice(%x1) {dim=1, start=2} : f32[2,14]
            %b2 = slice(%x1) {dim=1, end=14} : f32[2,14]
            %s2 = add(%a2, %b2) : f32[2,14]
            %h2 = slice(%x1) {dim=1, end=2} : f32[2,2]
            %x2 = cat(%h2, %s2) {dim=1} : f32[2,16]
            yield %x2
          }
          %1 = kernel @fused_add_cat(%0) : f32[2,16] {
            %a3 = slice(%0) {dim=1, start=4} : f32[2,12]
            %b3 = slice(%0) {dim=1, end=12} : f32[2,12]
            %s3 = add(%a3, %b3) : f32[2,12]
            %h3 = slice(%0) {dim=1, end=4} : f32[2,4]
            %x3 = cat(%h3, %s3) {dim=1} : f32[2,16]
            %a4 = slice(%x3) {dim=1, start=8} : f32[2,8]
            %b4 = slice(%x3) {dim=1, end=8} : f32[2,8]
            %s4 = add(%a4, %b4) : f32[2,8]
            %x4 = cat(%b4, %s4) {dim=1} : f32[2,16]
            yield %x4
          }
          return %1
        }""")
    FileCheck().check("not inlined: cat + add -> cat: add f32[2,15] would be computed more than 4 times for its "
                      "1 use(s) (budget: 4 per use)").run("\n".join(g.notes))


def test_the_cost_model_counts_the_bytes_of_a_value_not_inlined(monkeypatch):
    import importlib

    from mlc.codegen.budget import Budget
    from mlc.cost import graph_cost

    split = graph_cost(fused(SCAN_16), {})
    monkeypatch.setattr(importlib.import_module("mlc.passes.fuse"), "BUDGET", Budget(10 ** 6, 10 ** 6, 10 ** 6))
    whole = graph_cost(fused(SCAN_16), {})
    assert (whole.launches, split.launches) == (1, 2)
    # The f32[2,16] between the two kernels: written once by the first, read once by the second.
    assert split.bytes == whole.bytes + 2 * (2 * 16 * 4)


def parallel_scan(x):
    """A Hillis-Steele prefix sum: log2(n) levels of strided slices and cats."""
    k = 1
    while k < x.shape[1]:
        x = torch.cat([x[:, :k], x[:, k:] + x[:, :-k]], dim=1)
        k *= 2
    return x


def sequential_scan(a, b):
    """A selective scan written out step by step, as the slow path of transformers' Mamba layer:
    h_t = a_t * h_(t-1) + b_t, every step sliced out of the sequence and the states concatenated."""
    h = torch.zeros_like(b[:, :1])
    states = []
    for t in range(a.shape[1]):
        h = a[:, t:t + 1] * h + b[:, t:t + 1]
        states.append(h)
    return torch.cat(states, dim=1)


@pytest.mark.parametrize("fn,lengths", [(parallel_scan, [8, 16, 32, 64, 128, 256]), (sequential_scan, [8, 16, 32])],
                         ids=["parallel", "sequential"])
def test_scans_of_slices_and_cats_grow_linearly_and_match_eager(fn, lengths):
    lines = {}
    for n in lengths:
        inputs = [torch.rand(2, n) for _ in inspect.signature(fn).parameters]
        start = time.perf_counter()
        report = mlc.explain(fn, *inputs)  # the kernels run in the interpreter (tests/conftest.py)
        seconds = time.perf_counter() - start
        assert report.accuracy.max_rel <= 1e-6, (n, report.accuracy)
        sources = [k.source for k in report.kernels]
        lines[n] = sum(len(s.splitlines()) for s in sources)
        print(f"{fn.__name__} n={n}: {len(sources)} kernels, {lines[n]} lines, {seconds:.2f} s")  # measured, not held
    # Compile time follows the source: at most linear growth means no more lines per element
    # at any length than at the shortest (quadratic growth made the 32-step scan 2159 lines).
    for short, long in zip(lengths, lengths[1:]):
        assert lines[long] / long <= lines[short] / short, lines


BY_HAND_ATTENTION = """
    graph @attn(%q: f32[2,2,7,8], %k: f32[2,2,7,8], %v: f32[2,2,7,8], %bias: f32[2,7,7]) {
      %0 = permute(%k) {dims=[0, 1, 3, 2]} : f32[2,2,8,7]
      %1 = view(%q) {shape=[4, 7, 8]} : f32[4,7,8]
      %2 = view(%0) {shape=[4, 8, 7]} : f32[4,8,7]
      %3 = bmm(%1, %2) : f32[4,7,7]
      %4 = view(%3) {shape=[2, 2, 7, 7]} : f32[2,2,7,7]
      %5 = full {shape=[], value=0.5, dtype=f32} : f32[]
      %6 = mul(%4, %5) : f32[2,2,7,7]
      %7 = add(%6, %bias) : f32[2,2,7,7]
      %8 = amax(%7) {dims=[-1], keepdim=true} : f32[2,2,7,1]
      %9 = sub(%7, %8) : f32[2,2,7,7]
      %10 = exp(%9) : f32[2,2,7,7]
      %11 = sum(%10) {dims=[-1], keepdim=true} : f32[2,2,7,1]
      %12 = div(%10, %11) : f32[2,2,7,7]
      %13 = view(%12) {shape=[4, 7, 7]} : f32[4,7,7]
      %14 = view(%v) {shape=[4, 7, 8]} : f32[4,7,8]
      %15 = bmm(%13, %14) : f32[4,7,8]
      %16 = view(%15) {shape=[2, 2, 7, 8]} : f32[2,2,7,8]
      return %16
    }"""


def test_attention_written_by_hand_is_one_attention_kernel():
    from mlc.ir.reference import run_reference

    before = verify(parse(textwrap.dedent(BY_HAND_ATTENTION)))
    g = fused(BY_HAND_ATTENTION)
    # One kernel: the scores are its q @ kᵀ block, scaled and biased in it; no bmm, no softmax.
    FileCheck().check("kernel @").check("attention_scores(%q,").check("mul(").check("add(") \
        .check("attention(%q,").check("score_mod=true").check("yield").check_not("bmm").check_not("amax") \
        .run(str(g))
    assert [n.op for n in g.nodes if n.op not in ("view", "permute")] == ["kernel"]
    assert "fused: attention: " in "\n".join(g.notes)
    assert str(parse(str(g))) == str(g)
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(n.types[0].shape, generator=gen) for n in before.inputs]
    torch.testing.assert_close(run_reference(g, args)[0], run_reference(before, args)[0], rtol=1e-5, atol=1e-6)


def test_attention_by_hand_whose_scores_are_read_elsewhere_is_not_rewritten():
    g = fused(BY_HAND_ATTENTION.replace("return %16", "return %16, %7"))
    FileCheck().check("not fused: attention: the scores (add) have another reader (a graph output") \
        .run("\n".join(g.notes))
    assert g.count("bmm") + sum(n.attrs["body"].count("bmm") for n in g.nodes if n.op == "kernel") == 2
