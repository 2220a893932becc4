"""Attention written by hand (q @ kᵀ, a pointwise f, softmax, @ v) compiles to one attention
kernel that computes f on each block of scores, against eager in Triton's interpreter.

Each case is compiled with ``mlc.explain``, which runs the compiled function and eager on the
same inputs: the test checks the error, that a kernel holds the attention with its score
modification, and that no launch writes a tensor of the B x H x Sq x Sk scores.
"""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import mlc
from mlc.testing.models import MODELS

B, H, D = 2, 2, 8
# max |mlc - eager| / max |eager| (Accuracy.max_rel): fp32 products in the kernel vs eager's
# rounded fp16/bf16 scores and probabilities.
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def bert_padding(q, k, v, keep):
    """Hugging Face BERT: the scale, then ``(1 - mask) * finfo.min`` added per key."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = s + (1.0 - keep[:, None, None, :].to(q.dtype)) * torch.finfo(q.dtype).min
    return s.softmax(dim=-1) @ v


def causal_tril(q, k, v):
    """A causal mask from ``tril`` and ``masked_fill``, the softmax in fp32."""
    t = q.shape[-2]
    s = q @ k.transpose(-1, -2) * (1 / math.sqrt(q.shape[-1]))
    s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v


def relative_bias(q, k, v, bias):
    """T5: no scale, a relative-position bias [H, S, S] broadcast over the batch."""
    return torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1) @ v


def soft_capped(q, k, v):
    """Gemma-2 style tanh soft-capping of the scaled scores, then a causal mask from triu."""
    t = q.shape[-2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = 5.0 * torch.tanh(s / 5.0)
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v


def inputs(case, s, dtype):
    g = torch.Generator().manual_seed(s)
    q, k, v = (torch.randn(B, H, s, D, generator=g).to(dtype) for _ in range(3))
    if case is bert_padding:
        lengths = torch.tensor([s, max(1, s - 3)])
        return q, k, v, (torch.arange(s)[None, :] < lengths[:, None]).long()
    if case is relative_bias:
        return q, k, v, torch.randn(H, s, s, generator=g).to(dtype)
    return q, k, v


def score_sized(report, b, h, sq, sk) -> list[str]:
    """The values of the compiled graphs as large as the scores and shaped like them."""
    return [f"{n.op} {t}" for g in report.graphs for n in g.graph.nodes for t in n.types
            if getattr(t, "shape", None) and len(t.shape) >= 2 and tuple(t.shape[-2:]) == (sq, sk)
            and math.prod(t.shape) >= b * h * sq * sk]


def attention_kernels(report) -> list:
    return [n for g in report.graphs for n in g.graph.nodes if n.op == "kernel"
            and any(m.op == "attention" and m.attrs["score_mod"] for m in n.attrs["body"].nodes)]


def check(fn, args, dtype, b=B, h=H):
    r = mlc.explain(fn, *args, interpret=True)
    assert r.accuracy.max_rel <= TOL[dtype], str(r.accuracy)
    assert len(attention_kernels(r)) == 1, "\n".join(n for g in r.graphs for n in g.notes)
    assert score_sized(r, b, h, args[0].shape[-2], args[1].shape[-2]) == []
    notes = "\n".join(n for g in r.graphs for n in g.notes)
    assert "fused: attention: " in notes and "scores are never written" in notes
    return r


CASES = [bert_padding, causal_tril, relative_bias, soft_capped]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_by_hand_attention_is_one_kernel_in_each_dtype(case, dtype):
    check(case, inputs(case, 7, dtype), dtype)


@pytest.mark.parametrize("s", [1, 77])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_by_hand_attention_at_odd_lengths(case, s):
    check(case, inputs(case, s, torch.float32), torch.float32)


@pytest.mark.parametrize("case", [bert_padding, relative_bias], ids=lambda c: c.__name__)
def test_one_query_over_many_keys(case):
    q, k, v, extra = inputs(case, 77, torch.float32)
    if case is relative_bias:
        extra = extra[:, -1:]  # the bias of the last query's row
    check(case, (q[:, :, -1:], k, v, extra), torch.float32)


@pytest.mark.parametrize("case", [bert_padding, soft_capped], ids=lambda c: c.__name__)
def test_one_query_over_a_long_cache_splits_the_keys(case):
    # Flash-decoding of attention written by hand: 2 x 2 (batch, head) programs would leave a
    # GPU idle, so the 300 keys are split in ranges whose kernels compute f on their blocks,
    # and a reduction combines them.
    q, k, v, *extra = inputs(case, 300, torch.float32)
    args = (q[:, :, -1:], k, v, *extra)  # soft_capped's causal mask of one query keeps every key
    r = mlc.explain(case, *args, interpret=True)
    assert r.accuracy.max_rel <= 1e-5, str(r.accuracy)
    splits = [m for g in r.graphs for n in g.graph.nodes if n.op == "kernel" for m in n.attrs["body"].nodes
              if m.op == "attention_split" and m.attrs["score_mod"]]
    assert len(splits) == 1 and splits[0].attrs["splits"] > 1
    notes = "\n".join(n for g in r.graphs for n in g.notes)
    assert "(flash-decoding, attention_split)" in notes and "scores are never written" in notes, notes
    assert score_sized(r, B, H, 1, 300) == []


def test_an_empty_sequence_masked_by_finfo_min_averages_as_in_eager():
    q, k, v, keep = inputs(bert_padding, 7, torch.float32)
    keep[1] = 0  # every key of the second sequence is padding: eager's softmax is uniform there
    check(bert_padding, (q, k, v, keep), torch.float32)


def test_the_kernel_computes_the_score_modification_blockwise():
    r = check(soft_capped, inputs(soft_capped, 7, torch.float32), torch.float32)
    (k,) = [k for k in r.kernels if "attention" in k.name]
    src = k.source
    # The loop multiplies q by a block of keys and caps that block; nothing S x S is stored.
    loop = src[src.index("for start_n"):src.index("# -- epilogue")]
    assert "qk = tl.dot(q, kT" in loop and "tl.exp(" in loop  # tanh, written with tl.exp
    assert "offs_m" in loop and "offs_n" in loop  # the causal compare, from the block offsets
    assert src.count("tl.store(") == 1


def test_scores_with_another_reader_are_written_and_say_why():
    def also_returns_scores(q, k, v):
        s = q @ k.transpose(-1, -2) * 0.5
        return s.softmax(-1) @ v, s

    r = mlc.explain(also_returns_scores, *inputs(None, 7, torch.float32), interpret=True)
    notes = "\n".join(n for g in r.graphs for n in g.notes)
    assert "not fused: attention: the scores (mul) have another reader (a graph output" in notes, notes
    assert attention_kernels(r) == []
    assert r.accuracy.max_rel <= 1e-5


# max |mlc - eager| / max |eager| over the three gradients: fp16/bf16 eager rounds the scores,
# probabilities and their gradients, mlc's kernels keep them in fp32.
GRAD_TOL = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}


def grad_kernels(report) -> list[str]:
    return sorted(m.op for g in report.graphs for n in g.graph.nodes if n.op == "kernel"
                  for m in n.attrs["body"].nodes if m.op.startswith("attention_grad") and m.attrs["score_mod"])


def check_training(fn, args, dtype, b=B, h=H):
    """A training step of ``fn`` (q, k and v require grad): the forward and both gradient
    kernels are attention kernels computing f on their blocks, no value is score-sized in
    either graph, and the gradients are eager's."""
    leaves = [t.clone().requires_grad_() for t in args[:3]]
    r = mlc.explain(fn, *leaves, *args[3:], interpret=True, backward=True)
    notes = "\n".join(n for g in r.graphs for n in g.notes)
    assert len(attention_kernels(r)) == 1, notes
    assert grad_kernels(r) == ["attention_grad_kv", "attention_grad_q"], notes
    assert score_sized(r, b, h, args[0].shape[-2], args[1].shape[-2]) == []
    assert "the forward saves the log-sum-exp" in r.graphs[0].saved
    got, expected = ([t.clone().requires_grad_() for t in args[:3]] for _ in range(2))
    torch.compile(fn, backend="mlc")(*got, *args[3:]).float().square().sum().backward()
    fn(*expected, *args[3:]).float().square().sum().backward()
    scale = max(e.grad.float().abs().max().item() for e in expected)
    err = max((g.grad.float() - e.grad.float()).abs().max().item() for g, e in zip(got, expected)) / scale
    assert err <= GRAD_TOL[dtype], err
    return r


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_training_recomputes_the_probabilities_blockwise(case):
    # The forward saves q, k, v, f's operands, the output and the log-sum-exp; the backward's two
    # kernels compute the scores, f, the probabilities and f's derivative on each block.
    check_training(case, inputs(case, 7, torch.float32), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("case", [bert_padding, soft_capped], ids=lambda c: c.__name__)
def test_training_in_low_precision(case, dtype):
    check_training(case, inputs(case, 7, dtype), dtype)


@pytest.mark.parametrize("s", [1, 77])
@pytest.mark.parametrize("case", [causal_tril, relative_bias], ids=lambda c: c.__name__)
def test_training_at_odd_lengths(case, s):
    check_training(case, inputs(case, s, torch.float32), torch.float32)


def test_training_kernel_derives_the_soft_cap_on_each_block():
    r = check_training(soft_capped, inputs(soft_capped, 7, torch.float32), torch.float32)
    (k,) = [k for k in r.kernels if "dq_mask" in k.source]  # attention_grad_q's kernel
    loop = k.source[k.source.index("for start_n"):]
    # tanh's derivative, from the block of q @ kᵀ, applied to p * (dp - delta); one store (dq)
    assert "s_raw = qk" in loop and "ds = tl.where(s_mask" in loop and "tl.exp(" in loop
    assert k.source.count("tl.store(") == 1


def test_training_with_a_learned_bias_saves_the_probabilities_and_says_why():
    # The bias's gradient is the scores' own (summed over the batch): it is score-sized, so the
    # attention stays as autograd wrote it, and the note says why.
    q, k, v, bias = inputs(relative_bias, 7, torch.float32)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, bias)]
    r = mlc.explain(relative_bias, *leaves, interpret=True, backward=True)
    assert "not fused: attention: in training, the scores' gradient is read by" in r.graphs[0].saved
    assert "an operand of f needs a gradient" in r.graphs[0].saved
    got, expected = ([t.clone().requires_grad_() for t in (q, k, v, bias)] for _ in range(2))
    torch.compile(relative_bias, backend="mlc")(*got).square().sum().backward()
    relative_bias(*expected).square().sum().backward()
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def grouped_query(q, k, v):
    """Grouped-query heads repeated by hand: k by repeat_interleave, v by expand + reshape."""
    b, hkv, t, d = k.shape
    n = q.shape[1] // hkv
    k = k.repeat_interleave(n, dim=1)
    v = v[:, :, None].expand(b, hkv, n, t, d).reshape(b, hkv * n, t, d)
    s = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1),
                                                             float("-inf"))
    return s.softmax(-1) @ v


