"""``mlc bisect`` and optimization fuel: a planted wrong rewrite is found and named."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from mlc.cli.bisect import bisect
from mlc.ir import fuel
from mlc.ir.rewrite import is_scalar, make
from mlc.passes import simplify as simplify_pass


def f(x, w):
    h = torch.softmax(x, dim=-1) * 2.0
    return torch.relu(h @ w + 1).sum(-1), torch.tanh(x) * 3.0


INPUTS = (torch.randn(8, 16), torch.randn(16, 8))


def planted_wrong_rule(node, x, y):
    """x * 2 -> x + 2: the bug the bisector must find."""
    return make("add", x, y) if is_scalar(y, 2.0) else None


@pytest.fixture
def planted(monkeypatch):
    module = sys.modules[simplify_pass.__module__]
    monkeypatch.setattr(module, "RULES_SIMPLIFY", [*module.RULES_SIMPLIFY, ("mul", planted_wrong_rule)])


def test_fuel_limits_decisions():
    with fuel.budget(None) as counted:
        bisect_free = bisect(f, *INPUTS, interpret=True)
    assert bisect_free.full.error < 1e-5 and bisect_free.culprit is None
    assert "nothing to bisect" in bisect_free.text()
    assert counted.used == bisect_free.decisions > 3  # fusion merges, at least
    assert any(d.startswith("fuse: ") for d in bisect_free.full.decisions)


def test_bisect_names_the_planted_rule(planted):
    result = bisect(f, *INPUTS, interpret=True)
    assert result.full.error > 0.01
    assert result.culprit is not None
    assert "planted_wrong_rule" in result.full.decisions[result.culprit - 1]
    assert result.before.error < 1e-5 < result.after.error
    assert result.compiles <= 2 + result.decisions.bit_length() + 1  # a binary search
    text = result.text()
    assert f"decision {result.culprit}: rewrite: mul by planted_wrong_rule" in text
    assert "-" in text and "+" in text and "add(" in text  # the IR diff shows the add that replaced the mul


def test_mlc_bisect_command(tmp_path):
    script = tmp_path / "model.py"
    script.write_text(textwrap.dedent("""
        import torch

        def mlc_explain():
            return (lambda x: torch.exp(x) * 2.0 + 1), (torch.randn(4, 8),)
    """))
    run = subprocess.run([sys.executable, "-m", "mlc", "bisect", str(script), "-o", "interpret=true"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "outputs match eager" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "mlc", "bisect", str(script), "-o", "fuel=-"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("mlc bisect: ")
