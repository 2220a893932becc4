"""``mlc aot-check``: generated kernels compiled for sm_80 and sm_90 by Triton, without a GPU.

The other codegen tests run kernels in Triton's CPU interpreter, which accepts code that the
GPU compiler rejects. Here the same kind of kernels (hand-written regions in IR text, and the
kernels of one zoo model, forward and backward) go through Triton's NVIDIA pipeline and the
wheel's ``ptxas``, and must compile, with registers, spills and shared memory reported.
"""

import dataclasses
import re

import pytest

from mlc.__main__ import main
from mlc.cli import aot_check as aot_cli
from mlc.codegen import aot
from mlc.codegen.templates import generate
from mlc.ir import parse, verify

# Regions that exercise what the interpreter is lenient about: bf16 rounding (bitcasts),
# float literals in tl.where, int64 arithmetic with a literal beyond int32, 0-d inputs
# (scalars, not blocks), persistent and looped reductions, gathers, cat and a matmul; and
# three kernels the GPU compiler once rejected: an infinite clamp bound (written `inf`),
# floor of an integer tensor (tl.floor takes floats only), pow of a constant base.
CASES = """
graph @bf16_chain(%x: bf16[33,65], %y: bf16[65]) {
  %0 = add(%x, %y) : bf16[33,65]
  %1 = clamp(%0) {min=-1.5, max=2.0} : bf16[33,65]
  %2 = gelu(%1) {approximate="none"} : bf16[33,65]
  %3 = gt(%2, %y) : b8[33,65]
  %4 = full {shape=[], value=-inf, dtype=bf16} : bf16[]
  %5 = where(%3, %2, %4) : bf16[33,65]
  return %5
}

graph @int_math(%x: i64[7,9], %y: i64[9]) {
  %0 = div(%x, %y) {rounding_mode="floor"} : i64[7,9]
  %1 = remainder(%x, %y) : i64[7,9]
  %2 = full {shape=[], value=4294967296, dtype=i64} : i64[]
  %3 = add(%0, %2) : i64[7,9]
  %4 = bitwise_xor(%3, %1) : i64[7,9]
  %5 = sign(%4) : i64[7,9]
  return %5
}

graph @softmax(%x: f16[s0,300]) {
  %0 = convert(%x) {dtype=f32} : f32[s0,300]
  %1 = amax(%0) {dims=[1], keepdim=true} : f32[s0,1]
  %2 = sub(%0, %1) : f32[s0,300]
  %3 = exp(%2) : f32[s0,300]
  %4 = sum(%3) {dims=[1], keepdim=true} : f32[s0,1]
  %5 = div(%3, %4) : f32[s0,300]
  %6 = convert(%5) {dtype=f16} : f16[s0,300]
  return %6
}

graph @layer_norm_looped(%x: bf16[s0,s1], %w: bf16[s1]) {
  %0 = var(%x) {dims=[1], correction=0, keepdim=true} : bf16[s0,1]
  %1 = mean(%x) {dims=[1], keepdim=true} : bf16[s0,1]
  %2 = full {shape=[], value=1e-05, dtype=bf16} : bf16[]
  %3 = add(%0, %2) : bf16[s0,1]
  %4 = rsqrt(%3) : bf16[s0,1]
  %5 = sub(%x, %1) : bf16[s0,s1]
  %6 = mul(%5, %4) : bf16[s0,s1]
  %7 = mul(%6, %w) : bf16[s0,s1]
  return %7, %1, %4
}

graph @argmax_any(%x: f32[8,5000]) {
  %0 = argmax(%x) {dim=1} : i64[8]
  %1 = gt(%x, %x) : b8[8,5000]
  %2 = any(%1) {dims=[1]} : b8[8]
  return %0, %2
}

graph @gather_cat(%x: f32[3,4], %i: i64[3,4]) {
  %1 = gather(%x, %i) {dim=1} : f32[3,4]
  %2 = cat(%x, %1) {dim=1} : f32[3,8]
  %3 = slice(%2) {dim=1, start=1, step=2} : f32[3,4]
  %4 = exp(%3) : f32[3,4]
  return %4
}

graph @scalar_input(%s: f32[], %x: f32[16]) {
  %0 = add(%x, %s) : f32[16]
  %1 = sum(%x) : f32[]
  %2 = mul(%1, %s) : f32[]
  return %0, %2
}

graph @inf_bounds_int_rounding_const_pow(%x: f32[9], %i: i64[9]) {
  %0 = clamp(%x) {min=-inf, max=inf} : f32[9]
  %1 = floor(%i) : i64[9]
  %2 = convert(%1) {dtype=f32} : f32[9]
  %3 = full {shape=[], value=2.5, dtype=f32} : f32[]
  %4 = full {shape=[], value=0, dtype=f32} : f32[]
  %5 = pow(%3, %4) : f32[]
  %6 = add(%0, %2) : f32[9]
  %7 = mul(%6, %5) : f32[9]
  return %7
}

graph @matmul_epilogue(%a: f16[64,32], %b: f16[32,48], %bias: f16[48]) {
  %0 = mm(%a, %b) : f16[64,48]
  %1 = add(%0, %bias) : f16[64,48]
  %2 = relu(%1) : f16[64,48]
  return %2
}
"""
N_CASES = CASES.count("graph @")

