"""The plan's per-shape fast path: what a kernel launch decides from its sizes (outputs,
config, grid, size arguments) is decided once per concrete shape and reused by later calls
at that shape; a new shape (``dynamic=True``) decides again; results stay eager's."""

from __future__ import annotations

import pytest
import torch

import mlc
from mlc.runtime import plan


def f(x, b):
    return torch.relu(x + b) * 2 - 1


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled_with_plans(fn, dynamic=None):
    seen = []
    backend = lambda gm, ex: mlc.mlc_backend(gm, ex, options={"interpret": True},  # noqa: E731
                                             _on_compile=lambda g, c: seen.append(c))
    return torch.compile(fn, backend=backend, dynamic=dynamic), seen


def count_decisions(monkeypatch) -> list:
    """Each time a launch decides its shape (``KernelLaunch.at``): the launch and the shape key."""
    decided = []
    at = plan.KernelLaunch.at

    def counting(self, env, inputs, device):
        decided.append((self, tuple(env[s] for s in self.symbols)))
        return at(self, env, inputs, device)

    monkeypatch.setattr(plan.KernelLaunch, "at", counting)
    return decided


def test_a_second_call_at_the_same_shape_reuses_the_launch(monkeypatch):
    decided = count_decisions(monkeypatch)
    compiled, seen = compiled_with_plans(f)
    x, b = torch.randn(16), torch.randn(16)
    torch.testing.assert_close(compiled(x, b), f(x, b))
    (launch,) = seen[-1].plan.launches
    assert decided == [(launch, ())]
    (at,) = launch.shapes.values()
    assert at.outs == (((16,), (1,), torch.float32),) and not at.empty and not at.aten
    assert at.kwargs["grid"] == (1,) and at.kwargs["warmup"] is False
    x2, b2 = torch.randn(16), torch.randn(16)
    torch.testing.assert_close(compiled(x2, b2), f(x2, b2))  # other values, same shape
    assert decided == [(launch, ())] and launch.shapes[()] is at


def test_dynamic_shapes_decide_once_per_shape(monkeypatch):
    decided = count_decisions(monkeypatch)
    compiled, seen = compiled_with_plans(f, dynamic=True)
    results = []
    for n in (16, 24, 16, 24, 40):
        x, b = torch.randn(n), torch.randn(n)
        results.append((compiled(x, b), f(x, b)))
    assert len(seen) == 1  # one graph for every size: its size symbol is read per call
    for got, want in results:
        torch.testing.assert_close(got, want)
    (launch,) = seen[-1].plan.launches
    assert [key for who, key in decided if who is launch] == [(16,), (24,), (40,)]
    assert sorted(launch.shapes) == [(16,), (24,), (40,)]
    for (n,), at in launch.shapes.items():
        assert at.outs[0][0] == (n,) and n in at.scalars  # the size symbol's value is a launch argument


def test_views_with_symbolic_attributes_at_several_shapes():
    def g(x):
        return (x.reshape(x.shape[0] // 4, 4) * 3).sum(-1)

    compiled, seen = compiled_with_plans(g, dynamic=True)
    for n in (8, 12, 8, 20):
        x = torch.randn(n)
        torch.testing.assert_close(compiled(x), g(x))


def test_a_launch_failing_at_a_new_shape_still_falls_back(monkeypatch):
    compiled, seen = compiled_with_plans(f, dynamic=True)
    x, b = torch.randn(16), torch.randn(16)
    compiled(x, b)
    p = seen[-1].plan
    p.strict = False
    run = plan.KernelLaunch._run

    def failing_at_32(self, inputs, outs, env, at):
        if at.outs[0][0] == (32,):
            raise RuntimeError("planted launch bug")
        return run(self, inputs, outs, env, at)

    monkeypatch.setattr(plan.KernelLaunch, "_run", failing_at_32)
    x2, b2 = torch.randn(32), torch.randn(32)
    with pytest.warns(UserWarning, match="failed to launch"):
        torch.testing.assert_close(compiled(x2, b2), f(x2, b2))
    assert p.failures and len(seen) == 1
    torch.testing.assert_close(compiled(x, b), f(x, b))  # the reference executor from then on


def test_static_shapes_run_one_straight_line_call_after_the_first():
    compiled, seen = compiled_with_plans(f)
    x, b = torch.randn(16), torch.randn(16)
    torch.testing.assert_close(compiled(x, b), f(x, b))
    p = seen[-1].plan
    assert p.source is not None and p.call != p.run_steps
    # one line allocates the output, one launches with the size argument bound
    assert "_empty_cpu(*o2)" in p.source and "(s0, s1, s2, 16," in p.source
    x2, b2 = torch.randn(16), torch.randn(16)
    torch.testing.assert_close(compiled(x2, b2), f(x2, b2))


def test_dynamic_shapes_keep_the_step_list():
    compiled, seen = compiled_with_plans(f, dynamic=True)
    for n in (16, 24):
        x, b = torch.randn(n), torch.randn(n)
        torch.testing.assert_close(compiled(x, b), f(x, b))
    p = seen[-1].plan
    assert p.source is None and p.call == p.run_steps


def test_views_and_several_kernels_in_the_straight_line_call():
    def g(x, w):
        h = torch.relu(x @ w)
        return h.t().contiguous().sum(0), h.reshape(-1)[:5]

    compiled, seen = compiled_with_plans(g)
    x, w = torch.randn(6, 8), torch.randn(8, 4)
    for _ in range(2):
        for got, want in zip(compiled(x, w), g(x, w)):
            torch.testing.assert_close(got, want)
    assert seen[-1].plan.source is not None


def test_a_launch_failing_in_the_straight_line_call_falls_back_once(monkeypatch):
    compiled, seen = compiled_with_plans(f)
    x, b = torch.randn(16), torch.randn(16)
    compiled(x, b)
    p = seen[-1].plan
    p.strict = False
    (launch,) = p.launches
    monkeypatch.setattr(launch.fn, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("planted launch bug")))
    p.straighten()  # written again with the planted kernel
    with pytest.warns(UserWarning, match="failed to launch"):
        torch.testing.assert_close(compiled(x, b), f(x, b))
    assert p.failures and p.call == p.run_steps
    torch.testing.assert_close(compiled(x, b), f(x, b))  # the reference executor from then on


def test_the_straight_line_call_zeroes_what_a_kernel_adds_into_on_every_call():
    # a column sum of the matmul's epilogue is added atomically: its output must start at zero
    # at each call, not only the first (the step list's)
    def g(x, w, h):
        y = (x @ w) * h
        return y, y.sum(0)

    compiled, seen = compiled_with_plans(g)
    x, w, h = torch.randn(40, 8), torch.randn(8, 24), torch.randn(40, 24)
    for _ in range(3):
        for got, want in zip(compiled(x, w, h), g(x, w, h)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    p = seen[-1].plan
    assert ".zero_()" in p.source


def test_the_straight_line_call_allocates_as_on_a_gpu_too():
    # The GPU allocation line (torch.empty_strided with the device), here on CPU tensors.
    compiled, seen = compiled_with_plans(f)
    x, b = torch.randn(16), torch.randn(16)
    compiled(x, b)
    p = seen[-1].plan
    (launch,) = p.launches
    launch.shapes[()] = launch.shapes[()]._replace(on_cpu=False)
    p.straighten()
    assert "_empty(*o2[:2], dtype=o2[2], device=device0)" in p.source
    torch.testing.assert_close(compiled(x, b), f(x, b))
