"""A compiled optimizer step: ``torch.compile(optimizer.step, backend="mlc")``.

The multi-tensor (``foreach``) ops decompose into per-tensor pointwise math
(``frontend/decompositions.py``), each parameter's update fuses into one kernel, and the
kernels write the parameters and optimizer states in place (``Plan.write_in_place``), so AOT
autograd's copies back into them copy nothing.
"""

import pytest
import torch

import mlc


def _model_and_optimizer(kind: str, foreach: bool):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, foreach=foreach)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1, foreach=foreach)
    return model, opt


def _states(opt):
    return [v for state in opt.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "for-loop"])
@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_compiled_step_matches_eager_and_updates_in_place(compiled_graphs, kind, foreach):
    seen = compiled_graphs
    eager_model, eager_opt = _model_and_optimizer(kind, foreach)
    model, opt = _model_and_optimizer(kind, foreach)
    params = [p.data_ptr() for p in model.parameters()]
    step = torch.compile(opt.step, backend="mlc")
    for _ in range(3):
        eager_opt.step()
        step()
    for a, b in zip(model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(_states(opt), _states(eager_opt)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert [p.data_ptr() for p in model.parameters()] == params
    updates = [launch for g in seen if getattr(g, "plan", None) is not None for launch in g.plan.launches
               if launch is not None and launch.in_place]
    # every parameter's update (and its states') is stored over the parameter by its kernel
    assert len(updates) >= len(params)
    assert not [f for g in seen if getattr(g, "plan", None) is not None
                for f in g.graph.nodes if f.op == "aten"]  # no multi-tensor op left to ATen


def test_adamw_foreach_step_launches_fewer_kernels_than_eager():
    model, opt = _model_and_optimizer("adamw", True)
    opt.step()  # the states exist: the step compiled is the steady one
    report = mlc.explain(opt.step)
    (graph,) = report.graphs
    launches = len(graph.cost.items)
    # one kernel for every parameter's step count, one per shape of parameter for the updates
    # (fusion merges same-shaped independent work), against eager's 11 calls
    shapes = {p.shape for p in model.parameters()}
    assert launches == 1 + len(shapes) < len(report.eager.items)
    assert graph.cost.bytes < report.eager.bytes