# "fused_add_clamp    sm_80  regs  32  spills 0          smem      0  lines   31  compile  0.21 s  [a87e3ba42212d62d]"
ROW = re.compile(r"^(\w+)\s+sm_(\d+)\s+regs\s+(\d+)\s+spills (\d+|\d+/\d+ B)\s+smem\s+(\d+)\s+"
                 r"lines\s+(\d+)\s+compile\s+(\d+\.\d+) s\s+\[([0-9a-f]{16})\](  OVER BUDGET: .*)?$")
SUMMARY = re.compile(r"^aot-check: (\d+) kernels x (\d+) archs \(.*\): "
                     r"(\d+) compiled, (\d+) failed, (\d+) with spills, (\d+) over budget$")


@pytest.fixture(autouse=True, scope="module")
def fresh_triton_cache(tmp_path_factory):
    """Compile for real: no hits in the developer's Triton cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_CACHE_DIR", str(tmp_path_factory.mktemp("triton-cache")))
        yield


def aot_check(capsys, *args):
    code = main(["aot-check", *args])
    out, err = capsys.readouterr()
    rows = [ROW.match(ln) for ln in out.splitlines() if re.search(r" sm_\d+ ", ln) and "FAILED" not in ln
            and not ln.startswith(("sm_", "spills:", "aot-check:"))]
    summary = [SUMMARY.match(ln) for ln in out.splitlines() if ln.startswith("aot-check:")]
    return code, out, err, rows, summary


def test_hand_written_kernels_compile_for_sm80_and_sm90(tmp_path, capsys):
    f = tmp_path / "cases.mlc"
    f.write_text(CASES)
    code, out, err, rows, summary = aot_check(capsys, "--ir", str(f), "--arch", "80,90")
    assert code == 0, out + err
    assert all(rows) and len(rows) == 2 * N_CASES, out
    assert {int(r.group(2)) for r in rows} == {80, 90}
    assert all(int(r.group(3)) > 0 for r in rows), out  # registers per thread
    shared = {(r.group(1), int(r.group(2))): int(r.group(5)) for r in rows}
    # Cross-warp reductions and the matmul's pipelined tiles go through shared memory.
    assert shared["fused_convert_amax_sub_exp_sum_div", 80] > 0 and shared["fused_mm_add_relu", 90] > 0
    assert len(summary) == 1 and summary[0], out
    n_kernels, n_archs, compiled, failed, _, over = map(int, summary[0].groups())
    assert (n_kernels, n_archs, compiled, failed, over) == (N_CASES, 2, 2 * N_CASES, 0, 0)
    # Beside registers: each kernel's source lines and compile time.
    assert all(int(r.group(6)) > 10 and float(r.group(7)) > 0 and r.group(9) is None for r in rows), out
    assert re.search(r"^sm_80: \d+ compiled, 0 failed, registers \d+-\d+, ", out, re.M)


def test_one_model_forward_and_backward(capsys):
    code, out, err, rows, summary = aot_check(capsys, "--models", "mlp", "--quick", "--arch", "80,90")
    assert code == 0, out + err
    assert all(rows) and rows and all(int(r.group(3)) > 0 for r in rows), out
    n_kernels, _, compiled, failed, _, over = map(int, summary[0].groups())
    assert failed == 0 and compiled == 2 * n_kernels and over == 0
    names = {r.group(1) for r in rows}
    assert any("gelu" in n for n in names) and any("sum" in n for n in names), names  # forward, and bias grads


def test_the_fixed_regions_still_match_eager_in_the_interpreter():
    from tests.codegen.test_templates import check

    graphs = CASES.split("\ngraph @")
    check("graph @" + next(g for g in graphs if g.startswith("inf_bounds_int_rounding_const_pow")).strip())


def _kernel(text):
    return generate(verify(parse(text)))


def test_spills_are_measured_and_summarized():
    # A persistent row of 4096 floats, 2 rows per program, on one warp: 256 values a thread.
    ks = _kernel("""graph @k(%x: f32[64,4096]) {
      %0 = amax(%x) {dims=[1], keepdim=true} : f32[64,1]
      %1 = sub(%x, %0) : f32[64,4096]
      %2 = exp(%1) : f32[64,4096]
      %3 = sum(%2) {dims=[1], keepdim=true} : f32[64,1]
      %4 = div(%2, %3) : f32[64,4096]
      return %4
    }""")
    assert ks.params["persistent"]
    r = aot.compile_for_gpu(ks, 80, {"XBLOCK": 2, "RBLOCK": 4096, "num_warps": 1})
    assert r.ok, r.error
    assert r.spill_stores > 0 and r.spill_loads > 0 and r.registers > 200
    assert f"spills {r.spill_stores}/{r.spill_loads} B" in r.line()
    lines = aot_cli.summary([r])
    assert any(ln.startswith("spills: fused_amax_sub_exp_sum_div") and "sm_80" in ln for ln in lines)
    assert lines[-1].endswith("1 compiled, 0 failed, 1 with spills, 0 over budget")


def test_a_kernel_that_does_not_compile_fails_the_check(tmp_path, capsys, monkeypatch):
    ks = _kernel("""graph @k(%x: f32[16]) {
      %0 = exp(%x) : f32[16]
      return %0
    }""")
    # tl.arange needs a power-of-two length; the GPU compile rejects this.
    bad = dataclasses.replace(ks, source=ks.source.replace("tl.exp(", "tl.arange(0, 3) + tl.exp("))
    r = aot.compile_for_gpu(bad, 90)
    assert not r.ok and "arange" in r.error and "FAILED" in r.line()
    monkeypatch.setattr(aot_cli, "ir_kernels", lambda path: [aot_cli.Kernel(bad, ["test"], name=bad.name)])
    code, out, err, _, summary = aot_check(capsys, "--ir", "unused.mlc", "--arch", "90")
    assert code == 1
    assert "fused_exp" in out and "FAILED" in out
    assert summary[0].groups() == ("1", "1", "0", "1", "0", "0")


def test_kernels_over_the_budget_are_flagged_but_do_not_fail(tmp_path, capsys, monkeypatch):
    f = tmp_path / "k.mlc"
    f.write_text(CASES.split("\n\n")[1])  # int_math: about 30 lines
    monkeypatch.setattr(aot_cli, "LINES_BUDGET", 20)
    code, out, err, rows, summary = aot_check(capsys, "--ir", str(f), "--arch", "90")
    assert code == 0, out + err
    (row,) = rows
    assert row.group(9) == f"  OVER BUDGET: {row.group(6)} source lines (budget 20)", out
    assert re.search(rf"^over budget: {row.group(1)} \[{row.group(8)}\] sm_90: {row.group(6)} source lines", out, re.M)
    assert summary[0].groups()[-1] == "1"
    r = aot.AotResult("k", 90, lines=10, seconds=aot_cli.SECONDS_BUDGET + 1, ok=True)
    assert aot_cli.over_budget(r) == [f"{r.seconds:.1f} s to compile (budget {aot_cli.SECONDS_BUDGET:g} s)"]


@pytest.mark.parametrize("args,message", [
    (["--models", "mlp,resnet"], "unknown model resnet"),
    (["--arch", "eighty"], "bad --arch"),
    (["--arch", "70"], "unsupported --arch 70"),
    (["--ir", "missing.mlc"], "cannot read missing.mlc"),
])
def test_usage_errors_are_one_line_with_exit_code_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["aot-check", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
