"""Parameter freezing: inference graphs take parameters and buffers as constants, folded once,
and never serve stale weights."""

from __future__ import annotations

import dataclasses
import functools
import re
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mlc
from mlc.backend import FrozenGraph
from mlc.options import make_options
from mlc.testing.models import MODELS


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class WeightPrep(nn.Module):
    """Weight work eager repeats on every call: a q/k/v concatenation, a transpose, a scale,
    a round trip through half precision."""

    def __init__(self, d=16):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.scale = nn.Parameter(torch.rand(3 * d) + 0.5)

    def forward(self, x):
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight]).half().float()
        return F.relu(x @ (w * self.scale[:, None]).t())


def nodes(ir: str) -> int:
    """Operations in an IR listing (kernel bodies included, constants not)."""
    return sum(1 for line in ir.splitlines() if " = " in line and "= constant" not in line and "= kernel" not in line)


class Compiles:
    """mlc's backend (options as given), counting the graphs it compiles."""

    def __init__(self, **options):
        self.graphs: list = []
        self.backend = functools.partial(mlc.mlc_backend, options={"verify": True, **options},
                                         _on_compile=lambda imported, compiled: self.graphs.append(compiled))


def test_freeze_pass_turns_inputs_into_named_constants():
    from mlc.ir import parse, verify
    from mlc.passes import freeze
    from tests.irtext import assert_ir

    graph = parse(textwrap.dedent("""
        graph @f(%x: f32[4,8], %w: f32[8,4], %b: f32[4]) {
          %c = constant : f32[4]
          %y = mm(%x, %w) : f32[4,4]
          %z = add(%y, %b) : f32[4,4]
          %o = add(%z, %c) : f32[4,4]
          return %o
        }"""))
    graph = dataclasses.replace(graph, constants={"c": torch.randn(4)})
    w, b = torch.randn(8, 4, requires_grad=True), torch.randn(4)
    frozen = verify(freeze(verify(graph), {1: ("fc.weight", w), 2: ("fc.bias", b)}))
    assert_ir(str(frozen), """
        graph @f(%x: f32[4,8]) {
          %fc.weight = constant : f32[8,4]
          %fc.bias = constant : f32[4]
          %c = constant : f32[4]
          %y = mm(%x, %fc.weight) : f32[4,4]
          %z = add(%y, %fc.bias) : f32[4,4]
          %o = add(%z, %c) : f32[4,4]
          return %o
        }""")
    # Held by reference (detached: folding must not record autograd history on a parameter).
    assert frozen.constants["fc.weight"].data_ptr() == w.data_ptr() and not frozen.constants["fc.weight"].requires_grad


def test_frozen_model_has_fewer_nodes_and_kernels():
    model, x = WeightPrep(), torch.randn(4, 16)
    frozen = mlc.explain(model, x, freeze=True)
    unfrozen = mlc.explain(model, x, freeze=False)
    assert nodes(frozen.graphs[0].ir) < nodes(unfrozen.graphs[0].ir)
    assert frozen.launches < unfrozen.launches
    assert len(frozen.kernels) < len(unfrozen.kernels)
    assert "cat" not in frozen.graphs[0].ir and "cat" in unfrozen.graphs[0].ir
    # The frozen graph takes x alone; its weight is one folded constant.
    assert re.match(r"graph @\w+\(%\w+: f32\[4,16\]\) \{$", frozen.graphs[0].ir.splitlines()[0])
    assert frozen.graphs[0].ir.count("= constant") == 1


@pytest.mark.parametrize("name", ["conv_block", "llama_block"])
def test_frozen_zoo_model_has_fewer_nodes(name):
    model, inputs = MODELS[name].build()
    frozen = mlc.explain(model, *inputs, freeze=True)
    unfrozen = mlc.explain(model, *inputs, freeze=False)
    assert nodes(frozen.graphs[0].ir) < nodes(unfrozen.graphs[0].ir)
    assert frozen.launches <= unfrozen.launches


