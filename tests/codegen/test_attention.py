"""The attention template against eager SDPA, in Triton's interpreter: forward and gradients.

Kernels are checked one op at a time (IR in, generated kernel run, compared with eager
``scaled_dot_product_attention`` and its autograd gradients), then through ``torch.compile``:
SDPA's ATen ops become mlc's attention kernels forward and backward, with no fallback.
Sizes are tiny: each program costs about a millisecond of Python in the interpreter.
"""

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.testing import FileCheck

import mlc
from mlc.codegen.templates import TEMPLATES, CodegenError, generate
from mlc.cost import graph_cost, region_cost
from mlc.ir import parse, verify
from mlc.ir.reference import run_reference
from mlc.passes import fuse, run_passes, split_attention
from mlc.runtime.plan import KernelLaunch
from tests.irtext import run_on_text

NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
# max |mlc - eager| / max(|eager|, 1), forward and gradients
TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def _type(shape, dtype) -> str:
    return f"{NAMES.get(dtype, 'b8')}[{','.join(map(str, shape))}]"


def attention_ir(op, q, k, v, mask, scale, causal) -> str:
    """One attention op over inputs shaped like the given tensors, as IR text."""
    b, h, sq, d = q.shape
    dv = v.shape[-1]
    t = NAMES[q.dtype]
    decls = [f"%q: {_type(q.shape, q.dtype)}", f"%k: {_type(k.shape, k.dtype)}", f"%v: {_type(v.shape, v.dtype)}"]
    if op == "attention":
        operands, results = ["%q", "%k", "%v"], f"{t}[{b},{h},{sq},{dv}], f32[{b},{h},{sq}]"
    else:
        decls = [f"%do: {t}[{b},{h},{sq},{dv}]"] + decls + [f"%lse: f32[{b},{h},{sq}]", f"%delta: f32[{b},{h},{sq}]"]
        operands = ["%do", "%q", "%k", "%v", "%lse", "%delta"]
        results = f"{_type(k.shape, k.dtype)}, {_type(v.shape, v.dtype)}" if op == "attention_grad_kv" else \
            _type(q.shape, q.dtype)
    if mask is not None:
        decls.append(f"%mask: {_type(mask.shape, mask.dtype)}")
        operands.append("%mask")
    names = "%0, %1" if results.count("[") == 2 else "%0"
    return f"""graph @k({', '.join(decls)}) {{
      {names} = {op}({', '.join(operands)}) {{scale={scale!r}, is_causal={'true' if causal else 'false'}}} : {results}
      return {names}
    }}"""


def launch(text, inputs):
    body = verify(parse(text))
    kernel = KernelLaunch(body, interpret=True)
    assert kernel.source.kind == "attention"
    return kernel(inputs, {}), kernel.source, body


def rel_err(got, want) -> float:
    return (got.float() - want.float()).abs().max().item() / max(want.float().abs().max().item(), 1.0)


