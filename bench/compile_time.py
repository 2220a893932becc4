"""Compile times of zoo models: mlc cold and warm (persistent cache) against ``aot_eager``.

    python bench/compile_time.py [--models gpt2_block,mlp] [--autotune]

Each measurement is a fresh process (the caches that matter are on disk). Compile time is
the first call's time minus a later call's, so running the kernels (in Triton's interpreter)
is not counted; ``mlc_stage`` is the time mlc spends after AOT autograd (import, whole-graph
cache, passes, code generation, kernel loading), and ``tuning`` the autotuner's time on
the first call (with ``--autotune``: ``autotune="default"``, ranking GPU configs without a
GPU, with a fresh Triton cache so every ptxas compile is paid).

``measure_compile_times(model_name)`` returns the figures as a dict, for bench/run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_WORKER = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch
from mlc.backend import mlc_backend
from mlc.testing.models import MODELS

backend_name, model, autotune = sys.argv[1], sys.argv[2], sys.argv[3]
seen = []
if backend_name == "mlc":
    def backend(gm, ex):
        return mlc_backend(gm, ex, options={"interpret": True, "autotune": autotune},
                           _on_compile=lambda g, c: seen.append(c))
else:
    backend = backend_name
module, inputs = MODELS[model].build()
compiled = torch.compile(module, backend=backend)
with torch.no_grad():
    start = time.perf_counter(); compiled(*inputs); first = time.perf_counter() - start
    start = time.perf_counter(); compiled(*inputs); again = time.perf_counter() - start
kernels = [(launch.source.name, launch.tuning) for c in seen if c.plan for launch in c.plan.launches]
print(json.dumps({
    "compile_s": first - again,
    "mlc_stage_s": sum(c.compile_seconds for c in seen),
    "cache": [c.cache for c in seen],
    "tuning_s": sum(t.seconds for _, t in kernels if t is not None),
    "kernels": [{"name": n, "kept": t.kept, "declared": t.declared, "compiled": t.compiled,
                 "ranked_by": t.ranked_by, "seconds": t.seconds, "config": t.config}
                for n, t in kernels if t is not None],
}))
"""


def _run(backend: str, model: str, cache_dir: str, autotune: str = "auto", triton_cache: str | None = None) -> dict:
    env = {**os.environ, "MLC_CACHE_DIR": cache_dir, "MLC_PROGRESS": "0"}
    if triton_cache:
        env["TRITON_CACHE_DIR"] = triton_cache
    proc = subprocess.run([sys.executable, "-c", _WORKER, backend, model, autotune], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} on {model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_compile_times(model_name: str, autotune: bool = False) -> dict:
    """Compile times (seconds) of one zoo model in fresh processes.

    ``aot_eager_s``: torch.compile with ``backend="aot_eager"``; ``cold_s`` / ``warm_s``: mlc
    with an empty / a filled cache directory; ``mlc_cold_stage_s`` / ``mlc_warm_stage_s``: mlc's
    own part of those; ``warm_overhead_s``: warm minus aot_eager (the target: at most 0.5 s).
    With ``autotune``: ``tune_cold_s`` per kernel and the configs each search kept.
    """
    with tempfile.TemporaryDirectory(prefix="mlc-bench-cache-") as d:
        eager = _run("aot_eager", model_name, d)
        cold = _run("mlc", model_name, d)
        warm = _run("mlc", model_name, d)
        out = {"model": model_name, "aot_eager_s": eager["compile_s"], "cold_s": cold["compile_s"],
               "warm_s": warm["compile_s"], "mlc_cold_stage_s": cold["mlc_stage_s"],
               "mlc_warm_stage_s": warm["mlc_stage_s"], "warm_cache": warm["cache"],
               "warm_overhead_s": warm["compile_s"] - eager["compile_s"],
               "warm_stage_ratio": warm["mlc_stage_s"] / max(cold["mlc_stage_s"], 1e-9)}
    if autotune:
        with tempfile.TemporaryDirectory(prefix="mlc-bench-cache-") as d, \
                tempfile.TemporaryDirectory(prefix="mlc-bench-triton-") as t:
            tuned = _run("mlc", model_name, d, "default", triton_cache=t)
            again = _run("mlc", model_name, d, "default", triton_cache=t)
        searched = [k for k in tuned["kernels"] if k["seconds"] > 0]
        out.update({"tune_cold_stage_s": tuned["mlc_stage_s"] + tuned["tuning_s"],
                    "tune_warm_stage_s": again["mlc_stage_s"] + again["tuning_s"],
                    "tune_s_per_kernel": tuned["tuning_s"] / max(len(searched), 1),
                    "tune_max_s_per_kernel": max((k["seconds"] for k in searched), default=0.0),
                    "kernels": tuned["kernels"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,gpt2_block,llama_block")
    ap.add_argument("--autotune", action="store_true", help='also measure autotune="default" (ptxas, cost model)')
    args = ap.parse_args(argv)
    for m in args.models.split(","):
        r = measure_compile_times(m.strip(), autotune=args.autotune)
        print(f"{m}: aot_eager {r['aot_eager_s']:.2f} s, mlc cold {r['cold_s']:.2f} s, warm {r['warm_s']:.2f} s "
              f"(warm - aot_eager {r['warm_overhead_s']:+.2f} s); mlc stage cold {r['mlc_cold_stage_s'] * 1e3:.0f} ms, "
              f"warm {r['mlc_warm_stage_s'] * 1e3:.0f} ms ({100 * r['warm_stage_ratio']:.0f}%), cache {r['warm_cache']}")
        if args.autotune:
            print(f"  autotune=default: stage cold {r['tune_cold_stage_s']:.2f} s, warm {r['tune_warm_stage_s']:.3f} s "
                  f"({100 * r['tune_warm_stage_s'] / max(r['tune_cold_stage_s'], 1e-9):.1f}%), "
                  f"{r['tune_s_per_kernel']:.2f} s per searched kernel (max {r['tune_max_s_per_kernel']:.2f} s)")
            for k in r["kernels"]:
                print(f"    {k['name']:44} kept {k['kept']}/{k['declared']} (compiled {k['compiled']}), "
                      f"{k['ranked_by']}, {k['seconds']:.2f} s, {k['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