@pytest.mark.parametrize("s,dtype", [(1, torch.float32), (7, torch.float32), (77, torch.float32),
                                     (7, torch.float16), (7, torch.bfloat16)], ids=str)
def test_grouped_query_heads_repeated_by_hand_are_read_without_copies(s, dtype):
    g = torch.Generator().manual_seed(s)
    q = torch.randn(B, 4, s, D, generator=g).to(dtype)
    k, v = (torch.randn(B, 2, s, D, generator=g).to(dtype) for _ in range(2))
    r = check(grouped_query, (q, k, v), dtype, h=4)
    (kernel,) = attention_kernels(r)
    # the attention reads k and v with their 2 heads: no [B, 2, 2, S, D] repeat is materialized
    name = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
    assert [str(x.type) for x in kernel.inputs[1:3]] == [f"{name}[{B},2,{s},{D}]"] * 2
    assert not [t for g in r.graphs for n in g.graph.nodes for t in n.types if getattr(t, "rank", 0) == 5]


@pytest.mark.parametrize("name", ["bert_layer", "llama_block"])
def test_zoo_models_written_by_hand_train_without_scores(name):
    # Their gradients against eager: tests/test_models.py (test_training_matches_eager).
    model, args = MODELS[name].build(batch=2, seq=12, train=True)
    r = mlc.explain(model, *args, interpret=True, backward=True)
    assert len(attention_kernels(r)) == 1
    assert grad_kernels(r) == ["attention_grad_kv", "attention_grad_q"]
    assert score_sized(r, 2, model.n_heads, 12, 12) == []


