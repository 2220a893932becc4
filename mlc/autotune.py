"""The autotuner: a launch configuration per kernel and shape bucket, for the GPU target.

Declarative, as ``@triton.autotune``: each template has a search space (``space``), and a
kernel's sizes are keyed by their bucket (each launch size rounded up to a power of two).
A search then

1. prunes statically: duplicates after clipping tiles to the problem, configs whose
   accumulator or block needs more than 255 registers per thread, matmul pipelines whose
   shared memory exceeds the target GPU's limit;
2. compiles the survivors for the target GPU (``aot.compile_for_gpu``, which works without a
   GPU) and drops those that ``ptxas -v`` reports spilling, that need too much shared memory,
   or that leave too few warps resident per SM (occupancy);
3. ranks the rest: with a GPU by timing (``triton.testing.do_bench``, through ``timer``),
   without one by ``cost.config_time`` (wave quantization, bytes in flight, tile re-reads).

Results persist in the cache (``tuning/``), and so does every ptxas verdict (``ptxas/``),
keyed by kernel source and argument types, config, target GPU and versions. The fixed config
of ``config.py`` is always a candidate: a search can only do better by its own ranking.

Levels: ``"off"`` keeps the fixed configs; ``"default"`` searches a few configs per kernel
(a couple of seconds per kernel without a GPU, mostly ptxas); ``"max"`` a large space, ranked
statically first, then the best ``MAX_COMPILED`` compiled. ``"auto"`` (the option's default)
is ``"default"`` for kernels launched on a GPU and ``"off"`` in Triton's interpreter.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import cache
from .codegen.compile import next_pow2
from .codegen.templates import ATEN, KernelSource, is_aten, template_of
from .cost import GPU, GPUS, blocks_per_sm, region_cost
from .ir.graph import Graph

LEVELS = ("auto", "off", "default", "max")
MAX_REGISTERS = 255  # per thread, on every NVIDIA GPU since sm_35
MIN_RESIDENT_WARPS = 4  # per SM: fewer cannot hide latency at all
MAX_COMPILED = 12  # "max": compile at most this many candidates (the best by the cost model)
DEFAULT_GPU = "H100"
log = logging.getLogger(__name__)


@dataclass
class Tuning:
    """What the search decided for one kernel and shape bucket."""

    config: dict
    bucket: tuple
    declared: int = 1  # configs in the space
    kept: int = 1  # survived pruning (static checks and ptxas)
    compiled: int = 0  # went through ptxas
    ranked_by: str = "fixed"  # "timing", "cost model", "fixed" (nothing to rank) or "skipped: ..."
    target: str = DEFAULT_GPU
    from_cache: bool = False
    seconds: float = 0.0  # spent searching (0 for a cache hit)
    dropped: list = field(default_factory=list)  # [config, reason] pairs

    def __str__(self) -> str:
        cfg = " ".join(f"{k}={v}" for k, v in self.config.items())
        if self.ranked_by.startswith("skipped") or self.ranked_by == "off":
            return f"{cfg} (autotune {self.ranked_by})"
        where = "from cache" if self.from_cache else f"{self.seconds:.1f} s"
        return (f"{cfg} ({self.kept}/{self.declared} configs kept after pruning, ranked by {self.ranked_by} "
                f"for {self.target}, {where})")

    def to_json(self) -> dict:
        return {"config": self.config, "bucket": list(self.bucket), "declared": self.declared, "kept": self.kept,
                "compiled": self.compiled, "ranked_by": self.ranked_by, "target": self.target,
                "dropped": self.dropped}

    @classmethod
    def from_json(cls, d: dict) -> "Tuning":
        return cls(dict(d["config"]), tuple(d["bucket"]), d["declared"], d["kept"], d["compiled"], d["ranked_by"],
                   d["target"], from_cache=True, dropped=[list(x) for x in d["dropped"]])


def bucket(sizes) -> tuple:
    """The shape bucket of a launch: each size rounded up to a power of two."""
    return tuple(next_pow2(s) if s > 0 else 0 for s in sizes)


def target_gpu() -> str:
    """The GPU (a key of ``cost.GPUS``) configs are chosen for: the one present, else
    ``DEFAULT_GPU`` (H100, sm_90)."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        for name, g in GPUS.items():
            if g.arch == 10 * major + minor:
                return name
    return DEFAULT_GPU


