"""The benchmark suite: mlc against eager PyTorch and TorchInductor.

    python bench/run.py                       # targets, the model zoo and whole models at bench sizes
    python bench/run.py --quick               # the zoo at small sizes, a few minutes
    python bench/run.py --quick --models mlp  # chosen models only (no targets)
    python bench/run.py --overhead            # host overhead per call only: eager, Inductor, mlc
    python bench/run.py --training            # the zoo's training step only (bench/training.py's table)

For each model and each of eager, Inductor and mlc: correctness against eager, cold and warm
compile time (each compile in a fresh process, bench/worker.py; cold on empty cache
directories, warm on what the cold one left), launches, bytes through global memory, FLOPs
and modeled time on an H100 (mlc/cost.py). No machine of ours has a GPU, so mlc's and eager's
costs are modeled from the compiled IR and from eager's ATen calls; Inductor on this CPU is
counted from what its generated C++ code does, which is not what it would launch on a GPU.
On a machine with a GPU the workers also measure latencies (``triton.testing.do_bench``).

Writes bench/results.md, bench/results.json and bench/bytes.png (with matplotlib, the
``bench`` extra); ``--quick`` writes bench/results-quick.* and bench/bytes-quick.png instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mlc  # noqa: E402
from cases import CASES, DECODE, HF, ZOO, describe, have_transformers  # noqa: E402
from mlc.testing.models import rotate_half  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
# ATen matmul-like work: the same in mlc (ATen) and eager until matmul kernels land.
MATMUL_NAMES = ("mm", "bmm", "addmm", "baddbmm", "linear", "matmul", "scaled_dot_product", "attention", "convolution")


# --- targets: each must be exactly one mlc kernel ----------------------------------------------

def softmax(x):
    return torch.softmax(x, dim=-1)


def log_softmax(x):
    return torch.log_softmax(x, dim=-1)


def layer_norm(x, w, b):
    return F.layer_norm(x, x.shape[-1:], w, b)


def rms_norm(x, w):
    return F.rms_norm(x, x.shape[-1:], w, eps=1e-6)


def rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def pointwise_chain(x, y):
    return torch.tanh(F.gelu(x * 2 + y) - torch.sigmoid(y)) * 0.5


class GPT2MLP(torch.nn.Module):
    """x + (gelu(x @ W1 + b1)) @ W2 + b2: the target is exactly 2 kernels."""

    def __init__(self, d):
        super().__init__()
        self.fc, self.proj = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.proj(F.gelu(self.fc(x), approximate="tanh"))


class LlamaMLP(torch.nn.Module):
    """x + w2(silu(w1 n) * w3 n) with n = rmsnorm(x): the target is at most 2 kernels after the norm."""

    def __init__(self, d, d_ff):
        super().__init__()
        self.norm = torch.nn.RMSNorm(d, eps=1e-6)
        self.w1, self.w3 = torch.nn.Linear(d, d_ff, bias=False), torch.nn.Linear(d, d_ff, bias=False)
        self.w2 = torch.nn.Linear(d_ff, d, bias=False)

    def forward(self, x):
        n = self.norm(x)
        return x + self.w2(F.silu(self.w1(n)) * self.w3(n))


def target_cases(quick: bool):
    rows, d = (64, 256) if quick else (4096, 768)
    x = torch.randn(rows, d)
    q = torch.randn(2 if quick else 8, 4 if quick else 12, 32 if quick else 512, 64)
    return {
        "softmax": (softmax, (x,)),
        "log_softmax": (log_softmax, (x,)),
        "layer_norm": (layer_norm, (x, torch.randn(d), torch.randn(d))),
        "rms_norm": (rms_norm, (x, torch.randn(d))),
        "rope": (rope, (q, torch.randn(q.shape[-2], 64), torch.randn(q.shape[-2], 64))),
        "pointwise_chain": (pointwise_chain, (x, torch.randn(d))),
    }


# Matmul targets: (model, inputs, expected kernels)
def mlp_cases(quick: bool):
    d, rows = (64, 32) if quick else (768, 4096)
    dtype = torch.float32 if quick else torch.float16
    x = torch.randn(rows // 8, 8, d, dtype=dtype)
    return {
        "gpt2_mlp": (GPT2MLP(d).to(dtype).eval(), (x,), 2),
        "llama_mlp (norm + 2)": (LlamaMLP(d, 8 * d // 3 // 8 * 8).to(dtype).eval(), (x,), 3),
    }


def _non_matmul(items) -> int:
    return sum(b for name, b, _ in items if not any(m in name for m in MATMUL_NAMES))


def measure(name: str, fn, inputs) -> dict:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks are listed in the row instead
        report = mlc.explain(fn, *inputs)
    mlc_items = [i for g in report.graphs for i in g.cost.items]
    return {
        "name": name,
        "kernels": len(report.kernels),
        "launches": report.launches,
        "eager_launches": report.eager.launches,
        "mb": report.bytes / 1e6,
        "eager_mb": report.eager.bytes / 1e6,
        "non_matmul_mb": _non_matmul(mlc_items) / 1e6,
        "eager_non_matmul_mb": _non_matmul(report.eager.items) / 1e6,
        "h100_us": sum(g.cost.time("H100") for g in report.graphs) * 1e6,
        "eager_h100_us": report.eager.time("H100") * 1e6,
        "fallbacks": sorted(set(report.fallbacks)),
        "kernel_names": [k.name for k in report.kernels],
        "seconds": time.perf_counter() - start,
    }


def table(rows) -> str:
    head = ("| case | mlc kernels | launches mlc / eager | MB mlc / eager | non-matmul MB mlc / eager (ratio) "
            "| H100 us mlc / eager | runs through ATen |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        ratio = r["non_matmul_mb"] / r["eager_non_matmul_mb"] if r["eager_non_matmul_mb"] else math.nan
        lines.append(f"| {r['name']} | {r['kernels']} | {r['launches']} / {r['eager_launches']} "
                     f"| {r['mb']:.2f} / {r['eager_mb']:.2f} | {r['non_matmul_mb']:.2f} / "
                     f"{r['eager_non_matmul_mb']:.2f} ({ratio:.2f}) | {r['h100_us']:.1f} / {r['eager_h100_us']:.1f} "
                     f"| {', '.join(f.split('.')[1] for f in r['fallbacks']) or '-'} |")
    return "\n".join(lines)


# --- host overhead: microseconds per call of a tiny graph (decode is bound by it) -------------

OVERHEAD_SOURCE = "def overhead_fn(x, b):\n    return torch.relu(x + b) * 2 - 1\n"
OVERHEAD_NUMEL = 16


def _overhead_fn():
    """A fresh copy of the overhead function: its own code object, so that each backend's
    compile has its own Dynamo cache entry."""
    scope = {"torch": torch}
    exec(compile(OVERHEAD_SOURCE, "<overhead>", "exec"), scope)  # noqa: S102 - our own constant source
    return scope["overhead_fn"]


def _stub_launches(launches) -> list:
    """Make mlc's kernels launch nothing: each kernel's ``run`` (what ``fn[grid](...)`` calls), so
    that everything mlc does per call is still counted, along the path a GPU launch takes (not
    the interpreter's, which also sets numpy's error state). Returns what undoes it."""
    undo = []
    for launch in launches:
        if launch is not None and "run" not in vars(launch.fn):
            launch.fn.run = lambda *args, **kwargs: None
            undo.append((launch, launch.interpret))
            launch.interpret = False
    return undo


def overhead(backends: list[str], calls: int = 2000, rounds: int = 15) -> dict:
    """µs per call of ``relu(x + b) * 2 - 1`` on 16 floats, warm, for eager, Inductor (its own
    kernel included) and mlc (static and ``dynamic=True``). On CPU mlc's kernels run in Triton's
    interpreter, so its launches are stubbed: what is left is mlc's own per-call work (Dynamo's
    guards, AOT autograd's wrapper, the plan's steps, output allocation). On a GPU every backend
    launches its kernels. The backends take turns, ``rounds`` times ``calls`` calls each; ``us``
    is each backend's best round (on a shared machine the other rounds measure the neighbours
    too), ``median_us`` its median round."""
    x, b = torch.randn(OVERHEAD_NUMEL), torch.randn(OVERHEAD_NUMEL)
    if CUDA:
        x, b = x.cuda(), b.cuda()
    want = _overhead_fn()(x, b)
    fns, seen, notes = {"eager": _overhead_fn()}, [], []
    if "inductor" in backends:
        why_not = inductor_missing()
        if why_not:
            notes.append(f"Inductor is n/a: {why_not}")
        else:
            fns["inductor"] = torch.compile(_overhead_fn())
    for name, dynamic in (("mlc", None), ("mlc dynamic", True)):
        backend = functools.partial(mlc.mlc_backend, options={"interpret": not CUDA},
                                    _on_compile=lambda g, c: seen.append(c))
        fns[name] = torch.compile(_overhead_fn(), backend=backend, dynamic=dynamic)
    for name, fn in fns.items():  # compile, and check before any launch is stubbed
        torch.testing.assert_close(fn(x, b), want, msg=lambda m, name=name: f"overhead row, {name}: {m}")
    plans = [c.plan for c in seen if c.plan is not None]
    undo = [] if CUDA else _stub_launches([k for p in plans for k in p.launches])
    for p in plans:  # a plan's straight-line call binds its launches: written again with the stubs
        p.straighten()
    try:
        times = {name: [] for name in fns}
        for name, fn in fns.items():
            for _ in range(calls // 10):  # warm
                fn(x, b)
        for _ in range(rounds):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(calls):
                    fn(x, b)
                if CUDA:
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - start) / calls * 1e6)
    finally:
        for launch, interpret in undo:
            del launch.fn.run
            launch.interpret = interpret
        for p in plans:
            p.straighten()
    return {"us": {name: min(t) for name, t in times.items()},
            "median_us": {name: statistics.median(t) for name, t in times.items()},
            "numel": OVERHEAD_NUMEL, "calls": calls, "stubbed": not CUDA, "notes": notes}


def overhead_table(result: dict) -> str:
    us = result["us"]
    names = [n for n in ("eager", "inductor", "mlc", "mlc dynamic") if n in us]
    lines = ["| case | " + " | ".join(f"{n} µs" for n in names) + " |", "|---|" + "---|" * len(names),
             f"| relu(x + b) * 2 - 1, {result['numel']} elements | " + " | ".join(f"{us[n]:.1f}" for n in names) + " |"]
    how = ("mlc's kernel launches stubbed (the Triton interpreter's `run` does nothing), so mlc's column is its "
           "per-call host work; Inductor's includes its C++ kernel, eager's its ATen ops" if result["stubbed"]
           else "every backend launching its kernels on the GPU")
    return "\n".join(lines) + f"\n\nWarm; the best of rounds of {result['calls']} calls (median rounds in the JSON); {how}.\n"


# --- models: eager, Inductor and mlc, each compile in its own process ------------------------

# A model is correct when max |out - eager| / max |eager| is at most this (float16 rounds at
# other places in mlc's and Inductor's fused code than in eager's ops).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}
CUDA = torch.cuda.is_available()


def inductor_missing() -> str | None:
    """Why Inductor cannot be measured here, or None. On CPU it compiles C++ kernels."""
    if CUDA:
        return None
    cxx = os.environ.get("CXX") or "c++"
    if not (shutil.which(cxx) or shutil.which("g++") or shutil.which("clang++")):
        return "no C++ compiler found (Inductor's CPU backend compiles C++)"
    return None


def run_worker(case: str, size: str, backend: str, phase: str, cache: pathlib.Path, ir_only: bool,
               timeout: float) -> dict:
    """One bench/worker.py process; its JSON, or {"error": ...} naming what went wrong."""
    env = {**os.environ, "MLC_CACHE_DIR": str(cache / "mlc"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
           "TRITON_CACHE_DIR": str(cache / "triton"), "MLC_PROGRESS": "0"}
    out = cache / f"{backend}-{phase}.json"
    cmd = [sys.executable, str(HERE / "worker.py"), case, size, backend, phase, "--json", str(out)]
    if ir_only:
        cmd.append("--ir-only")
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("DEBUG")]
        return {"error": lines[-1] if lines else f"exit code {proc.returncode}"}
    return json.loads(out.read_text())


def measure_backend(case: str, size: str, backend: str, ir_only: bool, timeout: float) -> dict:
    """Cold and warm compiles of ``case`` with ``backend``, on one fresh set of cache directories."""
    cache = pathlib.Path(tempfile.mkdtemp(prefix=f"mlc-bench-{case}-{backend}-"))
    try:
        cold = run_worker(case, size, backend, "cold", cache, ir_only, timeout)
        if "error" in cold:
            return cold
        warm = run_worker(case, size, backend, "warm", cache, ir_only, timeout)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    result = {k: cold[k] for k in ("max_abs_err", "max_rel_err")}
    result.update(compile_cold_s=cold["compile_s"], compile_warm_s=warm.get("compile_s"), **cold.get("counts", {}))
    for key in ("kernel_check", "ir_only", "latency_ms"):
        if key in cold:
            result[key] = cold[key]
    if "error" in warm:
        result["warm_error"] = warm["error"]
    if "cache" in warm:
        result["warm_cache"] = warm["cache"]
    if "eager_counts" in cold:  # the mlc worker counts eager too
        result["eager"] = dict(cold["eager_counts"])
        if "eager_latency_ms" in cold:
            result["eager"]["latency_ms"] = cold["eager_latency_ms"]
    return result


def measure_model(name: str, quick: bool, backends: list[str], timeout: float) -> dict:
    size = "quick" if quick else "bench"
    dtype = CASES[name].sizes[size]["dtype"]
    row = {"name": name, "size": describe(name, size), "dtype": str(dtype).split(".")[-1]}
    tol = TOLERANCE[dtype]
    start = time.perf_counter()
    for backend in backends:
        why_not = inductor_missing() if backend == "inductor" else None
        if why_not:
            row[backend] = {"skipped": why_not}
            continue
        # At bench sizes mlc's kernels would take minutes in Triton's interpreter (see worker.py).
        r = measure_backend(name, size, backend, backend == "mlc" and not quick and not CUDA, timeout)
        if "error" not in r:
            checks = [r["max_rel_err"] <= tol]
            if "kernel_check" in r:
                checks.append(r["kernel_check"]["max_rel_err"] <= TOLERANCE[CASES[name].sizes["check"]["dtype"]])
            r["correct"] = all(checks)
        if "eager" in r:
            row["eager"] = r.pop("eager")
        row[backend] = r
    row["seconds"] = time.perf_counter() - start
    return row


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _pair(row: dict, backend: str, key: str, spec: str) -> str:
    r = row.get(backend, {})
    if "skipped" in r:
        return "n/a"
    if "error" in r:
        return "error"
    return _fmt(r.get(key), spec)


def _scaled(row: dict, backend: str, key: str, unit: float, spec: str) -> str:
    r = row.get(backend, {})
    return _fmt(r[key] / unit, spec) if r.get(key) is not None else _pair(row, backend, key, spec)


def models_tables(rows: list[dict]) -> str:
    t1 = ["| model | size | rel. error mlc | rel. error Inductor | compile cold s mlc / Inductor "
          "| compile warm s mlc / Inductor |", "|" + "---|" * 6]
    t2 = ["| model | launches eager / Inductor (CPU) / mlc | MB eager / Inductor (CPU) / mlc "
          "| GFLOP eager / mlc | H100 us eager / mlc | runs through ATen in mlc |", "|" + "---|" * 6]
    t3 = ["| model | eager ms | Inductor ms | mlc ms |", "|---|---|---|---|"]
    for row in rows:
        mine = row.get("mlc", {})
        err = _pair(row, "mlc", "max_rel_err", ".1e")
        if "kernel_check" in mine:
            err += f" (kernels {mine['kernel_check']['max_rel_err']:.1e})"
        if mine.get("correct") is False or row.get("inductor", {}).get("correct") is False:
            err += " **WRONG**"
        t1.append(f"| {row['name']} | {row['size']} | {err} | {_pair(row, 'inductor', 'max_rel_err', '.1e')} "
                  f"| {_pair(row, 'mlc', 'compile_cold_s', '.1f')} / {_pair(row, 'inductor', 'compile_cold_s', '.1f')} "
                  f"| {_pair(row, 'mlc', 'compile_warm_s', '.1f')} / {_pair(row, 'inductor', 'compile_warm_s', '.1f')} |")
        eager, ind = row.get("eager", {}), row.get("inductor", {})
        ind_launches = (f"{ind['launches']} ({ind['kernels']}+{ind['extern_calls']})" if "launches" in ind
                        else _pair(row, "inductor", "launches", "d"))
        fallbacks = ", ".join(f.split(".")[1] for f in mine.get("fallbacks", [])) or "-"
        t2.append(f"| {row['name']} | {_fmt(eager.get('launches'), 'd')} / {ind_launches} / "
                  f"{_pair(row, 'mlc', 'launches', 'd')} | {_scaled(row, 'eager', 'bytes', 1e6, '.2f')} / "
                  f"{_scaled(row, 'inductor', 'bytes', 1e6, '.2f')} / {_scaled(row, 'mlc', 'bytes', 1e6, '.2f')} "
                  f"| {_scaled(row, 'eager', 'flops', 1e9, '.3f')} / {_scaled(row, 'mlc', 'flops', 1e9, '.3f')} "
                  f"| {_pair(row, 'eager', 'h100_us', '.1f')} / {_pair(row, 'mlc', 'h100_us', '.1f')} | {fallbacks} |")
        if any("latency_ms" in row.get(b, {}) for b in ("eager", "mlc", "inductor")):
            t3.append(f"| {row['name']} | {_fmt(eager.get('latency_ms'), '.3f')} "
                      f"| {_pair(row, 'inductor', 'latency_ms', '.3f')} | {_pair(row, 'mlc', 'latency_ms', '.3f')} |")
    text = "### Correctness and compile time\n\n" + "\n".join(t1) + "\n\n### Per call: launches, bytes, FLOPs\n\n" + \
        "\n".join(t2) + "\n"
    if len(t3) > 2:
        text += "\n### Measured on " + torch.cuda.get_device_name() + "\n\n" + "\n".join(t3) + "\n"
    return text


COLUMNS = """\
Columns:

