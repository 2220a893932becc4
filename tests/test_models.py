"""The model zoo (``mlc.testing.models``) compiled with mlc against eager PyTorch.

For each model: inference and training (loss, every gradient, one optimizer step) match
eager; the IR has the ops we expect and falls back to ATen only for the ops each model
lists; dynamic shapes serve several batch sizes from one compile.
"""

from __future__ import annotations

import re
import warnings

import pytest
import sympy
import torch

import mlc
from mlc.ir import SymType, TensorType
from mlc.testing.models import MODELS

OPTIONS = {"verify": True}
TRANSFORMERS = ["gpt2_block", "llama_block"]
FALLBACK = re.compile(r"mlc: (\S+) runs through ATen")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # Every test builds new modules of the same classes: without a reset, Dynamo's guards on
    # the old ones would count as recompiles and could hit its cache limit (then run eagerly).
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class CountingBackend:
    """mlc's backend, counting the graphs Dynamo compiles and keeping the IR of the last one."""

    def __init__(self):
        self.compiles = 0
        self.graphs: list[mlc.Graph] = []

    def __call__(self, gm, example_inputs):
        graphs: list[mlc.Graph] = []
        compiled = mlc.mlc_backend(gm, example_inputs, options=OPTIONS,
                                   _on_compile=lambda imported, _: graphs.append(imported))
        # Counted only when it returns: under dynamic=True Dynamo may restart its analysis from
        # inside the backend (TensorifyScalarRestartAnalysis, for float attributes such as a
        # norm's eps) and throw that compile away.
        self.compiles += 1
        self.graphs = graphs  # the backward graph is appended when backward first runs
        return compiled


class Fallbacks:
    """Records the ATen ops that mlc's warnings say fall back, while in a ``with`` block."""

    def __enter__(self):
        self._catch = warnings.catch_warnings(record=True)
        self._log = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        self.ops = {m.group(1) for w in self._log if (m := FALLBACK.match(str(w.message)))}


def loss_of(out: torch.Tensor) -> torch.Tensor:
    return out if out.dim() == 0 else out.float().square().mean()


def with_grad(inputs):
    """Fresh leaf copies of the inputs; the floating ones require grad."""
    return tuple(x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs)


def assert_matches(actual, expected, reference=None, what="", dtype=None):
    """``actual`` (mlc) matches ``expected`` (eager).

    Without ``reference``, to ``assert_close``'s tolerances. With one, for float16/bfloat16
    runs: there mlc rounds at other places than eager's fused kernels do (addmm is mm then
    add), so exact agreement is not expected. Instead mlc's error against ``reference``, the
    same computation in float64, must be at most twice eager's own, plus one rounding step
    of ``dtype`` (the one computed in; ``expected``'s by default) at the result's scale.
    """
    if reference is None:
        torch.testing.assert_close(actual, expected, msg=lambda m: f"{what}: {m}")
        return
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    ref = reference.double()
    err_mlc = (actual.double() - ref).abs().max().item()
    err_eager = (expected.double() - ref).abs().max().item()
    ulp = torch.finfo(dtype or expected.dtype).eps * ref.abs().max().item()
    assert err_mlc <= 2 * err_eager + ulp, f"{what}: mlc error {err_mlc:.3g}, eager error {err_eager:.3g}"


def ir_ops(graph: mlc.Graph) -> set[str]:
    return {n.op for n in graph.nodes}


def fallback_targets(graph: mlc.Graph) -> set[str]:
    return {n.attrs["target"] for n in graph.nodes if n.op == "aten"}


def has_symbol(graph: mlc.Graph) -> bool:
    for node in graph.inputs:
        t = node.types[0]
        dims = t.shape if isinstance(t, TensorType) else (t.expr,)
        if any(isinstance(d, sympy.Expr) and d.free_symbols for d in dims):
            return True
    return False


# --- inference ----------------------------------------------------------------------------


# Train mode changes only the batch-norm models (batch statistics); the others have no dropout.
@pytest.mark.parametrize("name,train",
                         [(name, False) for name in MODELS] + [("conv_block", True), ("resnet_block", True)],
                         ids=[*MODELS, "conv_block-train", "resnet_block-train"])
