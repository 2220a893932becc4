"""The autotuner (``mlc.autotune``): search spaces, pruning, ranking without a GPU, its cache.

Pruning is checked on configs that must go: a matmul pipeline over the GPU's shared memory
(a static check) and a pointwise block that ``ptxas -v`` reports spilling (a real sm_90
compile, under a second). Without a GPU nothing is timed: ``do_bench`` is made to raise.
"""

import math

import pytest
import torch
import triton.testing

import mlc
from mlc import autotune, cache
from mlc.codegen import aot
from mlc.codegen.templates import generate, template_of
from mlc.cost import GPUS, config_time
from mlc.ir import parse
from mlc.runtime.plan import KernelLaunch
from mlc.ir.reference import run_reference

MATMUL = """
graph @mm(%a: f16[s0,256], %b: f16[256,128], %c: f16[128]) {
  %0 = kernel @k(%a, %b, %c) : f16[s0,128] {
    %1 = mm(%a, %b) : f16[s0,128]
    %2 = add(%1, %c) : f16[s0,128]
    %3 = relu(%2) : f16[s0,128]
    yield %3
  }
  return %0
}
"""

POINTWISE = """
graph @pw(%x: f32[s0], %y: f32[s0]) {
  %0 = kernel @k(%x, %y) : f32[s0] {
    %1 = mul(%x, %y) : f32[s0]
    %2 = gelu(%1) {approximate="tanh"} : f32[s0]
    %3 = exp(%2) : f32[s0]
    %4 = add(%3, %x) : f32[s0]
    yield %4
  }
  return %0
}
"""


def body_of(text):
    return parse(text).nodes[0].attrs["body"]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def no_gpu_timing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("do_bench called without a GPU")

    monkeypatch.setattr(triton.testing, "do_bench", refuse)


def test_shared_memory_over_the_limit_is_pruned():
    ks = generate(body_of(MATMUL))
    gpu = GPUS["A100"]
    big = {"BLOCK_SIZE_M": 256, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 8, "num_warps": 8,
           "num_stages": 4}
    assert template_of(ks).shared_bytes(ks, big) == 4 * (256 * 128 + 128 * 256) * 2
    assert "shared memory" in autotune.static_problem(ks, big, gpu)
    small = dict(big, BLOCK_SIZE_M=64, BLOCK_SIZE_N=64, BLOCK_SIZE_K=32, num_stages=3, num_warps=4)
    assert autotune.static_problem(ks, small, gpu) is None
    # The max space declares such configs; the search never compiles them.
    declared = template_of(ks).space(ks, (4096, 128, 256, 1), "max")
    assert any(template_of(ks).shared_bytes(ks, c) > gpu.max_shared for c in declared)


def test_spilling_config_is_pruned_by_ptxas(fresh_cache):
    ks = generate(body_of(POINTWISE))
    gpu = GPUS[autotune.target_gpu()]
    spilling = {"BLOCK_SIZE": 2048, "num_warps": 1}  # 64 elements per thread of tanh-GELU, exp
    assert autotune.static_problem(ks, spilling, gpu) is None  # only ptxas can tell
    stats = autotune.ptxas_stats(ks, spilling, gpu.arch)
    assert stats["ok"] and stats["spills"] > 0
    assert autotune.compiled_problem(spilling, stats, gpu).startswith("spills")
    fine = {"BLOCK_SIZE": 1024, "num_warps": 4}
    assert autotune.compiled_problem(fine, autotune.ptxas_stats(ks, fine, gpu.arch), gpu) is None


def test_ptxas_verdicts_are_cached(fresh_cache, monkeypatch):
    ks = generate(body_of(POINTWISE))
    cfg = {"BLOCK_SIZE": 512, "num_warps": 4}
    first = autotune.ptxas_stats(ks, cfg, 90)
    monkeypatch.setattr(aot, "compile_for_gpu", lambda *a, **k: pytest.fail("compiled again"))
    assert autotune.ptxas_stats(ks, cfg, 90) == first


def test_occupancy_prunes_a_config_that_cannot_launch():
    gpu = GPUS["H100"]
    cfg = {"BLOCK_SIZE": 1024, "num_warps": 32}
    assert "occupancy" in autotune.compiled_problem(
        cfg, {"ok": True, "registers": 255, "spills": 0, "shared": 0, "error": None}, gpu)


def test_cpu_tuning_ranks_by_cost_model_and_never_times(fresh_cache, no_gpu_timing, monkeypatch):
    body = body_of(POINTWISE)
    launch = KernelLaunch(body, interpret=False, autotune="default")
    (s0,) = launch.symbols
    meta, options = launch.config((300_000,), {s0: 300_000})
    t = launch.tuning
    assert t.ranked_by == "cost model" and not t.from_cache
    assert 1 <= t.kept <= t.declared and t.compiled >= t.kept
    assert {**meta, **options} == t.config
    assert t.config not in [c for c, _ in t.dropped]
    assert f"{t.kept}/{t.declared} configs kept after pruning" in str(t)
    # Another size in the same bucket is not searched again; a new process reads the cache.
    launch.config((280_000,), {s0: 280_000})
    assert launch.tunings[autotune.bucket((280_000,))] is t
    monkeypatch.setattr(aot, "compile_for_gpu", lambda *a, **k: pytest.fail("compiled again"))
    again = KernelLaunch(body, interpret=False, autotune="default")
    again.config((300_000,), {s0: 300_000})
    assert again.tuning.from_cache and again.tuning.config == t.config


