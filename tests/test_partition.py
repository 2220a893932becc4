"""The forward/backward split (``mlc.frontend.partition``): the min cut saves less than the
default partitioner, never more, and bf16 saves activations in bf16 with gradients in tolerance."""

from __future__ import annotations

import functools
import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mlc


class LlamaMLP(nn.Module):
    def __init__(self, d=32, h=88):
        super().__init__()
        self.w1, self.w3, self.w2 = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False), nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class GPT2MLP(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Attention(nn.Module):
    """SDPA whose output the projection reads through a transpose and a reshape: the forward
    would save the output for SDPA's backward and that view of it for the projection's."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def train_step(model_cls, **options):
    torch.manual_seed(0)
    model = model_cls()
    eager = model_cls()
    eager.load_state_dict(model.state_dict())
    x = torch.randn(2, 8, 32)
    seen = []
    backend = functools.partial(mlc.mlc_backend, options={"interpret": True, **options},
                                _on_compile=lambda imported, compiled: seen.append(compiled))
    out = torch.compile(model, backend=backend)(x.clone().requires_grad_())
    out.float().square().mean().backward()
    eager(x.clone()).float().square().mean().backward()
    (forward,) = [c for c in seen if c.saved is not None]
    grads = {n: (p.grad, dict(eager.named_parameters())[n].grad) for n, p in model.named_parameters()}
    return forward.saved, grads


def test_the_min_cut_recomputes_what_the_default_partitioner_saves():
    saved, grads = train_step(LlamaMLP)
    assert saved.partitioner == "min-cut" and saved.recomputed
    assert saved.bytes < saved.default_bytes  # silu(x @ w1) * (x @ w3) is recomputed, not stored
    for got, want in grads.values():
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_saved_bytes_never_exceed_the_default_partitioners():
    saved, _ = train_step(GPT2MLP)
    assert saved.bytes <= saved.default_bytes
    assert "saved for backward" in str(saved) and "graph input" in str(saved)


def test_views_of_one_saved_tensor_are_saved_once():
    saved, grads = train_step(Attention)
    assert len(saved.shared) == 1  # the projection's [B*T, C] view of the attention output
    assert not set(saved.shared) & set(saved.names)
    for got, want in grads.values():
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision,low,tol", [("bf16", torch.bfloat16, 2e-2), ("fp16", torch.float16, 4e-3)])
def test_low_precision_saves_activations_in_that_type(precision, low, tol):
    full, _ = train_step(GPT2MLP)
    saved, grads = train_step(GPT2MLP, precision=precision)
    assert saved.narrowed and set(saved.narrowed) <= set(saved.names)
    assert saved.bytes == full.bytes // 2  # every saved activation was fp32
    for got, want in grads.values():  # against the fp32 model: the documented tolerance
        assert (got - want).abs().max() <= tol * want.abs().max()


def test_explain_reports_a_training_step_with_its_saved_activations():
    torch.manual_seed(0)
    report = mlc.explain(LlamaMLP(), torch.randn(2, 8, 32, requires_grad=True), interpret=True, backward=True)
    names = [g.name for g in report.graphs]
    assert any(n.startswith("forward") for n in names) and any(n.startswith("backward") for n in names)
    (forward,) = [g for g in report.graphs if g.saved]
    assert "saved for backward" in forward.saved and "recomputed in backward instead" in forward.saved
    assert f"saved for backward: {forward.saved}" in str(report)
    assert report.eager.launches > len([g for g in report.graphs])  # eager counts the backward too
    assert report.accuracy.max_rel < 1e-5


def test_bias_gradients_are_summed_in_the_matmul_kernels_of_the_backward():
    # dh = dy @ w2 through gelu's derivative, and its batch sum (fc's bias gradient): one kernel
    torch.manual_seed(0)
    report = mlc.explain(GPT2MLP(), torch.randn(2, 8, 32, requires_grad=True), interpret=True, backward=True)
    (backward,) = [g for g in report.graphs if g.name.startswith("backward")]
    kernels = [n for n in backward.graph.nodes if n.op == "kernel"]
    fused = [k for k in kernels if k.attrs["body"].count("mm") and k.attrs["body"].count("sum")]
    assert len(fused) == 1 and [str(t) for t in fused[0].types][-1] == "f32[1,128]"
    _, grads = train_step(GPT2MLP)
    for got, want in grads.values():
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_low_precision_keeps_the_log_sum_exp_of_attention_by_hand_in_fp32():
    # The backward exponentiates the recomputed scores minus the saved log-sum-exp: in bf16 it
    # would be off by up to |lse| / 256 in every probability's exponent.
    from torch._functorch.aot_autograd import aot_function

    from mlc.frontend.decompositions import decompositions
    from mlc.frontend.partition import partition

    def attention(q, k, v):
        return (q @ k.transpose(-1, -2) * 0.3).softmax(-1) @ v

    seen = {}

    def forward_compiler(gm, inputs):
        seen["gm"] = gm
        return gm

    q, k, v = (torch.randn(2, 2, 7, 8, requires_grad=True) for _ in range(3))
    fn = aot_function(attention, fw_compiler=forward_compiler, bw_compiler=lambda gm, inputs: gm,
                      partition_fn=functools.partial(partition, precision="bf16"), decompositions=decompositions())
    fn(q, k, v).sum().backward()
    gm = seen["gm"]
    (lse,) = [n for n in gm.graph.nodes if n.target is operator.getitem and n.args[1] == 1
              and n.args[0].target is torch.ops.mlc.attention.default]
    saved = gm.meta["mlc_saved"]
    assert lse.name in saved.names and lse.name not in saved.narrowed
    assert saved.narrowed  # the rest of the fp32 activations (the output) are narrowed