- **rel. error**: max |out - eager| / max |eager| on the same inputs and weights. For mlc on
  CPU at bench sizes, mlc compiles as usual (kernels generated and loaded) but its compiled
  graphs then run through mlc's reference executor, op by op in torch: this checks mlc's
  final IR at full size. The kernels themselves run in Triton's CPU interpreter, which would
  take many minutes at these sizes, so "(kernels ...)" is the same check with the kernels
  run by the interpreter at a small size (bench/cases.py, `check`). A model is correct at
  a relative error of at most 1e-4 in float32, 1e-2 in float16.
- **compile cold / warm**: seconds of the first call minus the time spent inside the compiled
  graphs during it (Dynamo, AOT autograd and the backend; on a GPU, the first call minus the
  second). Cold: a new process with empty cache directories (MLC_CACHE_DIR,
  TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR); warm: another new process with the directories
  the cold one filled, so it reflects whatever on-disk caching each backend has.
- **launches, MB, GFLOP, H100 us** for eager and mlc are modeled (mlc/cost.py): eager is one
  launch per non-view ATen op, moving its inputs and outputs; mlc is its kernels (each
  input read once, each output written once) plus the ops it runs through ATen. H100 us:
  each launch bound by bytes (3.35 TB/s) or FLOPs (989 TFLOP/s), plus 4 us of launch overhead.
  FLOPs are those of matmuls, attention (4·B·H·Sq·Sk·D forward, on both sides) and of
  pointwise and reduction ops: the cost model gives convolution calls no FLOPs (eager counts
  one per output element), so models with them are shown cheaper in GFLOP than they are, on
  both sides alike.
