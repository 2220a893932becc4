"""bench/run.py --quick on the smallest models, in a subprocess, and the JSON it writes.

Inductor is left out here (its C++ compile takes most of a minute on a CI runner); the
full and quick runs measure it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from worker import _pointer_weights  # noqa: E402

MODELS = ["mlp", "gpt2_block"]


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--models", ",".join(MODELS),
                           "--backends", "mlc", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "MLC_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_quick_writes_quick_files(quick_results):
    out, stdout = quick_results
    assert (out / "results-quick.json").exists() and (out / "results-quick.md").exists()
    assert not (out / "results.json").exists()  # the full results are never overwritten
    assert "| gpt2_block |" in (out / "results-quick.md").read_text()
    assert "| gpt2_block |" in stdout


def test_every_model_correct_and_fused(quick_results):
    out, _ = quick_results
    rows = {r["name"]: r for r in json.loads((out / "results-quick.json").read_text())["models"]}
    assert sorted(rows) == sorted(MODELS)
    for name, row in rows.items():
        mine, eager = row["mlc"], row["eager"]
        assert mine["correct"] and mine["max_rel_err"] <= 1e-4, name
        assert not mine.get("ir_only")  # at quick sizes the kernels run, in the interpreter
        assert mine["compile_cold_s"] > 0 and mine["compile_warm_s"] > 0, name
        for key in ("launches", "bytes", "flops", "h100_us"):
            assert mine[key] > 0 and eager[key] > 0, (name, key)
        assert mine["launches"] <= eager["launches"], name
        assert mine["bytes"] <= eager["bytes"], name
        assert "inductor" not in row  # --backends mlc
    assert rows["gpt2_block"]["mlc"]["launches"] < rows["gpt2_block"]["eager"]["launches"]
    assert rows["gpt2_block"]["mlc"]["fallbacks"] == []  # SDPA runs as mlc's attention kernels


def test_unknown_model_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--models", "nope",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown model(s) nope" in proc.stderr


def test_pointer_weights_of_an_inductor_cpp_kernel():
    # The signature Inductor 2.13 writes for a fused layer norm on CPU.
    source = """
    extern "C"  void  kernel(float* in_out_ptr0,
                       const float* in_ptr0,
                       const int64_t ks0,
                       float* out_ptr1)
    { }"""
    assert _pointer_weights(source) == [2, 1, 1]