@pytest.mark.parametrize("name", ["bert_layer", "llama_block"])
def test_zoo_models_written_by_hand_get_one_attention_kernel(name):
    spec = MODELS[name]
    model, args = spec.build(batch=2, seq=12)  # 12 tokens: no other value is [.., 12, 12]
    r = mlc.explain(model, *args, interpret=True)
    assert r.accuracy.max_rel <= 1e-5, str(r.accuracy)
    assert len(attention_kernels(r)) == 1
    assert score_sized(r, 2, model.n_heads, 12, 12) == []


@pytest.mark.parametrize("name, tokens", [("vit_block", 5), ("gpt2_block", 12)])
def test_zoo_models_through_sdpa_keep_their_attention_kernel(name, tokens):
    # These call F.scaled_dot_product_attention (not by hand): the attention op, no scores.
    model, args = MODELS[name].build(batch=2, seq=tokens)
    r = mlc.explain(model, *args, interpret=True)
    assert r.accuracy.max_rel <= 1e-5, str(r.accuracy)
    assert any(m.op == "attention" for g in r.graphs for n in g.graph.nodes if n.op == "kernel"
               for m in n.attrs["body"].nodes)
    assert score_sized(r, 2, model.n_heads, tokens, tokens) == []


def test_sdpa_and_the_same_attention_by_hand_agree():
    q, k, v = inputs(None, 7, torch.float32)
    by_hand = torch.compile(causal_tril, backend="mlc")(q, k, v)
    torch.testing.assert_close(by_hand, F.scaled_dot_product_attention(q, k, v, is_causal=True),
                               rtol=1e-5, atol=1e-5)


