"""torch.compile's ``mode`` for mlc: what each sets, that explicit options win, and that
``mlc.explain`` shows the resulting settings and the CUDA graphs a mode asked for."""

import pytest
import torch

import mlc
from mlc.options import cuda_graphs_note, make_options, settings


@pytest.mark.parametrize("mode, autotune", [("default", "auto"), ("reduce-overhead", "auto"),
                                            ("max-autotune", "max"), ("max-autotune-no-cudagraphs", "max")])
def test_max_autotune_modes_mean_autotune_max(mode, autotune, monkeypatch):
    monkeypatch.delenv("MLC_AUTOTUNE", raising=False)
    assert make_options(mode).autotune == autotune


def test_options_and_environment_win_over_the_mode(monkeypatch):
    monkeypatch.delenv("MLC_AUTOTUNE", raising=False)
    assert make_options("max-autotune", {"autotune": "off"}).autotune == "off"
    monkeypatch.setenv("MLC_AUTOTUNE", "default")
    assert make_options("max-autotune").autotune == "default"
    by_name = {s.name: s for s in settings("max-autotune", {"precision": "bf16"})}
    assert str(by_name["autotune"]) == 'autotune="default" (MLC_AUTOTUNE)'
    assert str(by_name["precision"]) == 'precision="bf16" (options)'
    assert by_name["quantize"].source == "default"
    monkeypatch.delenv("MLC_AUTOTUNE")
    assert str({s.name: s for s in settings("max-autotune")}["autotune"]) == "autotune=\"max\" (mode 'max-autotune')"


def test_cuda_graph_modes_are_reported_not_applied():
    assert cuda_graphs_note("default", on_gpu=False) is None
    assert cuda_graphs_note("max-autotune-no-cudagraphs", on_gpu=True) is None
    assert cuda_graphs_note("reduce-overhead", on_gpu=True).startswith("CUDA graphs: applied (mode 'reduce-overhead')")
    assert "Triton's interpreter" in cuda_graphs_note("reduce-overhead", on_gpu=True, interpret=True)
    assert "the graphs run on CPU tensors" in cuda_graphs_note("max-autotune", on_gpu=False)


def test_explain_shows_settings_and_cuda_graphs_not_applied(tmp_path):
    report = mlc.explain(lambda x: torch.sigmoid(x) * x, torch.randn(64), mode="reduce-overhead", fold_limit=0)
    assert report.mode == "reduce-overhead"
    assert report.notes == [cuda_graphs_note("reduce-overhead", on_gpu=False)]
    lines = str(report).splitlines()
    assert lines[1].startswith("settings: mode 'reduce-overhead'; ") and "fold_limit=0 (options)" in lines[1]
    assert lines[2].startswith("CUDA graphs: not applied (mode 'reduce-overhead' asks for them)")
    report.save_html(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Settings</h2>" in page and '<p class="note">CUDA graphs: not applied' in page
    assert '<tr class="set"><td class="t"><code>fold_limit</code></td><td class="t"><code>0</code></td>' in page
    assert not mlc.explain(lambda x: x + 1, torch.randn(8)).notes


def test_max_autotune_tunes():
    """In the interpreter, autotune="auto" (the default mode) skips tuning; max-autotune ranks GPU configs."""
    x = torch.randn(64, 256)
    default, = mlc.explain(lambda x: torch.relu(x) * 3, x).kernels
    assert "autotune skipped" in default.tuning
    tuned, = mlc.explain(lambda x: torch.relu(x) * 3, x, mode="max-autotune").kernels
    assert "configs kept after pruning, ranked by cost model for H100" in tuned.tuning
