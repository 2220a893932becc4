"""mlc.explain: the report's figures for a small model, and the CPU fallback warning."""

import subprocess
import sys

import torch
import torch.nn.functional as F

import mlc
from mlc.passes import PIPELINE


def block(x, w, b):
    h = F.layer_norm(x, x.shape[-1:], w, b)
    return torch.softmax(h @ h.transpose(-1, -2), dim=-1)


def test_report_has_kernels_costs_passes_and_eager_figures():
    x, w, b = torch.randn(2, 8, 16), torch.randn(16), torch.randn(16)
    report = mlc.explain(block, x, w, b)
    names = [k.name for k in report.kernels]
    assert names == ["fused_var_mean_add_rsqrt_sub_mul", "fused_amax_sub_exp_sum_div"]
    assert all("@triton.jit" in k.source and k.bytes > 0 for k in report.kernels)
    # layer_norm kernel, bmm, softmax kernel
    assert report.launches == 3
    assert report.eager.launches == 3  # native_layer_norm, bmm, _softmax
    # Read x (1 KiB) + w + b, write h; the bmm; softmax reads and writes [2,8,8].
    assert report.bytes == (2 * 8 * 16 * 4 * 2 + 2 * 16 * 4) + (2 * 2 * 8 * 16 * 4 + 2 * 8 * 8 * 4) + 2 * 2 * 8 * 8 * 4
    assert report.flops > 0 and report.eager.flops > 0
    assert [p.name for p in report.passes] == ["import"] + [p.__name__ for p in PIPELINE]
    assert "kernel @fused_amax_sub_exp_sum_div" in report.passes[-1].ir
    text = str(report)
    assert "mlc" in text and "eager" in text and "fused_amax_sub_exp_sum_div" in text


def test_cpu_without_interpret_warns_once_and_runs_the_reference_executor():
    code = """
import os, warnings, torch, mlc
os.environ.pop("MLC_INTERPRET", None)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    f = torch.compile(lambda x: torch.exp(x) + 1, backend="mlc")
    x = torch.randn(8)
    torch.testing.assert_close(f(x), torch.exp(x) + 1)
    g = torch.compile(lambda x: torch.sin(x) * 2, backend="mlc")
    torch.testing.assert_close(g(x), torch.sin(x) * 2)
print(sum("reference executor" in str(m.message) for m in w))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLC_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "1"


def test_op_without_triton_code_warns_by_name_and_stays_correct(recwarn):
    f = torch.compile(lambda x, y: torch.atan2(torch.exp(x), y) * 2, backend="mlc")
    x, y = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(f(x, y), torch.atan2(torch.exp(x), y) * 2)
    assert any("'atan2' has no Triton code" in str(w.message) for w in recwarn)
