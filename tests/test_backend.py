"""The ``torch.compile`` backend: registration, options and modes, IR dumps, fallbacks,
``mlc.capture`` and graph breaks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend
from torch._dynamo.exc import BackendCompilerFailed

import mlc
from mlc.options import MODES, OPTIONS, make_options
from mlc.passes import PIPELINE


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def f(x):
    return torch.tanh(x @ x.t()).sum(-1) * 2


def compile_error(**compile_kwargs) -> Exception:
    """What ``torch.compile(f, backend="mlc", ...)`` raises on its first call.

    Dynamo calls the backend only then, and reports what it raises as BackendCompilerFailed
    whose message repeats the backend's error; the backend's own exception is ``inner_exception``.
    """
    compiled = torch.compile(f, backend="mlc", **compile_kwargs)
    with pytest.raises(BackendCompilerFailed) as info:
        compiled(torch.randn(3, 4))
    assert type(info.value.inner_exception).__name__ in str(info.value)
    return info.value.inner_exception


# --- registration ---------------------------------------------------------------------------


def test_import_registers_backend():
    assert "mlc" in torch._dynamo.list_backends()
    assert lookup_backend("mlc") is mlc.mlc_backend


def test_entry_point_without_import():
    # A fresh interpreter that never imports mlc: torch finds the backend through the
    # torch_dynamo_backends entry point.
    code = textwrap.dedent("""
        import sys, torch
        assert "mlc" not in sys.modules
        f = lambda x: torch.tanh(x @ x.t()).sum(-1) * 2
        x = torch.randn(3, 4)
        torch.testing.assert_close(torch.compile(f, backend="mlc")(x), f(x))
        from torch._dynamo.backends.registry import lookup_backend
        import mlc
        assert lookup_backend("mlc") is mlc.mlc_backend
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLC_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=os.path.dirname(os.path.abspath(__file__)), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


# --- options and modes ------------------------------------------------------------------------


def test_unknown_option():
    err = compile_error(options={"verfy": True})
    assert isinstance(err, ValueError)
    assert "'verfy'" in str(err)
    for opt in OPTIONS:
        assert opt.name in str(err)


@pytest.mark.parametrize("options", [{"verify": "yes"}, {"verify": 1}, {"dump_dir": 42}])
def test_bad_option_type(options):
    err = compile_error(options=options)
    assert isinstance(err, ValueError)
    assert repr(next(iter(options))) in str(err)


def test_capture_checks_options_early():
    with pytest.raises(ValueError, match="valid options"):
        mlc.capture(f, torch.randn(3, 4), verfy=True)


def test_unknown_mode():
    err = compile_error(mode="fastest")
    assert isinstance(err, ValueError)
    assert "'fastest'" in str(err)
    for mode in MODES:
        assert mode in str(err)


@pytest.mark.parametrize("mode", MODES)
def test_valid_modes(mode):
    x = torch.randn(3, 4)
    torch.testing.assert_close(torch.compile(f, backend="mlc", mode=mode)(x), f(x))


def test_options_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLC_VERIFY", "1")
    monkeypatch.setenv("MLC_DUMP_DIR", str(tmp_path))
    opts = make_options()
    assert opts.verify is True and opts.dump_dir == str(tmp_path)
    monkeypatch.setenv("MLC_VERIFY", "0")
    assert make_options().verify is False
    assert make_options(options={"verify": True}).verify is True  # an explicit option wins


# --- IR dumps ---------------------------------------------------------------------------------

HEADER = re.compile(r"// after pass: (\w+) \((\d+\.\d+) ms\)\n")


def check_dump(dump_dir, n_graphs: int):
    """One file per pass and graph, named graph.NN.pass.mlc, headed by the pass and its time."""
    passes = ["import"] + [p.__name__ for p in PIPELINE]
    files = sorted(os.listdir(dump_dir))
    graphs = sorted({name.split(".")[0] for name in files})
    assert len(graphs) == n_graphs, files
    for graph in graphs:
        expected = [f"{graph}.{i:02d}.{name}.mlc" for i, name in enumerate(passes)]
        assert [name for name in files if name.split(".")[0] == graph] == expected
        for i, name in enumerate(expected):
            text = open(os.path.join(dump_dir, name)).read()
            header = HEADER.match(text)
            assert header and header.group(1) == passes[i], text[:200]
            assert text[header.end():].startswith(f"graph @{graph}(")


def test_dump_dir_option(tmp_path):
    x = torch.randn(3, 4, requires_grad=True)
    out = torch.compile(f, backend="mlc", options={"dump_dir": str(tmp_path / "ir")})(x)
    out.sum().backward()
    check_dump(tmp_path / "ir", n_graphs=2)  # forward and backward


def test_dump_dir_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLC_DUMP_DIR", str(tmp_path))
    with torch.no_grad():
        torch.compile(f, backend="mlc")(torch.randn(3, 4))
    check_dump(tmp_path, n_graphs=1)  # inference


# --- fallbacks --------------------------------------------------------------------------------


def ops_outside_the_table(x):
    values, _ = torch.sort(x, dim=-1)
    return values * 2 + torch.cumsum(x, 0) + torch.topk(x, 2, dim=-1).values.sum(-1, keepdim=True)


def test_fallback_warns_and_matches():
    x = torch.randn(3, 5)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    compiled = torch.compile(ops_outside_the_table, backend="mlc", options={"verify": True})
    with pytest.warns(UserWarning) as record:
        out = compiled(xs[0])
        out.sum().backward()
    messages = [str(w.message) for w in record]
    for op in ["aten.sort.default", "aten.cumsum.default", "aten.topk.default"]:
        assert any(re.match(rf"mlc: {re.escape(op)} runs through ATen \(fallback: ", m) for m in messages), messages
    expected = ops_outside_the_table(xs[1])
    expected.sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(xs[0].grad, xs[1].grad)


def test_fallback_node_in_ir():
    with pytest.warns(UserWarning, match="aten.cumsum.default"):
        (graph,) = mlc.capture(lambda x: torch.cumsum(x, 1).exp(), torch.randn(2, 3), verify=True)
    (node,) = [n for n in graph.nodes if n.op == "aten"]
    assert node.attrs["target"] == "aten.cumsum.default"
    assert 'target="aten.cumsum.default"' in str(graph)


# --- capture and graph breaks -----------------------------------------------------------------


def test_capture_prints_and_verifies():
    graphs = mlc.capture(f, torch.randn(3, 4), verify=True)
    assert len(graphs) == 1
    (graph,) = graphs
    mlc.verify(graph)
    text = str(graph)
    assert text.startswith(f"graph @{graph.name}(") and text.rstrip().endswith("}")
    assert graph.count("mm") == 1 and graph.count("tanh") == 1 and graph.count("sum") == 1
    assert "f32[3,4]" in text


def test_capture_training_gives_forward():
    x = torch.randn(3, 4, requires_grad=True)
    (graph,) = mlc.capture(f, x)
    assert graph.name.startswith("forward")
    mlc.verify(graph)


def with_graph_break(x):
    y = torch.sin(x) @ x.t()
    torch._dynamo.graph_break()
    return torch.relu(y).sum(0) + x.mean()


def test_graph_break():
    graphs = mlc.capture(with_graph_break, torch.randn(3, 4))
    assert len(graphs) == 2  # one per side of the break
    for graph in graphs:
        mlc.verify(graph)
    assert graphs[0].count("mm") == 1 and graphs[1].count("relu") == 1

    x = torch.randn(3, 4)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    out = torch.compile(with_graph_break, backend="mlc", options={"verify": True})(xs[0])
    expected = with_graph_break(xs[1])
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
