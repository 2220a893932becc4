"""PyTorch's own OpInfo samples through ``backend="mlc"``, compared with eager.

Every op of mlc's op table (``mlc.ir.ops.OPS``, less the source, symbolic-int and fallback
ops) is exercised by at least one OpInfo of ``torch.testing._internal.common_methods_invocations.op_db``
(``CASES`` below says which), and so are the composites that models are made of (softmax,
layer_norm, rms_norm, silu, attention, split, cat, ...). For each OpInfo and dtype, the
OpInfo's ``sample_inputs`` (at most ``MAX_SAMPLES``, spread over its list) run through
``torch.compile(..., backend="mlc", options={"verify": True})`` and must match eager.
Each sample also shows which mlc ops it became: the case's ops must appear, and an ATen
fallback (or a graph mlc gives back to PyTorch whole) is an error unless ``CASES`` says why.

Last run (torch 2.13.0 CPU, 2 shared cores, MAX_SAMPLES=6, kernels in Triton's interpreter as
tests/conftest.py sets; the whole file took 95-105 s):
    float32: 636 samples ran, 636 passed (12 not run: SDPA samples with dropout, which is random)
    float16: 633 ran, 633 passed (12 not run, the same)
    int64 and bool (only the bitwise ops, which take no float): 21 + 21 ran, all passed
  Ran through ATen, all deliberate (see CASES): aten.embedding_renorm (max_norm), aten.gather
  (an empty u8 index), aten.round.decimals; narrow with a tensor start is not captured (a
  data-dependent .item()). SDPA with 4-d inputs is mlc's attention op. Documented but outside the
  capped samples: aten.index.Tensor (indices on dims that are not consecutive), a boolean-mask
  __getitem__ (not captured), aten.slice_scatter with a step, and where(c, x, 2j) in
  reference_inputs (a complex scalar: the whole graph runs through PyTorch).
  mlc bugs the samples found, all fixed (the regression tests at the end keep them so):
    frontend: index_select of a 0-d tensor (shape rule gave [1]); max/min.dim of a b8 tensor
      (argmax refuses b8: a run-time crash); complex scalars (x + 2j, where(c, x, 2j): IR
      attributes cannot hold them, a verifier crash); hardtanh/relu6 fell back (now clamp).
    kernels: a lone node that is no kernel (pow with a tensor exponent, a 0-d reduction) was
      made one; dim 0 of a 0-d reduction; a reduction over an empty dim was launched over one
      element (a segfault); one-element loads (0-d inputs, one-element index tensors) left
      scalars: a scalar pointer under a block mask, and the interpreter mistypes scalar
      comparisons (logical_and with a 0-d operand).
  Not an mlc bug: eager's fp16 rounding division disagrees with itself (see Case.upcast).

``MLC_OPINFO_SAMPLES=N`` changes the cap (0: every sample) and ``MLC_OPINFO_INPUTS=reference``
takes the OpInfos' larger ``reference_inputs`` instead: slower, for hunting bugs.
The run's counts are printed after the last test of the module, past pytest's output capture.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import torch.utils._pytree as pytree
from torch.testing._internal.common_methods_invocations import op_db

from mlc.backend import mlc_backend
from mlc.ir.ops import OPS, Category

MAX_SAMPLES = int(os.environ.get("MLC_OPINFO_SAMPLES", "6"))
INPUTS = "reference_inputs" if os.environ.get("MLC_OPINFO_INPUTS") == "reference" else "sample_inputs"

FLOATS = (torch.float32, torch.float16)
INTS = (torch.int64, torch.bool)  # for the ops that take no float at all

# Special keys of Case.fallbacks (the others are ATen overloads, as "aten.round.decimals").
WHOLE_GRAPH = "whole graph"  # mlc gave the graph back to PyTorch (UnsupportedGraph)
NOT_CAPTURED = "not captured"  # Dynamo made no graph of the call (a graph break)


@dataclass(frozen=True)
class Case:
    opinfo: str  # name in op_db, with ".variant" when the OpInfo has a variant_test_name
    mlc: tuple[str, ...]  # mlc ops that the samples must produce (together)
    fallbacks: dict[str, str] = field(default_factory=dict)  # what may run through ATen -> why
    fn: Callable | None = None  # what to compile, if not the OpInfo's own op
    skip: Callable[[Any], bool] | None = None  # samples that cannot be compared (see the row)
    dtypes: tuple = FLOATS
    # fp16 samples compare with eager run in fp32 and rounded: eager's own fp16 kernels for
    # rounding division disagree with each other (the vectorized one rounds the quotient to
    # fp16 before truncating: -8.477 / -0.06100 gives 139, the scalar one 138 = trunc(138.95)).
    upcast: bool = False
    tol: dict | None = None  # float32 tolerances, where the default (rtol 1.3e-6) is too tight (see the row)


def C(opinfo: str, mlc: str = "", **kw) -> Case:
    return Case(opinfo, tuple(mlc.split()), **kw)


def _dropout(sample) -> bool:
    return sample.kwargs.get("dropout_p", 0.0) != 0.0


# OpInfo -> the mlc ops its samples must become. One row per OpInfo.
CASES = [
    # --- pointwise, computed in floating point ---
    C("exp", "exp"), C("exp2", "exp2"), C("expm1", "expm1"), C("log", "log"), C("log2", "log2"),
    C("log10", "log10"), C("log1p", "log1p"), C("sqrt", "sqrt"), C("rsqrt", "rsqrt"),
    C("sin", "sin"), C("cos", "cos"), C("tan", "tan"), C("asin", "asin"), C("acos", "acos"),
    C("atan", "atan"), C("sinh", "sinh"), C("cosh", "cosh"), C("tanh", "tanh"), C("asinh", "asinh"),
    C("acosh", "acosh"), C("atanh", "atanh"), C("sigmoid", "sigmoid"), C("erf", "erf"),
    C("erfc", "erfc"), C("erfinv", "erfinv"), C("reciprocal", "reciprocal"),
    C("nn.functional.silu", "silu"),
    C("nn.functional.gelu", "gelu"),
    # --- pointwise, keeping the dtype ---
    C("neg", "neg"), C("abs", "abs"), C("nn.functional.relu", "relu"), C("floor", "floor"),
    C("ceil", "ceil"), C("round", "round"), C("trunc", "trunc"), C("sign", "sign"),
    C("round.decimals_3", "", fallbacks={"aten.round.decimals": "mlc's round has no decimals attribute"}),
    C("bitwise_not", "bitwise_not", dtypes=INTS),
    C("clamp", "maximum minimum"), C("clamp_min", "maximum"), C("clamp_max", "minimum"),  # tensor bounds
    C("nn.functional.hardtanh", "clamp"), C("nn.functional.relu6", "clamp"),  # scalar bounds
    # --- pointwise, giving b8 ---
    C("isnan", "isnan"), C("isinf", "isinf"), C("logical_not", "logical_not"),
    # --- casts ---
    C("to", "convert"), C("double", "convert"), C("bool", "convert"), C("long", "convert"),
    C("half"), C("float"),  # the identity in one of the two dtypes, so no convert is required
    # --- binary pointwise (tensor-tensor and tensor-scalar samples) ---
    C("add", "add"), C("sub", "sub"), C("rsub", "sub"), C("mul", "mul"), C("maximum", "maximum"),
    C("minimum", "minimum"), C("max.binary", "maximum"), C("min.binary", "minimum"),
    C("fmod", "fmod"), C("remainder", "remainder"), C("pow", "pow"), C("square", "pow"),
    C("atan2", "atan2"), C("div.no_rounding_mode", "div"), C("true_divide", "div"),
    C("div.trunc_rounding", "div", upcast=True), C("div.floor_rounding", "div", upcast=True),
    C("bitwise_and", "bitwise_and", dtypes=INTS), C("bitwise_or", "bitwise_or", dtypes=INTS),
    C("bitwise_xor", "bitwise_xor", dtypes=INTS),
    C("eq", "eq"), C("ne", "ne"), C("lt", "lt"), C("le", "le"), C("gt", "gt"), C("ge", "ge"),
    C("logical_and", "logical_and"), C("logical_or", "logical_or"), C("logical_xor", "logical_xor"),
    C("where", "where", fallbacks={  # in reference_inputs only
        WHOLE_GRAPH: "a complex scalar, where(c, x, 2j): IR attributes hold no complex numbers"}),
    C("masked_fill", "where"),
    # --- reductions ---
    C("sum", "sum"), C("mean", "mean"), C("prod", "prod"), C("amax", "amax"), C("amin", "amin"),
    C("max.reduction_no_dim", "amax"), C("min.reduction_no_dim", "amin"),
    C("max.reduction_with_dim", "amax argmax"), C("min.reduction_with_dim", "amin argmin"),
    C("any", "any"), C("all", "any logical_not"),  # core ATen: all(x) = not any(not x)
    C("var", "var"), C("var.unbiased", "var"), C("var_mean", "var mean"),
    C("std", "var sqrt"), C("argmax", "argmax"), C("argmin", "argmin"),
    # --- matmul ---
    C("mm", "mm"), C("bmm", "bmm"), C("addmm", "mm add"), C("matmul", "mm"),
    C("nn.functional.linear", "mm"),
    # --- views ---
    C("view", "view"), C("reshape", "view"), C("view_as", "view"), C("flatten", "view"),
    C("unsqueeze", "view"), C("squeeze", "view"),
    C("permute", "permute"), C("transpose", "permute"), C("t", "permute"),
    C("expand", "expand"), C("expand_as", "expand"),
    C("slice", "slice"),
    C("narrow", "slice", fallbacks={
        NOT_CAPTURED: "a 0-d tensor start is read with .item(): AOT autograd cannot trace the "
                      "data-dependent scalar, and Dynamo runs the call eagerly"}),
    C("select", "select"), C("unbind", "slice"),  # core ATen: unbind = split + squeeze
    C("split", "slice"), C("split_with_sizes", "slice"), C("chunk", "slice"),
    # --- data movement ---
    C("clone", "copy"), C("contiguous"),  # the samples are contiguous already: no op
    C("cat", "cat"),
    C("slice_scatter", "cat", fallbacks={"aten.slice_scatter.default": "a strided scatter is no cat of slices"}),
    C("gather", "gather", fallbacks={
        "aten.gather.default": "an empty u8 index, which eager takes only because it is empty"}),
    C("take_along_dim", "gather"),
    C("index_select", "index_select"),
    C("index_copy", "index_copy", fallbacks={"aten.index_put.default": "a 0-d destination (no dim to index)"}),
    C("index_put", "index_copy", fallbacks={
        "aten.index_put.default": "several index tensors, a boolean mask or accumulation (a scatter-add)"}),
    C("nn.functional.embedding", "embedding", fallbacks={
        "aten.embedding_renorm.default": "max_norm renormalizes the weight's rows in place"}),
    C("__getitem__", "index slice select", fallbacks={
        "aten.index.Tensor": "mlc's index op takes indices on consecutive dims only",
        NOT_CAPTURED: "a boolean mask gives a data-dependent shape, so Dynamo breaks the graph"}),
    # --- creation ---
    C("full", "full"), C("full_like", "full"), C("zeros_like", "full"), C("ones_like", "full"),
    C("new_full", "full"), C("new_zeros", "full"), C("new_ones", "full"), C("zeros", "full"),
    C("ones", "full"), C("scalar_tensor", "full"), C("arange", "arange"),
    # --- composites ---
    C("softmax", "amax exp sum div"), C("softmax.with_dtype", "amax exp sum div convert"),
    C("log_softmax", "amax exp sum log"), C("log_softmax.with_dtype", "amax exp sum log convert"),
    C("nn.functional.layer_norm", "var rsqrt"),
    C("nn.functional.rms_norm", "mean rsqrt"),
    # op.op wraps the call in wrapper_set_seed, which Dynamo cannot trace; dropout is random.
    # 4-d inputs take torch's CPU flash kernel, which becomes mlc's attention op; others the
    # math form (bmm, softmax, bmm), which rounds differently from eager's fused kernel: on
    # samples with values up to 9 both are ~1e-5 from float64, neither closer.
    C("nn.functional.scaled_dot_product_attention", "attention bmm amax exp",
      fn=torch.nn.functional.scaled_dot_product_attention, skip=_dropout, tol={"atol": 5e-5, "rtol": 5e-5}),
]

OPINFOS = {o.name + (f".{o.variant_test_name}" if o.variant_test_name else ""): o for o in op_db}


# --- running one case ----------------------------------------------------------------------


@dataclass
class Tally:
    ran: int = 0
    passed: int = 0
    not_run: int = 0
    fallbacks: collections.Counter = field(default_factory=collections.Counter)


TALLY: dict[tuple[str, torch.dtype], Tally] = collections.defaultdict(Tally)


def _spread(samples: list, n: int) -> list:
    """At most ``n`` samples, taken evenly over the list (its later samples are the odd ones)."""
    if n <= 0 or len(samples) <= n:
        return samples
    return [samples[i * len(samples) // n] for i in range(n)]


def _tolerances(case: Case, dtype) -> dict:
    if dtype in (torch.float16, torch.bfloat16):
        return {"atol": 2e-3, "rtol": 2e-3}
    return case.tol or {}


def _compile(fn, graphs: list):
    # Exactly what backend="mlc" runs (test_backend_is_mlc checks it), plus the hook that
    # mlc.capture uses to keep the imported IR graphs.
    backend = functools.partial(mlc_backend, options={"verify": True},
                                _on_compile=lambda imported, _: graphs.append(imported))
    return torch.compile(fn, backend=backend, dynamic=False)


def _eager(case: Case, fn, sample, dtype):
    args, kwargs = (sample.input, *sample.args), sample.kwargs
    if not (case.upcast and dtype == torch.float16):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager's own remarks (std with no degrees of freedom)
            return fn(*args, **kwargs)
    up = pytree.tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype == dtype else t, (args, kwargs))
    return pytree.tree_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
                           fn(*up[0], **up[1]))


def run_sample(case: Case, fn, sample, expected, dtype):
    """Compile ``fn`` for one sample and compare with eager; give the mlc ops and fallbacks."""
    graphs: list = []
    torch._dynamo.reset()  # one fresh compile per sample: no recompile limits, no stale guards
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _compile(lambda *a, **k: fn(*a, **k), graphs)(sample.input, *sample.args, **sample.kwargs)
    torch.testing.assert_close(got, expected, equal_nan=True, **_tolerances(case, dtype),
                               msg=lambda m: f"{sample.summary()}: {m}")
    ops = {n.op for g in graphs for n in g.nodes}
    fallbacks = [n.attrs["target"] for g in graphs for n in g.nodes if n.op == "aten"]
    if any("runs through PyTorch unchanged" in str(w.message) for w in caught):
        fallbacks.append(WHOLE_GRAPH)
    elif not graphs:
        fallbacks.append(NOT_CAPTURED)
    return ops, fallbacks


def _params() -> list:
    return [pytest.param(case, dtype, id=f"{case.opinfo}-{str(dtype).removeprefix('torch.')}")
            for case in CASES for dtype in case.dtypes]


@pytest.mark.parametrize("case,dtype", _params())
def test_opinfo(case: Case, dtype):
    op = OPINFOS[case.opinfo]
    if dtype not in op.supported_dtypes("cpu"):
        pytest.skip(f"{case.opinfo} does not take {dtype} on CPU")
    fn = case.fn or op.op
    torch.manual_seed(0)
    samples = list(getattr(op, INPUTS)("cpu", dtype, requires_grad=False))
    tally = TALLY[case.opinfo, dtype]
    if case.skip:
        kept = [s for s in samples if not case.skip(s)]
        tally.not_run += len(samples) - len(kept)
        samples = kept
    seen_ops: set[str] = set()
    for sample in _spread(samples, MAX_SAMPLES):
        try:
            expected = _eager(case, fn, sample, dtype)
        except Exception:  # eager rejects the sample (an error-input sample): nothing to compare
            tally.not_run += 1
            continue
        tally.ran += 1
        ops, fallbacks = run_sample(case, fn, sample, expected, dtype)
        unexplained = sorted(set(fallbacks) - set(case.fallbacks))
        assert not unexplained, f"{case.opinfo} {sample.summary()}: {unexplained} ran through ATen; mlc ops: {sorted(ops)}"
        tally.fallbacks.update(fallbacks)
        tally.passed += 1
        seen_ops |= ops
    assert tally.ran, f"no sample of {case.opinfo} ran"
    missing = sorted(set(case.mlc) - seen_ops)
    assert not missing, f"{case.opinfo}: no sample became mlc op(s) {missing}; saw {sorted(seen_ops)}"


# --- the table itself ----------------------------------------------------------------------


# mlc ops that no ATen graph from torch.compile produces, so no OpInfo can reach them.
UNREACHABLE = {
    "all": "core ATen's decompositions write all(x) as not any(not x) before mlc sees it",
    # OpInfo samples run forward only; tests/codegen/test_attention.py checks SDPA's gradients.
    "attention_grad_kv": "the backward of SDPA (OpInfo samples do not require grad)",
    "attention_grad_q": "the backward of SDPA (OpInfo samples do not require grad)",
    # tests/test_attention.py checks it against eager, in attention written by hand.
    "attention_scores": "made by the fusion pass (fuse_attention), inside the kernel of attention written by hand",
    "attention_probs_grad": "made by frontend/hand_attention.py in the joint graph of attention written by hand",
    # tests/codegen/test_attention.py checks it against eager SDPA.
    "attention_split": "made by split_attention for at most 16 queries over 256 keys or more, longer than the samples",
}


def test_every_mlc_op_has_a_case():
    skipped = {Category.SOURCE, Category.SYM, Category.FALLBACK, Category.KERNEL}
    ops = {name for name, opdef in OPS.items() if opdef.category not in skipped}
    covered = {op for case in CASES for op in case.mlc} | set(UNREACHABLE)
    assert ops - covered == set(), f"mlc ops no OpInfo case exercises: {sorted(ops - covered)}"


def test_cases_name_real_opinfos():
    assert [c.opinfo for c in CASES if c.opinfo not in OPINFOS] == []
    assert len({c.opinfo for c in CASES}) == len(CASES), "an OpInfo is listed twice"


def test_backend_is_mlc():
    from torch._dynamo import lookup_backend

    assert lookup_backend("mlc") is mlc_backend


# --- regressions the samples found (cases the capped sample lists may not reach) ----------


def _check_against_eager(fn, *args):
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback warnings are expected here
        got = torch.compile(fn, backend="mlc", options={"verify": True}, dynamic=False)(*args)
        expected = fn(*args)
    torch.testing.assert_close(got, expected, equal_nan=True)


def test_index_select_of_a_0d_tensor():
    # torch keeps the result 0-d; the shape rule gave [1], and so a fallback.
    x, idx = torch.tensor(3.0), torch.tensor([0])
    _check_against_eager(lambda x, i: torch.index_select(x, 0, i), x, idx)
    graph_ops = {n.op for n in _capture(lambda x, i: torch.index_select(x, 0, i), x, idx)}
    assert "index_select" in graph_ops and "aten" not in graph_ops


def test_max_dim_of_bool():
    # torch.max(b8, dim) works, torch.argmax(b8) does not: the lowering to amax + argmax must
    # step aside (it crashed at run time).
    x = torch.tensor([[True, False], [False, False]])
    _check_against_eager(lambda x: torch.max(x, 1), x)
    _check_against_eager(lambda x: torch.min(x, 0, keepdim=True), x)


def test_complex_scalar():
    # where(c, x, 2j) is complex: from the where OpInfo's reference inputs. An IR attribute
    # cannot hold 2j, so the graph runs through PyTorch (it crashed in the verifier/printer).
    x = torch.randn(4, 3)
    _check_against_eager(lambda x: torch.where(x > 0, x, 2j), x)
    _check_against_eager(lambda x: x * 1j + 1, x)


# Each crashed or went wrong in generated kernels (Triton's interpreter) before its fix.
KERNEL_REGRESSIONS = {
    # rnumel 0 was launched as 1: a read of an empty tensor (a segfault in the interpreter)
    "var of an empty tensor": (lambda x: torch.var(x), torch.randn(0)),
    "sum over an empty dim": (lambda x: x.sum(1) + 1, torch.randn(3, 0)),
    # a one-element index tensor gave a scalar pointer under a block mask
    "index_select with one index": (lambda x, i: torch.index_select(x, 0, i), torch.randn(1), torch.tensor([0])),
    "embedding of one row": (lambda w, i: torch.nn.functional.embedding(i, w), torch.randn(3, 1), torch.tensor([1])),
    "gather at one index": (lambda x, i: torch.gather(x, 0, i) * 2, torch.randn(3), torch.tensor([1])),
    # a 0-d operand left a scalar, whose comparisons the interpreter mistypes
    "logical_and with a 0-d operand": (lambda a, b: torch.logical_and(a, b), torch.randn(5), torch.tensor(3.0)),
    "where on a selected element": (lambda a, b: torch.where(a[1] > 0, b, a[0]), torch.randn(5), torch.randn(4)),
    # dim 0 of a 0-d tensor: the reduction template indexed a dim that is not there
    "max over dim 0 of a 0-d tensor": (lambda x: torch.max(x, 0), torch.tensor(1.5)),
    # alone, a node that is no kernel (a pow with a tensor exponent) was made one anyway
    "pow with a tensor exponent": (lambda a, b: torch.pow(a, b), torch.rand(4) + 0.5, torch.randn(4)),
}


@pytest.mark.parametrize("name", list(KERNEL_REGRESSIONS))
def test_kernel_regression(name):
    fn, *args = KERNEL_REGRESSIONS[name]
    _check_against_eager(fn, *args)


def test_hardtanh_is_a_clamp():
    # A core ATen op: it fell back for want of a lowering. relu6 is hardtanh(0, 6).
    ops = {n.op for n in _capture(lambda x: torch.nn.functional.relu6(x) + 1, torch.randn(8) * 8)}
    assert "clamp" in ops and "aten" not in ops
    _check_against_eager(lambda x: torch.nn.functional.hardtanh(x, -0.5, 0.5), torch.randn(8))


def _capture(fn, *args):
    import mlc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [n for g in mlc.capture(fn, *args, verify=True) for n in g.nodes]


# --- the counts ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    if not TALLY:
        return
    lines = ["", "OpInfo samples through backend='mlc' (ran / passed / not run: eager rejects or skipped):"]
    by_dtype: dict = collections.defaultdict(lambda: [0, 0, 0])
    fallbacks: dict = collections.defaultdict(set)
    for (name, dtype), t in TALLY.items():
        row = by_dtype[dtype]
        row[0], row[1], row[2] = row[0] + t.ran, row[1] + t.passed, row[2] + t.not_run
        for target in t.fallbacks:
            fallbacks[target].add(name)
    for dtype, (ran, passed, not_run) in by_dtype.items():
        lines.append(f"  {str(dtype).removeprefix('torch.'):8} {ran:4} ran, {passed:4} passed, {not_run:3} not run")
    lines.append("  ran through ATen (deliberately, see CASES):")
    lines += [f"    {target}: {', '.join(sorted(names))}" for target, names in sorted(fallbacks.items())]
    # Shown even though pytest captures output: the counts are this file's point.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n".join(lines))