# --- static checks ----------------------------------------------------------------------------

def static_problem(ks: KernelSource, cfg: dict, gpu: GPU) -> str | None:
    """Why ``cfg`` cannot be good on ``gpu`` without compiling it (None: no reason known)."""
    if is_aten(cfg):
        return None
    template = template_of(ks)
    smem = template.shared_bytes(ks, cfg)
    if smem > gpu.max_shared:
        return f"shared memory: {smem} B for {cfg['num_stages']} stages, sm_{gpu.arch} allows {gpu.max_shared}"
    per_thread, what = template.registers(ks, cfg)
    if per_thread > MAX_REGISTERS:
        return f"registers: the {what} needs about {per_thread} per thread (limit {MAX_REGISTERS})"
    return None


def ptxas_stats(ks: KernelSource, cfg: dict, arch: int) -> dict:
    """``compile_for_gpu``'s verdict on one config, from the cache when it was seen before."""
    from .codegen.aot import compile_for_gpu, kernel_id

    key = cache.digest("ptxas", kernel_id(ks), cfg, arch, cache.versions())
    hit, _ = cache.load_json("ptxas", key)
    if isinstance(hit, dict) and {"ok", "registers", "spills", "shared", "error"} <= set(hit):
        return hit
    r = compile_for_gpu(ks, arch, cfg)
    stats = {"ok": r.ok, "registers": r.registers, "spills": r.spills, "shared": r.shared, "error": r.error}
    cache.store_json("ptxas", key, stats)
    return stats


def compiled_problem(cfg: dict, stats: dict, gpu: GPU) -> str | None:
    """Why a compiled config is dropped: a compile error, spills, shared memory, occupancy."""
    if not stats["ok"]:
        return f"does not compile for sm_{gpu.arch}: {(stats['error'] or '').splitlines()[0][:200]}"
    if stats["spills"]:
        return f"spills {stats['spills']} B to local memory (ptxas -v, {stats['registers']} registers)"
    resident = blocks_per_sm(gpu, cfg["num_warps"], stats["registers"], stats["shared"])
    if resident * cfg["num_warps"] < MIN_RESIDENT_WARPS:
        return (f"occupancy: {resident} program(s) of {cfg['num_warps']} warps per SM "
                f"({stats['registers']} registers, {stats['shared']} B shared)")
    return None


# --- the cost model for one config --------------------------------------------------------------

def modeled_time(ks: KernelSource, body: Graph, cfg: dict, sizes: tuple, env: dict, gpu: GPU,
                 stats: dict | None = None) -> float:
    """Seconds ``cfg`` is modeled to take on ``gpu`` (the template's ``modeled_time``)."""
    nbytes, flops = region_cost(body, env)
    stats = stats or {}
    return template_of(ks).modeled_time(ks, body, cfg, sizes, nbytes, flops, gpu, stats.get("registers", 0),
                                        stats.get("shared", 0))


# --- the search -------------------------------------------------------------------------------

def _key(ks: KernelSource, b: tuple, level: str, gpu_name: str, gpu: GPU, timed: bool) -> str:
    from .codegen.aot import kernel_id

    return cache.digest("tuning", kernel_id(ks), b, level, gpu_name, repr(gpu), timed, cache.versions())


def _progress(total: int, name: str):
    from tqdm import tqdm

    quiet = os.environ.get("MLC_PROGRESS", "").lower() in ("0", "false", "no", "off")
    # disable=None: tqdm turns itself off when stderr is not a terminal.
    return tqdm(total=total, desc=f"mlc autotune {name}", unit="config", leave=False,
                disable=True if quiet else None)