def test_matmul_search_space_and_aten_choice():
    ks = generate(body_of(MATMUL))
    space = template_of(ks).space(ks, (512, 128, 256, 1), "default")
    assert autotune.ATEN in space
    assert all({"BLOCK_SIZE_M", "num_stages", "GROUP_SIZE_M"} <= set(c) for c in space if c != autotune.ATEN)
    assert len(template_of(ks).space(ks, (512, 128, 256, 1), "max")) > 10 * len(space)


def test_aten_config_runs_the_region_through_torch():
    body = body_of(MATMUL)
    launch = KernelLaunch(body, interpret=True)
    (s0,) = launch.symbols
    a, b, c = torch.randn(40, 256).half(), torch.randn(256, 128).half(), torch.randn(128).half()
    launch.configs[(40, 128, 256, 1)] = (dict(autotune.ATEN), {})
    (out,) = launch([a, b, c], {s0: 40})
    (ref,) = run_reference(body, [a, b, c], {s0: 40})
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out.float(), torch.relu(a.float() @ b.float() + c.float()), atol=0.1, rtol=0.02)


def test_cost_model_wave_quantization_and_tiles():
    gpu = GPUS["H100"]
    one_wave = config_time(gpu, programs=gpu.sms, resident=1, nbytes=0, flops=1e12, in_flight=1e5)
    plus_one = config_time(gpu, programs=gpu.sms + 1, resident=1, nbytes=0, flops=1e12, in_flight=1e5)
    assert plus_one > 1.9 * (one_wave - gpu.launch)  # a second wave with one program in it
    assert math.isinf(config_time(gpu, programs=4, resident=0, nbytes=1, flops=1, in_flight=1))
    tile = {"BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8, "num_warps": 8, "num_stages": 3}

    def model(text, m, bm):
        body = body_of(text)
        ks = generate(body)
        (s0,) = ks.symbols
        n, k = (int(d) for d in (body.outputs[0].type.shape[-1], body.inputs[0].types[0].shape[-1]))
        return autotune.modeled_time(ks, body, {"BLOCK_SIZE_M": bm, **tile}, (m, n, k, 1), {s0: m}, gpu)

    # A large square matmul: 16-row tiles read B 8x more often and keep the tensor cores less busy.
    square = MATMUL.replace("256", "4096").replace("128", "4096")
    assert model(square, 4096, 128) < model(square, 4096, 16)
    # 8192 x 128: 128-row tiles make 64 programs, which leave half of the 132 SMs idle.
    assert model(MATMUL, 8192, 16) < model(MATMUL, 8192, 128)


def test_interpret_launches_keep_interpreter_blocks(fresh_cache, no_gpu_timing):
    def f(x, y):
        return torch.exp(x * y) + x

    x, y = torch.randn(3000), torch.randn(3000)
    seen = []
    compiled = torch.compile(f, backend=lambda gm, ex: mlc.mlc_backend(
        gm, ex, options={"interpret": True}, _on_compile=lambda g, c: seen.append(c)))
    torch._dynamo.reset()
    torch.testing.assert_close(compiled(x, y), f(x, y))
    (launch,) = seen[-1].plan.launches
    assert launch.tuning.ranked_by.startswith("skipped: interpret=True")
    assert launch.configs[(3000,)][0] == {"BLOCK_SIZE": 4096}  # one program: the interpreter's rule


def test_explicit_level_in_interpreter_tunes_for_the_gpu_but_launches_large_blocks(fresh_cache, no_gpu_timing):
    def f(x, y):
        return torch.exp(x * y) + x

    x, y = torch.randn(3000), torch.randn(3000)
    seen = []
    torch._dynamo.reset()
    compiled = torch.compile(f, backend=lambda gm, ex: mlc.mlc_backend(
        gm, ex, options={"interpret": True, "autotune": "default"}, _on_compile=lambda g, c: seen.append(c)))
    torch.testing.assert_close(compiled(x, y), f(x, y))
    torch._dynamo.reset()
    (launch,) = seen[-1].plan.launches
    assert launch.tuning.ranked_by == "cost model" and launch.tuning.target == "H100"
    assert launch.configs[(3000,)][0] == {"BLOCK_SIZE": 4096}
    assert launch.tuning.config["BLOCK_SIZE"] <= 4096 and "num_warps" in launch.tuning.config


def test_autotune_option_is_checked():
    with pytest.raises(ValueError, match="'auto', 'off', 'default', 'max'"):
        mlc.options.make_options(options={"autotune": "fast"})
    assert mlc.options.make_options().autotune == "auto"


def test_corrupted_tuning_entry_is_ignored_and_rewritten(fresh_cache, no_gpu_timing):
    body = body_of(POINTWISE)
    ks = generate(body)
    (s0,) = ks.symbols
    first = autotune.tune(ks, body, (5000,), {s0: 5000}, "default")
    (path,) = (fresh_cache / "tuning").rglob("*.json")
    path.write_text('{"config": {"BLOCK_')
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        again = autotune.tune(ks, body, (5000,), {s0: 5000}, "default")
    assert not again.from_cache and again.config == first.config
    assert cache.load_json("tuning", path.stem)[0]["config"] == first.config