def check(b, h, hkv, sq, sk, d, dtype, mask=None, causal=False, dv=None, seed=0):
    """Forward, then both backward kernels, against eager SDPA and autograd."""
    g = torch.Generator().manual_seed(seed)
    dv = dv or d
    q = torch.randn(b, h, sq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, sk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, sk, dv, generator=g).to(dtype)
    m = {None: None,
         "bool": torch.rand(b, 1, sq, sk, generator=g) > 0.3,
         "additive": torch.randn(1, h, sq, sk, generator=g).to(dtype),
         "padding": torch.arange(sk)[None, None, None, :] < torch.tensor([sk, max(sk // 2, 1)])[:b, None, None, None],
         }[mask]
    scale = 1 / math.sqrt(d)
    operands = [q, k, v] + [m] * (m is not None)
    (out, lse), ks, body = launch(attention_ir("attention", q, k, v, m, scale, causal), operands)
    assert "tl.dot" in ks.source and out.dtype == dtype and lse.dtype == torch.float32
    qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
    want = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=m, is_causal=causal, enable_gqa=h != hkv)
    assert rel_err(out, want) < TOL[dtype], "forward"
    ref_out, ref_lse = run_reference(body, operands)
    seen = torch.isfinite(ref_lse)  # rows with a key to attend to
    torch.testing.assert_close(lse[seen], ref_lse[seen], atol=1e-3 if dtype == torch.float32 else 2e-2, rtol=0)
    do = torch.randn(want.shape, generator=g).to(dtype)
    want.backward(do)
    delta = (out.float() * do.float()).sum(-1)
    inputs = [do, q, k, v, lse, delta] + [m] * (m is not None)
    (dk, dv_), _, _ = launch(attention_ir("attention_grad_kv", q, k, v, m, scale, causal), inputs)
    (dq,), _, _ = launch(attention_ir("attention_grad_q", q, k, v, m, scale, causal), inputs)
    for name, got, ref in (("dq", dq, qq.grad), ("dk", dk, kk.grad), ("dv", dv_, vv.grad)):
        assert got.dtype == dtype and got.shape == ref.shape
        assert rel_err(got, ref) < TOL[dtype], name
    return ks


# Each case: (batch, heads, kv heads, Sq, Sk, head dim, dtype, mask, causal).
CASES = {
    "plain": (2, 2, 2, 7, 7, 32, torch.float32, None, False),
    "causal_77": (1, 2, 2, 77, 77, 32, torch.float32, None, True),
    "causal_129_d64": (1, 1, 1, 129, 129, 64, torch.float32, None, True),
    "one_query": (2, 2, 2, 1, 77, 64, torch.float32, None, False),
    "causal_cross": (1, 2, 2, 7, 20, 32, torch.float32, None, True),  # top-left aligned, Sq < Sk
    "gqa_causal": (2, 4, 2, 7, 9, 32, torch.float32, None, True),
    "gqa_4_to_1": (1, 4, 1, 33, 33, 64, torch.float32, "bool", False),
    "bool_mask": (2, 2, 2, 7, 7, 32, torch.float32, "bool", False),
    "additive_mask_causal": (1, 2, 2, 17, 17, 32, torch.float32, "additive", True),
    "padding_mask": (2, 2, 2, 9, 9, 32, torch.float32, "padding", False),
    "d128_f16": (1, 2, 2, 33, 33, 128, torch.float16, None, True),
    "d40_f16_mask": (1, 2, 2, 7, 7, 40, torch.float16, "bool", False),  # padded to 64
    "d64_bf16_gqa": (1, 4, 2, 20, 20, 64, torch.bfloat16, None, True),
    "d128_bf16": (1, 1, 1, 7, 7, 128, torch.bfloat16, "additive", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernels_match_eager_forward_and_gradients(case):
    check(*CASES[case])


def test_value_head_dim_differs_and_head_dim_256():
    check(1, 1, 1, 5, 5, 16, torch.float32, dv=24)
    ks = check(1, 1, 1, 3, 3, 256, torch.float16, causal=True)
    assert "tl.arange(0, 256)" in ks.source


def test_fully_masked_rows_give_zero_and_zero_gradients():
    # As torch's flash kernels: a query row with no key to attend to gives 0, not NaN.
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    mask[..., 2, :] = False
    q, k, v = (torch.randn(1, 2, 5, 16) for _ in range(3))
    (out, lse), _, _ = launch(attention_ir("attention", q, k, v, mask, 0.25, False), [q, k, v, mask])
    assert out[:, :, 2].abs().max() == 0 and torch.isinf(lse[:, :, 2]).all() and torch.isfinite(out).all()
    do = torch.randn_like(out)
    inputs = [do, q, k, v, lse, (out * do).sum(-1), mask]
    (dq,), _, _ = launch(attention_ir("attention_grad_q", q, k, v, mask, 0.25, False), inputs)
    assert dq[:, :, 2].abs().max() == 0 and torch.isfinite(dq).all()


def test_causal_skips_key_blocks_above_the_diagonal_and_gqa_reads_without_copies():
    q, k, v = torch.randn(1, 4, 8, 32), torch.randn(1, 2, 8, 32), torch.randn(1, 2, 8, 32)
    ks = generate(verify(parse(attention_ir("attention", q, k, v, None, 0.2, True))))
    assert "hi = tl.minimum(N_CTX_K, (start_m + 1) * BLOCK_M)" in ks.source
    assert "off_hkv = off_h // 2" in ks.source and "in1_stride1" in ks.source
    kv = generate(verify(parse(attention_ir("attention_grad_kv", q, k, v, None, 0.2, True))))
    assert "lo = (start_n * BLOCK_N) // BLOCK_M * BLOCK_M" in kv.source
    assert "for off_g in range(0, 2):" in kv.source  # the two query heads of each key/value head


def test_interpreter_multiplies_bf16_tiles_in_fp32():
    q = torch.randn(1, 1, 4, 16).bfloat16()
    body = verify(parse(attention_ir("attention", q, q, q, None, 0.25, False)))
    assert "kT = tmp1.to(tl.float32)" in generate(body, interpret=True).source
    assert "kT = tmp1\n" in generate(body, interpret=False).source


def test_a_computed_mask_is_a_score_modification_but_loop_operands_are_read_from_memory():
    # where(m, 0, -inf) of a broadcast padding mask, as SDPA hands a b8 mask to its flash kernel.
    text = """graph @k(%q: f32[2,2,9,16], %k: f32[2,2,9,16], %v: f32[2,2,9,16], %m: b8[2,1,1,9]) {
      %z = full {shape=[], value=0.0, dtype=f32} : f32[]
      %n = full {shape=[], value=-inf, dtype=f32} : f32[]
      %a = where(%m, %z, %n) : f32[2,1,1,9]
      %0, %1 = attention(%q, %k, %v, %a) {scale=0.25} : f32[2,2,9,16], f32[2,2,9]
      return %0
    }"""
    lengths = torch.tensor([9, 5])[:, None, None, None]
    inputs = [torch.randn(2, 2, 9, 16) for _ in range(3)] + [torch.arange(9)[None, None, None, :] < lengths]
    (out,), ks, body = launch(text, inputs)
    torch.testing.assert_close(out, run_reference(body, inputs)[0])
    assert ks.name == "fused_where_attention" and "out1_ptr" not in ks.source
    # q is loaded once per program, so it may be computed there too (a prologue: RoPE, a scale).
    computed_q = text.replace("attention(%q,", "attention(%q2,").replace(
        "%0, %1", "%q2 = exp(%q) : f32[2,2,9,16]\n      %0, %1")
    (out,), ks, body = launch(computed_q, inputs)
    torch.testing.assert_close(out, run_reference(body, inputs)[0])
    # k and v are loaded in the loop over key blocks: computed, they would be recomputed per query block.
    computed_k = text.replace("attention(%q, %k,", "attention(%q, %k2,").replace(
        "%0, %1", "%k2 = exp(%k) : f32[2,2,9,16]\n      %0, %1")
    with pytest.raises(CodegenError, match="k.* is computed in the kernel"):
        generate(verify(parse(computed_k)))


def test_cost_counts_attention_flops_and_compulsory_bytes():
    q = torch.randn(2, 4, 16, 8)
    body = verify(parse(attention_ir("attention", q, q, q, None, 0.3, False)))
    nbytes, flops = region_cost(body, {})
    assert flops == 4 * 2 * 4 * 16 * 16 * 8
    assert nbytes == 4 * (4 * q.numel() + 2 * 4 * 16)  # q, k, v read, out written, and lse
    causal = verify(parse(attention_ir("attention", q, q, q, None, 0.3, True)))
    assert region_cost(causal, {})[1] == 4 * 2 * 4 * (16 * 17 // 2) * 8


def test_tuning_space_is_pruned_by_shared_memory():
    from mlc.autotune import static_problem
    from mlc.cost import GPUS
    q = torch.randn(1, 1, 4096, 256).half()
    ks = generate(verify(parse(attention_ir("attention", q, q, q, None, 0.1, True))))
    template = TEMPLATES["attention"]
    space = template.space(ks, ks.launch, "max")
    reasons = [static_problem(ks, c, GPUS["A100"]) for c in space]
    assert any(r and r.startswith("shared memory") for r in reasons) and reasons.count(None) > 0
    fixed = template.fixed_config(ks, ks.launch, interpret=False)
    assert static_problem(ks, fixed, GPUS["A100"]) is None


# --- through torch.compile -------------------------------------------------------------------

def compile_and_compare(fn, *inputs, dtype=torch.float32):
    """``fn`` compiled by mlc (interpreter) against eager: outputs and input gradients; the
    warnings naming fallbacks; the graphs mlc compiled."""
    graphs = []

    def backend(gm, example_inputs):
        return mlc.mlc_backend(gm, example_inputs, options={"interpret": True},
                               _on_compile=lambda imported, compiled: graphs.append(compiled.graph))

    torch._dynamo.reset()
    xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    ys = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        got = torch.compile(fn, backend=backend)(*xs)
        got.float().square().sum().backward()
    want = fn(*ys)
    want.float().square().sum().backward()
    torch._dynamo.reset()
    assert rel_err(got, want) < TOL[dtype]
    for x, y in zip(xs, ys):
        if y.grad is not None:
            assert rel_err(x.grad, y.grad) < TOL[dtype]
    fallbacks = {m.group(1) for w in log for m in [re.search(r"mlc: (\S+) runs through ATen", str(w.message))] if m}
    return graphs, fallbacks


def kernels(graphs):
    return [n.attrs["body"] for g in graphs for n in g.nodes if n.op == "kernel"]


def test_sdpa_compiles_to_attention_kernels_forward_and_backward():
    q, k, v = (torch.randn(2, 2, 9, 16) for _ in range(3))
    graphs, fallbacks = compile_and_compare(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                            q, k, v)
    assert not fallbacks
    ops = [n.op for body in kernels(graphs) for n in body.nodes]
    assert {"attention", "attention_grad_kv", "attention_grad_q"} <= set(ops)
    for body in kernels(graphs):  # no launch writes a score-sized tensor
        assert all(tuple(v.type.shape[-2:]) != (9, 9) for v in body.outputs)


def test_sdpa_with_a_bool_mask_gqa_and_a_scale():
    q, k, v = torch.randn(2, 4, 7, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    mask = torch.arange(7)[None, None, None, :] < torch.tensor([7, 4])[:, None, None, None]
    graphs, fallbacks = compile_and_compare(
        lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.3, enable_gqa=True),
        q, k, v, mask)
    assert not fallbacks
    (fwd,) = [n for g in graphs for n in g.nodes if n.op == "kernel" and n.attrs["body"].count("attention")]
    assert fwd.attrs["body"].nodes[-1].attrs == {"scale": 0.3, "is_causal": False, "score_mod": False}


def test_sdpa_in_half_precision():
    q, k, v = (torch.randn(1, 2, 7, 32).half() for _ in range(3))
    graphs, fallbacks = compile_and_compare(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k, v,
                                            dtype=torch.float16)
    assert not fallbacks


def test_dropout_stays_an_aten_call():
    # torch's CPU flash kernel refuses dropout (SDPA then takes its math path, which mlc sees
    # written out), so the graph is traced with fake tensors and imported, not run.
    from torch.fx.experimental.proxy_tensor import make_fx

    from mlc.frontend.fx import import_fx

    q = torch.randn(1, 2, 4, 8)
    gm = make_fx(lambda q: (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, q, q, 0.5)[0],),
                 tracing_mode="fake")(q)
    with pytest.warns(UserWarning, match=r"runs through ATen \(fallback: attention with dropout_p=0.5 is not fused"):
        graph = import_fx(gm).graph
    assert graph.count("aten") == 1 and not graph.count("attention")
    assert any(n.startswith("not fused: attention with dropout_p=0.5") for n in graph.notes)


def test_explain_shows_the_attention_kernel_and_its_roof():
    q, k, v = (torch.randn(1, 2, 64, 32) for _ in range(3))
    report = mlc.explain(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v,
                         interpret=True)
    (kernel,) = [k for k in report.kernels if k.kind == "attention"]
    assert kernel.flops == 4 * 2 * (64 * 65 // 2) * 32 and kernel.name == "fused_attention"
    assert not report.graphs[0].fallbacks
    assert graph_cost(report.graphs[0].graph, {}).flops >= kernel.flops


# --- flash-decoding: attention_split and its combine (passes/split_attention.py) --------------

def split_ir(q, k, v, mask, scale, causal, splits, chunk) -> str:
    b, h, sq, _ = q.shape
    decls = [f"%q: {_type(q.shape, q.dtype)}", f"%k: {_type(k.shape, k.dtype)}", f"%v: {_type(v.shape, v.dtype)}"]
    operands = ["%q", "%k", "%v"]
    if mask is not None:
        decls.append(f"%mask: {_type(mask.shape, mask.dtype)}")
        operands.append("%mask")
    results = f"f32[{b},{h},{splits},{sq},{v.shape[-1]}], f32[{b},{h},{splits},{sq}]"
    attrs = f"scale={scale!r}, is_causal={'true' if causal else 'false'}, splits={splits}, chunk={chunk}"
    return f"""graph @k({', '.join(decls)}) {{
      %0, %1 = attention_split({', '.join(operands)}) {{{attrs}}} : {results}
      return %0, %1
    }}"""


def decode_inputs(b, hq, hkv, sk, d, dtype, lengths=None, sq=1, seed=0):
    """q [b, hq, sq, d] over a cache of sk keys; with ``lengths``, a bool length mask [b, 1, 1, sk]."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, sq, d, generator=g).to(dtype)
    k, v = (torch.randn(b, hkv, sk, d, generator=g).to(dtype) for _ in range(2))
    if lengths is None:
        return q, k, v, None
    mask = torch.arange(sk)[None, None, None, :] < torch.tensor(lengths)[:, None, None, None]
    return q, k, v, mask


# (Sk, splits, chunk, causal, Sq): one key; ranges with no key at all (Sk < chunk); causal ranges
# past the diagonal; a ragged last range.
SPLITS = {"one_key": (1, 2, 16, False, 1), "empty_ranges": (7, 3, 16, False, 1), "causal_3q": (40, 3, 16, True, 3),
          "ragged_300": (300, 3, 128, False, 1), "ragged_1030": (1030, 9, 128, False, 2)}


@pytest.mark.parametrize("case", list(SPLITS))
def test_split_kernel_matches_its_reference_per_key_range(case):
    sk, splits, chunk, causal, sq = SPLITS[case]
    q, k, v, mask = decode_inputs(2, 4, 2, sk, 32, torch.float32, lengths=[sk, max(sk // 3, 1)], sq=sq)
    (acc, lse), ks, body = launch(split_ir(q, k, v, mask, 0.2, causal, splits, chunk), [q, k, v, mask])
    want_acc, want_lse = run_reference(body, [q, k, v, mask])
    assert ks.name == "fused_attention_split" and f"lo = split * {chunk}" in ks.source
    torch.testing.assert_close(acc, want_acc, atol=1e-5, rtol=1e-5)
    empty = torch.isneginf(want_lse)
    # The second sequence's mask leaves its last ranges (or, causal, the first query's) no key.
    assert empty.any() and torch.equal(torch.isneginf(lse), empty) and (acc[empty] == 0).all()
    torch.testing.assert_close(lse[~empty], want_lse[~empty], atol=1e-4, rtol=0)


def test_split_blocks_of_keys_never_straddle_two_ranges():
    q, k, v, _ = decode_inputs(1, 2, 2, 300, 64, torch.float16)
    ks = generate(verify(parse(split_ir(q, k, v, None, 0.1, False, 10, 32))))
    template = TEMPLATES["attention"]
    assert ks.launch == (1, 300, 2, 0, 10) and template.grid(ks.launch, {"BLOCK_M": 16, "BLOCK_N": 32}) == (1, 2, 10)
    for interpret in (True, False):
        assert template.fixed_config(ks, ks.launch, interpret)["BLOCK_N"] <= 32
    assert all(template.clip(ks, c, ks.launch)["BLOCK_N"] <= 32 for c in template.space(ks, ks.launch, "max"))


def compile_inference(fn, *inputs):
    """``fn(*inputs)`` compiled by mlc (interpreter, strict) under no_grad, and the graphs it compiled."""
    graphs = []

    def backend(gm, example_inputs):
        return mlc.mlc_backend(gm, example_inputs, options={"interpret": True, "strict": True},
                               _on_compile=lambda imported, compiled: graphs.append(compiled.graph))

    torch._dynamo.reset()
    with torch.no_grad():
        got = torch.compile(fn, backend=backend)(*inputs)
    torch._dynamo.reset()
    return got, graphs


def sdpa_gqa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


# (batch, Hq, Hkv, Sk, head dim, dtype, lengths of the bool mask or None): a length of 0 is a
# fully masked row. Sk 1 and 7 are too short to split; 300 and 1030 end in a ragged range.
DECODE = {
    "sk1_f32": (1, 8, 2, 1, 64, torch.float32, [1]),
    "sk7_f16": (2, 8, 2, 7, 128, torch.float16, [7, 3]),
    "sk300_f32_masked_row": (2, 8, 2, 300, 64, torch.float32, [300, 0]),
    "sk300_bf16_d128": (1, 8, 2, 300, 128, torch.bfloat16, None),
    "sk1030_f16": (1, 8, 2, 1030, 64, torch.float16, [517]),
    "sk520_bf16_d128": (2, 8, 2, 520, 128, torch.bfloat16, [500, 129]),
    "sk1030_f32_mha": (1, 8, 8, 1030, 128, torch.float32, [1030]),
}


@pytest.mark.parametrize("case", list(DECODE))
def test_decode_attention_is_split_and_matches_eager_sdpa(case):
    b, hq, hkv, sk, d, dtype, lengths = DECODE[case]
    q, k, v, mask = decode_inputs(b, hq, hkv, sk, d, dtype, lengths)
    got, graphs = compile_inference(sdpa_gqa, q, k, v, mask)
    want = sdpa_gqa(q, k, v, mask)
    assert got.dtype == dtype and rel_err(got, want) < TOL[dtype]
    ops = {n.op for body in kernels(graphs) for n in body.nodes}
    assert ("attention_split" in ops) == (sk >= 256) and ("attention" in ops) == (sk < 256)
    if lengths is not None and 0 in lengths:  # a row with no key to attend to is 0, as eager's
        assert got[lengths.index(0)].abs().max() == 0 and torch.isfinite(got).all()


DECODE_IR = """graph @k(%q: f32[1,4,1,16], %k: f32[1,2,300,16], %v: f32[1,2,300,16], %m: b8[1,1,1,300]) {
  %0, %1 = attention(%q, %k, %v, %m) {scale=0.25} : f32[1,4,1,16], f32[1,4,1]
  return %0
}"""


def test_split_pass_writes_the_split_and_a_combine_and_fuse_makes_two_kernels():
    got = run_on_text(DECODE_IR, split_attention)
    FileCheck().check("attention_split(%q, %k, %v, %m) {scale=0.25, splits=3, chunk=128}") \
        .check("amax(").check("exp(").check("sum(").check("div(").check_not("attention(").run(got)
    fused = run_on_text(DECODE_IR, split_attention, fuse)
    assert re.findall(r"kernel @(\w+)", fused) == ["fused_attention_split", "fused_amax_maximum_sub_exp_sum_mul_etc"]
    graph = verify(parse(DECODE_IR))
    notes = run_passes(graph, [split_attention], verify_each=True).notes
    assert notes == ("fused: attention: 1 queries x 300 keys in 4 (batch, head) programs, fewer than the 132 SMs of "
                     "an H100: split over 3 key ranges of 128 keys (flash-decoding, attention_split), combined by a "
                     "reduction",)


@pytest.mark.parametrize("edits, why", [
    ([("f32[1,4,1,16]", "f32[1,4,17,16]"), ("f32[1,4,1]", "f32[1,4,17]")], "17 queries: more than one query block"),
    ([("300", "255")], "255 keys: a short loop"),
    ([("return %0", "return %0, %1")], "the log-sum-exp is a graph output, saved for a backward"),
    ([("[1,4,1", "[33,4,1"), ("%k: f32[1,", "%k: f32[33,"), ("%v: f32[1,", "%v: f32[33,")],
     "132 (batch, head) programs fill the GPU"),
])
def test_split_pass_leaves_attention_that_fills_the_gpu_or_feeds_a_backward(edits, why):
    text = DECODE_IR
    for old, new in edits:
        text = text.replace(old, new)
    graph = verify(parse(text))
    assert split_attention(graph) is graph, why


def test_split_combine_gives_the_log_sum_exp_where_it_is_read_and_empty_rows_as_unsplit():
    text = DECODE_IR.replace("return %0", "%2 = exp(%1) : f32[1,4,1]\n  return %0, %2")
    graph = verify(parse(text))
    split = verify(split_attention(graph))
    assert split.count("attention_split") == 1 and split.count("log") == 1
    for length in (300, 129, 0):  # all keys, a ragged last range, no key: out 0 and exp(+inf)
        q, k, v, mask = decode_inputs(1, 4, 2, 300, 16, torch.float32, [length])
        want = run_reference(graph, [q, k, v, mask])
        got = run_reference(split, [q, k, v, mask])
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_split_cost_reads_operands_once_and_the_combine_reads_the_partials():
    q, k, v, mask = decode_inputs(2, 8, 2, 1030, 64, torch.float16, [1030, 7])
    body = verify(parse(split_ir(q, k, v, mask, 0.125, False, 9, 128)))
    nbytes, flops = region_cost(body, {})
    assert flops == 4 * 2 * 8 * 1 * 1030 * 64
    partials = 4 * (2 * 8 * 9 * 64 + 2 * 8 * 9)
    assert nbytes == 2 * (q.numel() + k.numel() + v.numel()) + mask.numel() + partials
    report = mlc.explain(sdpa_gqa, q, k, v, mask, interpret=True)
    split, combine = [x for x in report.kernels if x.kind in ("attention", "reduction")]
    assert split.name == "fused_where_attention_split" and split.grid == (1, 16, 9)
    assert split.flops == flops + mask.numel()  # and the where(mask, 0, -inf) SDPA hands its flash kernel
    assert combine.bytes == partials + 2 * q.numel()  # the partials in, the output out
    assert report.accuracy.max_rel < TOL[torch.float16]
    assert any("split over 9 key ranges of 128 keys (flash-decoding" in n for n in report.graphs[0].notes)


def test_split_kernel_is_modeled_faster_than_the_unsplit_one_for_a_decode_step():
    from mlc.cost import GPUS
    q, k, v, mask = decode_inputs(1, 8, 2, 1030, 128, torch.float16, [1030])
    split = split_ir(q, k, v, mask, 0.1, False, 9, 128)
    unsplit = attention_ir("attention", q, k, v, mask, 0.1, False)
    template, times = TEMPLATES["attention"], []
    for text in (split, unsplit):
        body = verify(parse(text))
        ks = generate(body)
        cfg = template.fixed_config(ks, ks.launch, interpret=False)
        times.append(template.modeled_time(ks, body, cfg, ks.launch, *region_cost(body, {}), GPUS["H100"], 0, 0))
    assert template.grid(ks.launch, {"BLOCK_M": 16}) == (1, 8) and times[0] < times[1] / 2
