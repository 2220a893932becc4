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

import itertools
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import cache
from .codegen.compile import next_pow2
from .codegen.config import launch_config, matmul_config, operand_itemsize
from .codegen.kernel import KernelSource
from .cost import GPU, GPUS, blocks_per_sm, config_time, region_cost
from .ir.graph import Graph
from .ir.ops import OPS, Category

LEVELS = ("auto", "off", "default", "max")
ATEN = {"backend": "aten"}  # a matmul kernel run as torch ops: the ATen matmul, then its epilogue
MAX_REGISTERS = 255  # per thread, on every NVIDIA GPU since sm_35
MIN_RESIDENT_WARPS = 4  # per SM: fewer cannot hide latency at all
MAX_COMPILED = 12  # "max": compile at most this many candidates (the best by the cost model)
DEFAULT_GPU = "H100"


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


def fixed_config(ks: KernelSource, sizes: tuple, interpret: bool) -> dict:
    """Today's rule-based config (``config.py``): the interpreter's, or the untuned GPU one."""
    if ks.kind == "matmul":
        return matmul_config(*sizes[:3], interpret, operand_itemsize(ks))
    return launch_config(ks, sizes[0], sizes[1], interpret)


# --- search spaces ----------------------------------------------------------------------------

def space(ks: KernelSource, sizes: tuple, level: str) -> list[dict]:
    """The declared configs for a kernel at ``sizes`` (launch sizes: numel, rnumel or M, N, K, batch)."""
    big = level == "max"
    if ks.kind == "pointwise":
        blocks = [128, 256, 512, 1024, 2048, 4096, 8192] if big else [512, 1024, 2048, 4096]
        warps = [1, 2, 4, 8, 16] if big else [4, 8]
        return [{"BLOCK_SIZE": b, "num_warps": w} for b in blocks for w in warps if big or (w == 8) == (b >= 2048)]
    if ks.kind == "reduction":
        rnumel = sizes[1]
        if ks.persistent:
            rblocks = [next_pow2(rnumel)]
        else:
            rblocks = [256, 512, 1024, 2048, 4096] if big else [512, 1024, 2048]
        xblocks = [1, 2, 4, 8, 16, 32] if big else [1, 2, 4, 8]
        warps = [1, 2, 4, 8, 16] if big else [4, 8]
        out = []
        for x, r, w in itertools.product(xblocks, rblocks, warps):
            if big or (w == 8) == (x * r >= 4096):
                out.append({"XBLOCK": x, "RBLOCK": r, "num_warps": w})
        return out
    itemsize = operand_itemsize(ks)
    if big:
        tiles = itertools.product([16, 32, 64, 128, 256], [32, 64, 128, 256], [16, 32, 64, 128], [2, 4, 8],
                                  [1, 2, 3, 4, 5], [1, 8])
        out = [{"BLOCK_SIZE_M": m, "BLOCK_SIZE_N": n, "BLOCK_SIZE_K": k, "GROUP_SIZE_M": g, "num_warps": w,
                "num_stages": s} for m, n, k, w, s, g in tiles]
    else:
        bk = 16 if itemsize >= 4 else 32
        tiles = [(64, 64, bk, 4, 3), (128, 64, bk, 8, 3), (64, 128, bk, 8, 3), (32, 64, 2 * bk, 4, 4),
                 (128, 128, bk, 8, 3)]
        out = [{"BLOCK_SIZE_M": m, "BLOCK_SIZE_N": n, "BLOCK_SIZE_K": k, "GROUP_SIZE_M": 8, "num_warps": w,
                "num_stages": s} for m, n, k, w, s in tiles]
    return out + [dict(ATEN)]


