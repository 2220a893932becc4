"""The safety net: a kernel that fails to generate, to load or to launch runs through the
reference executor with one warning that names it, and ``explain`` lists it as a fallback;
``strict=True`` lets the error through."""

from __future__ import annotations

import sys

import pytest
import torch

import mlc
from mlc.runtime import plan


def f(x, y):
    return torch.softmax(x, dim=-1) * y + 1, torch.relu(x @ y.t() + 1)


INPUTS = (torch.randn(6, 10), torch.randn(6, 10))
NET = {"interpret": True, "strict": False, "cache": False}


def planted(*args, **kwargs):
    raise RuntimeError("planted codegen bug")


def break_generation(monkeypatch):
    monkeypatch.setattr(plan, "generate", planted)


def break_loading(monkeypatch):
    monkeypatch.setattr(plan, "load_kernel", planted)


def break_launch(monkeypatch):
    monkeypatch.setattr(plan.KernelLaunch, "_run", planted)


BREAKS = {"generate": (break_generation, "could not be generated or loaded"),
          "load": (break_loading, "could not be generated or loaded"),
          "launch": (break_launch, "failed to launch")}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("stage", list(BREAKS))
def test_a_failing_kernel_runs_through_the_reference_executor(stage, monkeypatch):
    breaker, what = BREAKS[stage]
    breaker(monkeypatch)
    compiled = torch.compile(f, backend="mlc", options=NET)
    with pytest.warns(UserWarning, match=rf"mlc: kernel fused_\w+ {what} \(RuntimeError: planted codegen bug\)"):
        got = compiled(*INPUTS)
    for g, w in zip(got, f(*INPUTS)):
        torch.testing.assert_close(g, w)
    again = compiled(*INPUTS)  # the next call takes the reference path without trying again
    torch.testing.assert_close(again[0], got[0])


@pytest.mark.parametrize("stage", list(BREAKS))
def test_explain_reports_the_fallback(stage, monkeypatch):
    BREAKS[stage][0](monkeypatch)
    with pytest.warns(UserWarning, match="reference executor"):
        report = mlc.explain(f, *INPUTS, **NET)
    caught = [k for k in report.kernels if k.fallback]
    assert caught and all("RuntimeError: planted codegen bug" in k.fallback for k in caught)
    assert "(safety net): " in str(report)
    assert report.accuracy.max_rel < 1e-5


def test_the_html_report_lists_the_fallback(monkeypatch, tmp_path):
    break_launch(monkeypatch)
    with pytest.warns(UserWarning, match="reference executor"):
        report = mlc.explain(f, *INPUTS, **NET)
    report.save_html(tmp_path / "r.html")
    assert "runs through the reference executor (safety net)" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("stage", list(BREAKS))
def test_strict_lets_the_error_through(stage, monkeypatch):
    BREAKS[stage][0](monkeypatch)
    compiled = torch.compile(f, backend="mlc", options={**NET, "strict": True})
    with pytest.raises(Exception, match="planted codegen bug"):
        compiled(*INPUTS)


def test_a_code_generator_crash_during_fusion_leaves_the_ops_unfused(monkeypatch):
    from mlc.passes import fuse as fuse_pass

    monkeypatch.setattr(sys.modules[fuse_pass.__module__], "generate", planted)
    with pytest.warns(UserWarning, match=r"generating a kernel failed \(RuntimeError: planted codegen bug\)"):
        report = mlc.explain(f, *INPUTS, **NET)
    assert not report.kernels and report.accuracy.max_rel < 1e-5
    assert any("code generation failed (RuntimeError: planted codegen bug)" in n for g in report.graphs
               for n in g.notes)
    monkeypatch.setattr(sys.modules[fuse_pass.__module__], "generate", planted)
    with pytest.raises(Exception, match="planted codegen bug"):
        torch.compile(f, backend="mlc", options={**NET, "strict": True})(*INPUTS)
