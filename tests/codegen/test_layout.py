"""Layouts: transposes absorbed into kernels' loads and stores, never a copy kernel.

A kernel reads any input through its strides and views, so ``x.permute(...).contiguous()``
followed by pointwise work is one kernel; a matmul kernel whose output is read transposed
writes it transposed. Each decision is in the kernel's ``layout`` notes, which
``mlc.explain`` shows.
"""

import pytest
import torch

import mlc
from mlc.codegen import aot
from mlc.codegen.templates import generate
from mlc.ir import parse, verify


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def one_kernel(fn, *args):
    report = mlc.explain(fn, *args)
    (kernel,) = report.kernels
    assert report.launches == 1 and report.accuracy.max_abs < 1e-5
    torch.testing.assert_close(torch.compile(fn, backend="mlc")(*args), fn(*args))
    return kernel


def test_permute_contiguous_then_pointwise_is_one_kernel():
    kernel = one_kernel(lambda x: (x.permute(0, 2, 1).contiguous() * 2 + 1).relu(), torch.randn(4, 16, 32))
    assert kernel.layout == ["in0 f32[4,16,32] read through permute [0, 2, 1] (no copy)"]


def test_matmul_result_read_transposed_is_written_transposed():
    kernel = one_kernel(lambda x, w: (x @ w).t().contiguous() + 1, torch.randn(16, 32), torch.randn(32, 24))
    assert kernel.kind == "matmul"
    assert kernel.layout == ["out0 f32[24,16] written transposed (the tile's [N, M] positions)"]


@pytest.mark.parametrize("n", [8, 12])  # square tiles too: [n, m] then has the result's own shape
def test_batched_matmul_result_written_transposed(n):
    kernel = one_kernel(lambda q, k: torch.sigmoid((q @ k.transpose(-1, -2)).transpose(-1, -2).contiguous()),
                        torch.randn(3, 8, 16), torch.randn(3, n, 16))
    assert kernel.kind == "matmul" and any("written transposed" in note for note in kernel.layout)
    assert "in1 f32[3," in kernel.layout[0] and "read through permute" in kernel.layout[0]


def test_transposed_store_compiles_for_the_gpu():
    body = verify(parse("""
        graph @k(%a: f16[64,32], %b: f16[32,48]) {
          %c = mm(%a, %b) : f16[64,48]
          %t = permute(%c) {dims=[1, 0]} : f16[48,64]
          %r = relu(%t) : f16[48,64]
          return %r
        }"""))
    ks = generate(body)
    assert ks.layout == ["out0 f16[48,64] written transposed (the tile's [N, M] positions)"]
    result = aot.compile_for_gpu(ks, 80)
    assert result.ok and result.spills == 0, result.error