def _clip(ks: KernelSource, cfg: dict, sizes: tuple) -> dict:
    """A config with tiles no larger than the problem needs (so equal ones deduplicate)."""
    c = dict(cfg)
    if "BLOCK_SIZE" in c:
        c["BLOCK_SIZE"] = max(16, min(c["BLOCK_SIZE"], next_pow2(sizes[0])))
    elif "XBLOCK" in c:
        c["XBLOCK"] = min(c["XBLOCK"], next_pow2(sizes[0]))
        if not ks.persistent:
            c["RBLOCK"] = max(16, min(c["RBLOCK"], next_pow2(sizes[1])))
    elif "BLOCK_SIZE_M" in c:  # tl.dot needs 16 in every tile dim
        for key, n in (("BLOCK_SIZE_M", sizes[0]), ("BLOCK_SIZE_N", sizes[1]), ("BLOCK_SIZE_K", sizes[2])):
            c[key] = max(16, min(c[key], next_pow2(n)))
    return c


# --- static checks ----------------------------------------------------------------------------

def shared_estimate(ks: KernelSource, cfg: dict) -> int:
    """Bytes of shared memory a matmul config's pipeline needs: ``num_stages`` A and B tiles."""
    if "BLOCK_SIZE_M" not in cfg:
        return 0
    isz = operand_itemsize(ks)
    m, n, k = cfg["BLOCK_SIZE_M"], cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"]
    return max(cfg.get("num_stages", 1), 1) * (m * k + k * n) * isz


def static_problem(ks: KernelSource, cfg: dict, gpu: GPU) -> str | None:
    """Why ``cfg`` cannot be good on ``gpu`` without compiling it (None: no reason known)."""
    if cfg.get("backend") == "aten":
        return None
    threads = 32 * cfg["num_warps"]
    if "BLOCK_SIZE_M" in cfg:
        smem = shared_estimate(ks, cfg)
        if smem > gpu.max_shared:
            return f"shared memory: {smem} B for {cfg['num_stages']} stages, sm_{gpu.arch} allows {gpu.max_shared}"
        m, n, k = cfg["BLOCK_SIZE_M"], cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"]
        accumulators = max(ks.source.count("tl.dot("), 1)  # SwiGLU's pair keeps two
        per_thread = (m * n * accumulators + m * k + k * n) // threads
        what = "accumulator and operand tiles"
    else:
        per_thread = cfg.get("BLOCK_SIZE", 1) * cfg.get("XBLOCK", 1) * cfg.get("RBLOCK", 1) // threads
        what = "block"
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
    """Seconds ``cfg`` is modeled to take on ``gpu`` (``cost.config_time``)."""
    nbytes, flops = region_cost(body, env)
    stats = stats or {}
    regs, shared = stats.get("registers", 0), stats.get("shared", 0)
    if ks.kind == "matmul":
        return _matmul_time(ks, body, cfg, sizes, nbytes, flops, gpu, regs, shared)
    warps = cfg["num_warps"]
    per_program = cfg.get("BLOCK_SIZE") or cfg["XBLOCK"] * min(cfg["RBLOCK"], max(sizes[1], 1))
    programs = math.ceil(sizes[0] / (cfg.get("BLOCK_SIZE") or cfg["XBLOCK"]))
    total = max(sizes[0] * (sizes[1] if ks.kind == "reduction" else 1), 1)
    in_flight = per_program * nbytes / total
    return config_time(gpu, programs=programs, resident=blocks_per_sm(gpu, warps, regs, shared), nbytes=nbytes,
                       flops=flops, in_flight=in_flight)