def test_inference_matches_eager(name, train):
    spec = MODELS[name]
    model, inputs = spec.build(train=train)
    compiled_model, _ = spec.build(train=train)
    compiled = torch.compile(compiled_model, backend="mlc", options=OPTIONS)
    with torch.no_grad():
        for _ in range(2):  # the second call runs the cached compile (and, in train mode, updated stats)
            assert_matches(compiled(*inputs), model(*inputs), what=name)
    for (key, buf), expected in zip(compiled_model.named_buffers(), model.buffers()):
        torch.testing.assert_close(buf, expected, msg=lambda m: f"buffer {key}: {m}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_inference_low_precision(name, dtype):
    spec = MODELS[name]
    model, inputs = spec.build(dtype=dtype)
    ref_model, ref_inputs = spec.build(dtype=torch.float64)
    compiled = torch.compile(spec.build(dtype=dtype)[0], backend="mlc", options=OPTIONS)
    with torch.no_grad():
        out = compiled(*inputs)
        assert out.dtype == dtype
        assert_matches(out, model(*inputs), ref_model(*ref_inputs), what=name)


# --- training -----------------------------------------------------------------------------


def train_step(fn, module, inputs, optimizer):
    """One forward and backward of ``fn`` (``module`` or its compiled form); returns the loss
    and every gradient (of ``module``'s parameters, then of the inputs)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(fn(*inputs))
    loss.backward()
    grads = {f"grad {k}": p.grad for k, p in module.named_parameters()}
    grads.update({f"grad input {i}": x.grad for i, x in enumerate(inputs) if x.requires_grad})
    return loss.detach(), grads


def check_training(spec, dtype, steps=2):
    """Train eager and compiled copies side by side (and, in low precision, a float64 copy)."""
    runs = [spec.build(dtype=dtype, train=True), spec.build(dtype=dtype, train=True)]
    if dtype != torch.float32:
        runs.append(spec.build(dtype=torch.float64, train=True))
    fns = [m for m, _ in runs]
    fns[1] = torch.compile(fns[1], backend="mlc", options=OPTIONS)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m, _ in runs]
    for step in range(steps):
        results = [train_step(fn, m, with_grad(xs), opt) for fn, (m, xs), opt in zip(fns, runs, optimizers)]
        (loss, grads), (my_loss, my_grads) = results[:2]
        ref_loss, ref_grads = results[2] if len(results) > 2 else (None, {})
        assert_matches(my_loss, loss, ref_loss, what=f"step {step} loss", dtype=dtype)
        assert my_grads.keys() == grads.keys()
        for key, g in grads.items():
            assert my_grads[key] is not None, f"step {step}: {key} is missing"
            assert_matches(my_grads[key], g, ref_grads.get(key), what=f"step {step} {key}")
        for opt in optimizers:
            opt.step()
    # Parameters after the steps, and batch norm's running statistics.
    states = [m.state_dict() for m, _ in runs]
    for key, expected in states[0].items():
        ref = states[2][key] if len(states) > 2 else None
        assert_matches(states[1][key], expected, ref, what=f"after {steps} steps: {key}")


@pytest.mark.parametrize("name", list(MODELS))
def test_training_matches_eager(name):
    spec = MODELS[name]
    with Fallbacks() as fb:
        check_training(spec, torch.float32)
    # Exactly the listed ops fall back, forward and backward: a new one is a regression,
    # a listed one that no longer falls back means the list (and the docs) should shrink.
    assert fb.ops == spec.fallbacks


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_training_low_precision(name, dtype):
    check_training(MODELS[name], dtype, steps=1)


# --- the IR -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_ir_ops(name):
    spec = MODELS[name]
    model, inputs = spec.build(train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (graph,) = mlc.capture(model, *inputs, verify=True)
    mlc.verify(graph)
    ops = ir_ops(graph)
    assert spec.ops <= ops, f"missing {sorted(spec.ops - ops)}"
    assert fallback_targets(graph) <= spec.fallbacks


def test_layer_norm_is_decomposed():
    (graph,) = mlc.capture(MODELS["gpt2_block"].build()[0], *MODELS["gpt2_block"].build()[1])
    assert {"var", "mean", "rsqrt", "sub", "mul"} <= ir_ops(graph)
    assert graph.count("rsqrt") == 2  # ln_1 and ln_2
    assert not fallback_targets(graph) and graph.count("attention") == 1  # SDPA: mlc's attention op


def test_llama_block_ir():
    spec = MODELS["llama_block"]
    with torch.no_grad():
        (graph,) = mlc.capture(spec.build()[0], *spec.build()[1])
    assert not fallback_targets(graph)
    assert graph.count("rsqrt") == 2  # the hand-written RMSNorm and nn.RMSNorm
    assert graph.count("silu") == 1 and graph.count("cat") >= 2  # SwiGLU; rotate-half of q and k
    assert graph.count("bmm") == 2  # scores and probs @ v


# --- dynamic shapes -----------------------------------------------------------------------


def run_batches(spec, compiled, model, batches):
    """Forward and backward at each batch size; outputs and input gradients match eager."""
    for batch in batches:
        _, inputs = spec.build(batch=batch)
        xs, my_xs = with_grad(inputs), with_grad(inputs)
        out, my_out = model(*xs), compiled(*my_xs)
        assert_matches(my_out, out, what=f"batch {batch}")
        loss_of(out).backward()
        loss_of(my_out).backward()
        for x, mine in zip(xs, my_xs):
            if x.requires_grad:
                assert_matches(mine.grad, x.grad, what=f"batch {batch} input grad")


@pytest.mark.parametrize("name", list(MODELS))
def test_dynamic_one_compile(name):
    spec = MODELS[name]
    model, _ = spec.build()
    backend = CountingBackend()
    compiled = torch.compile(spec.build()[0], backend=backend, dynamic=True)
    with Fallbacks() as fb:
        run_batches(spec, compiled, model, [2, 3, 5])
    assert backend.compiles == 1
    # Symbolic sizes lower as well as static ones, but for the ops a model lists as dynamic_fallbacks.
    assert fb.ops == spec.fallbacks | spec.dynamic_fallbacks
    forward, backward = backend.graphs
    assert has_symbol(forward) and has_symbol(backward)


@pytest.mark.parametrize("name", list(MODELS))
def test_automatic_dynamic(name):
    spec = MODELS[name]
    model, _ = spec.build()
    backend = CountingBackend()
    compiled = torch.compile(spec.build()[0], backend=backend)
    with Fallbacks() as fb:
        run_batches(spec, compiled, model, [2, 3, 4])
    assert fb.ops == spec.fallbacks
    # The first call compiles static shapes; the second size makes Dynamo mark the batch
    # dimension dynamic and compile once more; the third reuses that.
    assert backend.compiles <= 2
    assert has_symbol(backend.graphs[0])