def test_scores_read_transposed_are_not_a_score_modification():
    def transposed(q, k, v):
        return ((q @ k.transpose(-1, -2)).transpose(-1, -2) * 0.5).softmax(-1) @ v

    r = mlc.explain(transposed, *inputs(None, 7, torch.float32), interpret=True)
    notes = "\n".join(n for g in r.graphs for n in g.notes)
    assert "not fused: attention: attention_scores + mul + copy + attention: the scores are read at another " \
           "position than their own block" in notes, notes
    assert attention_kernels(r) == [] and r.accuracy.max_rel <= 1e-5


# --- the CUDA variants of SDPA ------------------------------------------------------------
# On a GPU torch hands a backend one of three CUDA kernels instead of the CPU one. Their fake
# (meta) implementations run on CPU tensors, so Dynamo and AOT autograd trace them here; the
# compiled graphs then run mlc's kernels in the interpreter. A fallback would call the CUDA
# kernel on CPU tensors and fail, so the warnings filter makes any fallback an error.

aten = torch.ops.aten


def cuda_flash(q, k, v, mask, causal, scale):
    return aten._scaled_dot_product_flash_attention.default(q, k, v, 0.0, causal, scale=scale)[0]


def cuda_efficient(q, k, v, mask, causal, scale):
    return aten._scaled_dot_product_efficient_attention.default(q, k, v, mask, True, 0.0, causal, scale=scale)[0]


def cuda_cudnn(q, k, v, mask, causal, scale):
    return aten._scaled_dot_product_cudnn_attention.default(q, k, v, mask, True, 0.0, causal, scale=scale)[0]


@pytest.mark.parametrize("variant,masked", [(cuda_flash, False), (cuda_efficient, True), (cuda_efficient, False),
                                            (cuda_cudnn, False)], ids=["flash", "efficient-bias", "efficient",
                                                                       "cudnn"])
@pytest.mark.parametrize("s,causal,dtype", [(7, True, torch.float32), (33, False, torch.float32),
                                             (1, True, torch.float16)], ids=["s7-causal", "s33", "s1-causal-f16"])
def test_cuda_sdpa_variants_compile_forward_and_backward(variant, masked, s, causal, dtype):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(s)
    q, k, v = (torch.randn(B, H, s, D, generator=g).to(dtype).requires_grad_() for _ in range(3))
    mask = torch.randn(B, H, s, s, generator=g).to(dtype) if masked else None
    # (output rtol and atol, gradients' rtol, gradients' atol)
    tol = {torch.float32: (1e-5, 1e-4, 1e-5), torch.float16: (1e-2, 2e-2, 2e-2)}[dtype]
    scale = 0.3
    compiled = torch.compile(variant, backend="mlc", options={"interpret": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = compiled(q, k, v, mask, causal, scale)
        out.square().sum().backward()
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    want = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask, is_causal=causal, scale=scale)
    want.square().sum().backward()
    torch.testing.assert_close(out, want, rtol=tol[0], atol=tol[0])
    for got, ref in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        torch.testing.assert_close(got, ref, rtol=tol[1], atol=tol[2])