@pytest.mark.parametrize("name", list(MODELS))
def test_frozen_and_unfrozen_match_eager(name):
    spec = MODELS[name]
    model, inputs = spec.build()
    with torch.no_grad():
        expected = model(*inputs)
        for freeze in (True, False):
            torch._dynamo.reset()
            compiled = torch.compile(spec.build()[0], backend="mlc", options={"verify": True, "freeze": freeze})
            torch.testing.assert_close(compiled(*inputs), expected, msg=lambda m: f"freeze={freeze}: {m}")


def test_changing_a_parameter_in_place_gives_the_new_result():
    model, x = WeightPrep(), torch.randn(4, 16)
    c = Compiles()
    compiled = torch.compile(model, backend=c.backend)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))
        compiled(x)
        assert len(c.graphs) == 1  # unchanged weights: no new compile
        model.q.weight.add_(1.0)
        torch.testing.assert_close(compiled(x), model(x))
        model.scale.mul_(-1.0)
        torch.testing.assert_close(compiled(x), model(x))
    assert len(c.graphs) == 3  # each change compiled the graph again, once


def test_replacing_a_parameter_gives_the_new_result():
    model, x = WeightPrep(), torch.randn(4, 16)
    compiled = torch.compile(model, backend=Compiles().backend)
    with torch.no_grad():
        compiled(x)
        model.k.weight = nn.Parameter(torch.randn(16, 16))
        torch.testing.assert_close(compiled(x), model(x))
        model.v.weight = nn.Parameter(model.v.weight.detach().clone())  # equal values, a new tensor
        torch.testing.assert_close(compiled(x), model(x))


def test_an_optimizer_step_between_inference_calls():
    model, x = WeightPrep(), torch.randn(4, 16)
    compiled = torch.compile(model, backend=Compiles().backend)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))
        opt.zero_grad()
        model(x).square().mean().backward()  # eager training step
        opt.step()


def test_training_graphs_are_not_frozen():
    model, x = WeightPrep(), torch.randn(4, 16)
    c = Compiles()
    out = torch.compile(model, backend=c.backend)(x)
    out.sum().backward()
    assert not any(isinstance(g, FrozenGraph) for g in c.graphs)
    assert all(g.graph.count("constant") == 0 for g in c.graphs)
    assert model.q.weight.grad is not None


def test_written_buffers_stay_inputs():
    # BatchNorm in train mode under no_grad: an inference graph that updates running stats.
    spec = MODELS["conv_block"]
    model, inputs = spec.build(train=True)
    compiled_model = spec.build(train=True)[0]
    c = Compiles()
    compiled = torch.compile(compiled_model, backend=c.backend)
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(compiled(*inputs), model(*inputs))
    torch.testing.assert_close(compiled_model.bn1.running_mean, model.bn1.running_mean)
    assert len(c.graphs) == 1  # no refreezing on each call
    names = {n.name for n in c.graphs[0].graph.nodes if n.op == "constant"}
    assert "conv1.weight" in names or any(n.startswith("conv1.weight") for n in names)
    assert not any("running" in n for n in names)


def test_freeze_off_keeps_parameters_as_inputs():
    model, x = WeightPrep(), torch.randn(4, 16)
    c = Compiles(freeze=False)
    with torch.no_grad():
        torch.compile(model, backend=c.backend)(x)
    assert len(c.graphs[0].graph.inputs) == 5 and c.graphs[0].graph.count("constant") == 0


@pytest.mark.parametrize("options", [{"freeze": "yes"}, {"freeze": 1}, {"fold_limit": -1}, {"fold_limit": True},
                                     {"fold_limit": "2"}, {"fold_limit": float("nan")}])
def test_bad_options(options):
    with pytest.raises(ValueError, match=repr(next(iter(options)))):
        make_options(options=options)


def test_options_from_environment(monkeypatch):
    monkeypatch.setenv("MLC_FREEZE", "0")
    monkeypatch.setenv("MLC_FOLD_LIMIT", "8")
    opts = make_options()
    assert opts.freeze is False and opts.fold_limit == 8.0
    monkeypatch.setenv("MLC_FOLD_LIMIT", "lots")
    with pytest.raises(ValueError, match="MLC_FOLD_LIMIT"):
        make_options()