def _matmul_time(ks, body, cfg, sizes, nbytes, flops, gpu, regs, shared) -> float:
    m, n, k, batch = sizes
    isz = operand_itemsize(ks)
    tensor_cores = isz < 4
    mm_bytes = (m * k + k * n) * isz * batch
    epilogue_bytes = max(nbytes - mm_bytes, 0)  # outputs and epilogue operands
    if cfg.get("backend") == "aten":
        # cuBLAS: a well-chosen tile (modeled as 128x128 at full efficiency), then each epilogue
        # op is one more launch reading and writing an M x N tensor.
        ops = [x for x in body.nodes if OPS[x.op].category is Category.POINTWISE]
        mm = config_time(gpu, programs=math.ceil(m / 128) * math.ceil(n / 128) * batch, resident=1,
                         nbytes=mm_bytes + m * n * batch * 4, flops=2 * m * n * k * batch,
                         in_flight=3 * 128 * 64 * isz, tensor_cores=tensor_cores)
        per_op = config_time(gpu, programs=max(m * n * batch // 1024, 1), resident=8,
                             nbytes=2 * m * n * batch * 4, flops=m * n * batch, in_flight=1024 * 4)
        return mm + len(ops) * per_op
    bm, bn, bk = cfg["BLOCK_SIZE_M"], cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"]
    pm, pn = math.ceil(m / bm), math.ceil(n / bn)
    # Tile re-reads: A is read once per column of tiles, B once per row of tiles; grouped
    # ordering keeps GROUP_SIZE_M rows of tiles in flight together, so B tiles hit L2 that often.
    reuse = min(cfg["GROUP_SIZE_M"], pm)
    traffic = isz * batch * (m * k * pn + k * n * pm / reuse) + epilogue_bytes
    padded_flops = 2 * pm * bm * pn * bn * k * batch  # tiles past the edge compute too
    stages = cfg.get("num_stages", 1)
    # A K step issues one A and one B tile; fewer, smaller steps keep the MMA units less busy.
    efficiency = (bm * bn / (bm * bn + 32 * (bm + bn))) * (bk / (bk + 8))
    return config_time(gpu, programs=pm * pn * batch,
                       resident=blocks_per_sm(gpu, cfg["num_warps"], regs, shared or shared_estimate(ks, cfg)),
                       nbytes=traffic, flops=padded_flops, in_flight=max(stages - 1, 1) * (bm + bn) * bk * isz,
                       tensor_cores=tensor_cores, compute_efficiency=efficiency, overlap=stages > 1)


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
         timer: Callable[[dict], float] | None = None, jobs: int | None = None) -> Tuning:
    """Choose a config for ``ks`` at ``sizes`` (bound symbols in ``env``), searching ``level``'s space.

    ``timer(config) -> ms`` measures a config on a GPU; without it (no GPU) the cost model
    ranks. The result is cached per kernel, shape bucket, level, target GPU and versions.
    """
    if level not in ("default", "max"):
        raise ValueError(f"autotune level {level!r}: tune() searches 'default' or 'max'")
    gpu_name = target_gpu()
    gpu = GPUS[gpu_name]
    b = bucket(sizes)
    key = _key(ks, b, level, gpu_name, gpu, timer is not None)
    hit, _ = cache.load_json("tuning", key)
    if isinstance(hit, dict):
        try:
            return Tuning.from_json(hit)
        except (KeyError, TypeError, ValueError) as e:
            cache.warn_corrupted(cache.entry_path("tuning", key, "json"), e)
    start = time.perf_counter()
    fixed = fixed_config(ks, sizes, interpret=False)
    declared = space(ks, sizes, level)
    candidates, seen, dropped = [], set(), []
    for cfg in [fixed] + declared:
        c = _clip(ks, cfg, sizes)
        sig = json.dumps(c, sort_keys=True)
        if sig in seen or (c.get("backend") == "aten" and ks.kind != "matmul"):
            continue
        seen.add(sig)
        problem = static_problem(ks, c, gpu)
        if problem:
            dropped.append([c, problem])
        else:
            candidates.append(c)
    model = {json.dumps(c, sort_keys=True): modeled_time(ks, body, c, sizes, env, gpu) for c in candidates}
    candidates.sort(key=lambda c: model[json.dumps(c, sort_keys=True)])
    to_compile = [c for c in candidates if c.get("backend") != "aten"]
    if level == "max" and len(to_compile) > MAX_COMPILED:
        for c in to_compile[MAX_COMPILED:]:
            dropped.append([c, f"not among the {MAX_COMPILED} best by the cost model (not compiled)"])
        to_compile = to_compile[:MAX_COMPILED]
    stats = _compile_all(ks, to_compile, gpu.arch, jobs)
    kept = [c for c in candidates if c.get("backend") == "aten"]
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
    cache.store_json("tuning", key, result.to_json())
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


__all__ = ["ATEN", "LEVELS", "Tuning", "bucket", "fixed_config", "modeled_time", "space", "static_problem",
           "target_gpu", "tune", "untuned"]
