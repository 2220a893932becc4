"""mlc in torch.compile's debugging tools: ``TORCH_LOGS`` (the ``mlc`` log, the ``output_code``
and ``mlc_output_code`` artifacts) and ``TORCH_TRACE`` read by tlparse.

One subprocess compiles a small function with ``TORCH_LOGS="+mlc,output_code"`` and
``TORCH_TRACE`` set, as a user would (torch reads both when it is imported, before mlc is).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlc.options import make_options
from mlc.passes import build_pipeline

SCRIPT = """
import torch, mlc
f = torch.compile(lambda x: torch.cumsum(torch.softmax(x, -1) * 2, 0), backend="mlc",
                  options={"autotune": "default"})
f(torch.randn(8, 32))
"""


@pytest.fixture(scope="module")
def compiled_with_logs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logs")
    env = {**os.environ, "TORCH_LOGS": "+mlc,output_code", "TORCH_TRACE": str(tmp / "trace"),
           "MLC_INTERPRET": "1", "MLC_CACHE_DIR": str(tmp / "cache"), "MLC_PROGRESS": "0"}
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    trace, = (tmp / "trace").iterdir()
    return run.stderr, trace


def test_torch_logs_show_what_mlc_decides_and_the_generated_kernels(compiled_with_logs):
    stderr, _ = compiled_with_logs
    records = [ln.split("] ", 1)[-1] for ln in stderr.splitlines() if "/mlc/" in ln]
    text = "\n".join(records)
    assert "received a Dynamo graph of" in text
    assert "graph inference_0: received from AOT autograd" in text
    assert "graph inference_0: pass fuse:" in text and " ms, " in text
    assert "graph inference_0: fused fused_amax_sub_exp_sum_div_mul: amax + sub + exp + sum + div + mul" in text
    assert "graph inference_0: not fused: mul -> " in text  # and why
    assert "(cache: miss: no entry)" in text
    assert "graph inference_0: runs through ATen: aten.cumsum.default" in text
    assert "tuned fused_amax_sub_exp_sum_div_mul at sizes" in text and "ranked by cost model" in text
    # output_code: the kernel, whole.
    assert "[__output_code] mlc kernel fused_amax_sub_exp_sum_div_mul (graph inference_0, reduction template)" in text
    assert "[__output_code] @triton.jit" in text and "[__output_code]     tl.store(" in text
    # A fallback is still a warning: the user may act on it.
    assert "UserWarning: mlc: aten.cumsum.default" in stderr


def _artifacts(trace: Path) -> list[dict]:
    """The structured trace's records: name (an artifact's, else the record's kind), frame, payload."""
    out = []
    for line in trace.read_text().splitlines():
        if line.startswith("\t"):
            if out:
                out[-1]["payload"] += line[1:] + "\n"
            continue
        record = json.loads(line.split("] ", 1)[1])
        kind = next(iter(record))  # "artifact", or what torch logs: "dynamo_output_graph", "aot_inference_graph"
        name = record[kind]["name"] if kind == "artifact" else kind
        out.append({"name": name, "frame": (record.get("frame_id"), record.get("frame_compile_id")), "payload": ""})
    return out


def test_torch_trace_holds_mlc_stages_beside_dynamo_and_aot_autograd(compiled_with_logs):
    _, trace = compiled_with_logs
    artifacts = _artifacts(trace)
    by_name = {a["name"]: a for a in artifacts}
    mlc_names = [a["name"] for a in artifacts if a["name"].startswith("mlc_")]
    passes = [n for n in mlc_names if n.startswith("mlc_ir_inference_0_")]
    assert len(passes) == 1 + len(build_pipeline(make_options())) and passes[0] == "mlc_ir_inference_0_00_import"
    fuse, = (n for n in passes if n.endswith("_fuse"))
    assert by_name[fuse]["payload"].startswith("// after pass: fuse (") and "kernel @fused_" in by_name[fuse]["payload"]
    kernel = by_name["mlc_kernel_inference_0_0_fused_amax_sub_exp_sum_div_mul"]["payload"]
    assert "@triton.jit" in kernel and "def fused_amax_sub_exp_sum_div_mul(" in kernel
    summary = by_name["mlc_explain_inference_0"]["payload"]
    assert "fused: fused_amax_sub_exp_sum_div_mul: amax + sub + exp + sum + div + mul" in summary
    assert "aten.cumsum.default" in summary and "  pass " in summary
    # The same frame as Dynamo's graph and AOT autograd's.
    frame = by_name["dynamo_output_graph"]["frame"]
    assert frame == (0, 0) and by_name["aot_inference_graph"]["frame"] == frame
    assert all(by_name[n]["frame"] == frame for n in mlc_names)


def test_tlparse_lists_mlc_artifacts_in_the_frame(compiled_with_logs, tmp_path):
    tlparse = shutil.which("tlparse") or shutil.which("tlparse", path=os.path.dirname(sys.executable))
    if tlparse is None:
        pytest.skip("tlparse is not installed (pip install tlparse; the dev extra has it)")
    _, trace = compiled_with_logs
    subprocess.run([tlparse, str(trace), "-o", str(tmp_path / "out"), "--no-browser", "--overwrite"],
                   check=True, capture_output=True, timeout=120)
    directory = json.loads((tmp_path / "out" / "compile_directory.json").read_text())
    names = [a["name"] for a in directory["[0/0]"]["artifacts"]]
    assert any(n.startswith("dynamo_output_graph") for n in names)
    assert any(n.startswith("aot_inference_graph") for n in names)
    for prefix in ("mlc_ir_inference_0_00_import", "mlc_ir_inference_0_", "mlc_kernel_inference_0_0_",
                   "mlc_explain_inference_0"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert "mlc_explain_inference_0" in (tmp_path / "out" / "index.html").read_text()


def test_mlc_output_code_artifact_prints_each_kernel(monkeypatch, capfd):
    monkeypatch.delenv("TORCH_LOGS", raising=False)  # it would have precedence over set_logs
    torch._logging.set_logs(modules={"mlc_output_code": True})
    try:
        torch._dynamo.reset()
        torch.compile(lambda x: torch.relu(x) + 1, backend="mlc")(torch.randn(16))
    finally:
        torch._logging.set_logs()
        torch._dynamo.reset()
    err = capfd.readouterr().err
    assert "[__mlc_output_code] mlc kernel fused_relu_add (graph " in err
    assert "[__mlc_output_code] def fused_relu_add(" in err
    assert "received a Dynamo graph" not in err  # the artifact alone: the mlc log stays at its level