def tune(ks: KernelSource, body: Graph, sizes: tuple, env: dict, level: str = "default",
         timer: Callable[[dict], float] | None = None, jobs: int | None = None,
         remote: str | None = None) -> Tuning:
    """Choose a config for ``ks`` at ``sizes`` (bound symbols in ``env``), searching ``level``'s space.

    ``timer(config) -> ms`` measures a config on a GPU; without it (no GPU) the cost model
    ranks. The result is cached per kernel, shape bucket, level, target GPU and versions, and
    shared through ``remote`` (a ``remote_cache`` URL) when given.
    """
    if level not in ("default", "max"):
        raise ValueError(f"autotune level {level!r}: tune() searches 'default' or 'max'")
    gpu_name = target_gpu()
    gpu = GPUS[gpu_name]
    b = bucket(sizes)
    key = _key(ks, b, level, gpu_name, gpu, timer is not None)
    hit, _ = cache.load_json("tuning", key, remote)
    if isinstance(hit, dict):
        try:
            result = Tuning.from_json(hit)
            log.debug("tuned %s at sizes %s (autotune=%r): %s", ks.name, sizes, level, result)
            return result
        except (KeyError, TypeError, ValueError) as e:
            cache.warn_corrupted(cache.entry_path("tuning", key, "json"), e)
    start = time.perf_counter()
    template = template_of(ks)
    fixed = template.fixed_config(ks, sizes, interpret=False)
    candidates, seen, dropped = [], set(), []
    for cfg in [fixed] + template.space(ks, sizes, level):
        c = template.clip(ks, cfg, sizes)
        sig = json.dumps(c, sort_keys=True)
        if sig in seen:
            continue
        seen.add(sig)
        problem = static_problem(ks, c, gpu)
        if problem:
            dropped.append([c, problem])
        else:
            candidates.append(c)
    model = {json.dumps(c, sort_keys=True): modeled_time(ks, body, c, sizes, env, gpu) for c in candidates}
    candidates.sort(key=lambda c: model[json.dumps(c, sort_keys=True)])
    to_compile = [c for c in candidates if not is_aten(c)]
    if level == "max" and len(to_compile) > MAX_COMPILED:
        for c in to_compile[MAX_COMPILED:]:
            dropped.append([c, f"not among the {MAX_COMPILED} best by the cost model (not compiled)"])
        to_compile = to_compile[:MAX_COMPILED]
    stats = _compile_all(ks, to_compile, gpu.arch, jobs)
    kept = [c for c in candidates if is_aten(c)]
    for c, s in zip(to_compile, stats):
        problem = compiled_problem(c, s, gpu)
        if problem:
            dropped.append([c, problem])
        else:
            kept.append(c)
    kept_stats = {json.dumps(c, sort_keys=True): s for c, s in zip(to_compile, stats)}
    if not kept:  # every candidate was dropped: the fixed config, as without tuning
        ranked_by, best = "fixed (no candidate survived pruning)", fixed
    elif timer is not None:
        ranked_by = "timing"
        with _progress(len(kept), ks.name) as bar:
            times = []
            for c in kept:
                times.append(timer(c))
                bar.update(1)
        best = kept[min(range(len(kept)), key=times.__getitem__)]
    else:
        ranked_by = "cost model"
        best = min(kept, key=lambda c: modeled_time(ks, body, c, sizes, env, gpu,
                                                     kept_stats.get(json.dumps(c, sort_keys=True))))
    result = Tuning(best, b, len(seen), len(kept), len(to_compile), ranked_by, gpu_name,
                    seconds=time.perf_counter() - start, dropped=dropped)
    cache.store_json("tuning", key, result.to_json(), remote)
    if log.isEnabledFor(logging.DEBUG):
        reasons = Counter(why.split(":")[0] for _, why in dropped)  # "registers: ..." counts as "registers"
        log.debug("tuned %s at sizes %s (autotune=%r): %s; dropped: %s", ks.name, sizes, level, result,
                  ", ".join(f"{n} ({why})" for why, n in reasons.most_common()) or "none")
    return result


def _compile_all(ks: KernelSource, configs: list[dict], arch: int, jobs: int | None) -> list[dict]:
    """``ptxas_stats`` for each config, in threads (each compile ends in ptxas subprocesses)."""
    if not configs:
        return []
    from .codegen.compile import load_kernel

    load_kernel(ks, interpret=False)  # import once, before threads: loading flips Triton's interpret switch
    jobs = jobs or min(4, os.cpu_count() or 1)
    with _progress(len(configs), ks.name) as bar, ThreadPoolExecutor(jobs) as pool:
        out = []
        for s in pool.map(lambda c: ptxas_stats(ks, c, arch), configs):
            out.append(s)
            bar.update(1)
    return out


def untuned(sizes: tuple, config: dict, reason: str, target: str) -> Tuning:
    """The record of a launch that was not tuned (autotune off, or the interpreter's blocks)."""
    return Tuning(config, bucket(sizes), ranked_by=reason, target=target)


__all__ = ["ATEN", "LEVELS", "Tuning", "bucket", "modeled_time", "static_problem", "target_gpu", "tune", "untuned"]