- **Inductor (CPU)** is what Inductor's generated code does per call on this CPU, counted
  while it runs: launches are its C++ kernels + its ATen calls, "total (kernels+ATen)" (extern
  matmuls, attention, convolutions), and MB are each C++ kernel's tensor arguments once (an in-out buffer twice)
  plus the ATen calls counted as eager's. On a GPU Inductor generates Triton kernels and
  fuses differently, so these are not its GPU figures. Its C++ kernels' FLOPs are not
  counted and its GPU time cannot be modeled from CPU kernels: n/a.
- n/a: not measurable here (the reason is in results.json); error: the worker failed (the
  message is in results.json).
"""


def plot_bytes(rows: list[dict], path: pathlib.Path) -> str | None:
    """A bar chart of MB per call per model; None, or a note saying why there is none."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plot"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("eager (modeled)", "eager"), ("Inductor (CPU kernels)", "inductor"), ("mlc (modeled)", "mlc")]
    names = [r["name"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    width = 0.8 / len(series)
    for k, (label, key) in enumerate(series):
        values = [r.get(key, {}).get("bytes") for r in rows]
        xs = [i + (k - 1) * width for i, v in enumerate(values) if v is not None]
        ys = [v / 1e6 for v in values if v is not None]
        if ys:
            ax.bar(xs, ys, width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("MB through memory per call")
    ax.set_title("Bytes moved per call (lower is better)")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def select_models(quick: bool, names: str | None) -> tuple[list[str], list[str]]:
    """The cases to run, and notes about those skipped."""
    notes = []
    if names:
        chosen = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in CASES]
        if unknown:
            raise SystemExit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    else:
        chosen = [c.name for c in ZOO + DECODE] + ([] if quick else [c.name for c in HF])
    if not have_transformers() and any(CASES[n].hf for n in chosen):
        skipped = [n for n in chosen if CASES[n].hf]
        notes.append(f"skipped {', '.join(skipped)}: the transformers package is not installed")
        chosen = [n for n in chosen if not CASES[n].hf]
    return chosen, notes


def training_rows() -> list[dict]:
    """One forward+backward step of each zoo model: saved activations, launches and bytes for
    eager, Inductor and mlc, and mlc's gradients against eager's (``bench/training.py``)."""
    import training

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [training.measure(name, "default") for name in training.ZOO]


def training_section(rows: list[dict]) -> str:
    import training

    return ("## Training: one forward+backward step (quick sizes, fp32)\n\n" + training.table(rows, "default")
            + "\nSaved MB: the distinct storages autograd keeps for the backward, parameters excluded, counted the "
              "same way for all three (bench/training.py).\n\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, zoo models only (for CI)")
    parser.add_argument("--models", help=f"comma-separated, from: {', '.join(CASES)} (then no targets)")
    parser.add_argument("--backends", default="mlc,inductor", help="comma-separated: mlc, inductor")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per worker process")
    parser.add_argument("--out", default=str(HERE), help="directory for the results")
    parser.add_argument("--overhead", action="store_true", help="print the host overhead table only (no files)")
    parser.add_argument("--training", action="store_true",
                        help="print the zoo's training table only (no files; bench/training.py writes it too)")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if set(backends) - {"mlc", "inductor"} or "mlc" not in backends:
        parser.error("--backends: mlc, optionally with inductor")
    if args.overhead:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = overhead(backends)
        print(overhead_table(result) + "".join(f"\nNote: {n}." for n in result["notes"]))
        return 0
    if args.training:
        print(training_section(training_rows()))
        return 0
    chosen, notes = select_models(args.quick, args.models)
    for note in notes:
        print(note)
    torch.manual_seed(0)
    text, result = "", {}
    bad = []
    if not args.models:
        targets = [measure(n, f, x) for n, (f, x) in target_cases(args.quick).items()]
        mlps = [(measure(n, m, x), want) for n, (m, x, want) in mlp_cases(args.quick).items()]
        text += ("## Targets: each one kernel\n\n" + table(targets)
                 + "\n\n## Matmul targets: GPT-2 MLP 2 kernels, LLaMA MLP 2 after its norm; bytes <= 0.6 of eager\n\n"
                 + table([r for r, _ in mlps])
                 + "\n\nMB are modeled bytes through global memory per call; non-matmul excludes matmuls, attention "
                   "and convolutions (ATen calls, the same for both). H100 us: each launch bound by bytes or FLOPs, "
                   "plus 4 us launch overhead.\n\n")
        result.update(targets=targets, matmul_targets=[r for r, _ in mlps])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result["overhead"] = overhead(backends)
        text += "## Host overhead per call\n\n" + overhead_table(result["overhead"]) + "\n"
        notes += result["overhead"]["notes"]
        if not args.quick:  # about two minutes: the full run only
            result["training"] = training_rows()
            text += training_section(result["training"])
        bad += [t["name"] for t in targets if t["kernels"] != 1 or t["launches"] != 1]
        # The bytes target is for bench sizes: at --quick sizes the weights dominate both sides.
        bad += [r["name"] for r, want in mlps
                if r["launches"] != want or (not args.quick and r["mb"] > 0.6 * r["eager_mb"])]
    rows = []
    for name in chosen:
        print(f"{name}: ...", end="", flush=True)
        row = measure_model(name, args.quick, backends, args.timeout)
        rows.append(row)
        print(f" {row['seconds']:.0f} s")
        for b in backends:
            if "error" in row[b]:
                print(f"  {b}: {row[b]['error']}", file=sys.stderr)
                bad.append(f"{name} ({b}: error)")
            elif row[b].get("correct") is False:
                bad.append(f"{name} ({b}: wrong result)")
    for b in backends:
        notes += sorted({f"{b} is n/a: {row[b]['skipped']}" for row in rows if "skipped" in row.get(b, {})})
    text += "## Models (inference)\n\n" + models_tables(rows) + "\n" + COLUMNS
    if notes:
        text += "\n" + "\n".join(f"Note: {n}." for n in notes) + "\n"
    result.update(models=rows, notes=notes, device=torch.cuda.get_device_name() if CUDA else "cpu",
                  torch=torch.__version__)
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (out / f"results{suffix}.md").write_text(text)
    (out / f"results{suffix}.json").write_text(json.dumps(result, indent=1))
    if rows:
        note = plot_bytes(rows, out / f"bytes{suffix}.png")
        if note:
            print(note)
    if bad:
        print(f"targets missed or models failed: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
