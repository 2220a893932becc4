"""One rank of ``tests/test_distributed.py``: trains a tiny MLP a few SGD steps under eager
DDP/FSDP2 and under the same wrapper compiled with mlc, and writes what it saw as JSON.

Run as ``python tests/distributed_ranks.py OUT_DIR SCENARIO...`` with ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` set (the test starts one process per rank). Each scenario
is caught on its own, so one that fails still lets the others report.
"""

import datetime
import json
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from mlc.backend import mlc_backend

STEPS = 2
# DDPOptimizer's buckets hold at least 1 MB (DDP's first bucket is 1 MB, and no bucket may be smaller):
# each 512 x 512 layer fills one, so the graph is split between them.
BUCKET_CAP_MB = 1
OPTIONS = {"interpret": True}


class Block(torch.nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.fc = torch.nn.Linear(n_in, n_out)

    def forward(self, x):
        return torch.nn.functional.gelu(self.fc(x))


class MLP(torch.nn.Module):
    """Modules of the user's own, as real models are: Dynamo compiles their frames. Under
    ``torch.compile(DDP(m))`` it gives up on DDP's forward (a graph break in its ``_pre_forward``)
    and compiles ``m.forward`` below it; under FSDP2 each sharded module's hooks are a graph
    break, and each ``Block.forward`` is compiled on its own. (A module of torch.nn's own, an
    ``nn.Sequential`` or an ``nn.Linear``, called from a frame Dynamo gave up on runs eagerly.)"""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(8, 512), Block(512, 512), Block(512, 512)])
        self.out = torch.nn.Linear(512, 4)

    def forward(self, x):
        # Not a loop: under FSDP2 each block's call is a graph break, and Dynamo gives up on a
        # whole frame with a graph break in a loop, so the root's own layer (out) would run eagerly.
        x = self.blocks[2](self.blocks[1](self.blocks[0](x)))
        return self.out(x)


def make_model():
    torch.manual_seed(0)  # the same initial parameters on every rank and in every run
    return MLP()


def train(model, steps=STEPS):
    """SGD on this rank's own data; returns the parameters afterwards, whole (FSDP2's gathered)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(100 + dist.get_rank())
    for _ in range(steps):
        x = torch.randn(6, 8, generator=gen)
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return [p.full_tensor() if hasattr(p, "full_tensor") else p.detach().clone() for p in model.parameters()]


def compare(eager: list, compiled: list) -> dict:
    """How far the compiled run's parameters are from eager's, and from where both started."""
    initial = list(make_model().parameters())
    return {"max_diff": max((a - b).abs().max().item() for a, b in zip(eager, compiled)),
            "moved": max((a - b).abs().max().item() for a, b in zip(initial, compiled)),
            # equal on every rank when the gradients were all-reduced
            "checksum": sum(p.double().abs().sum().item() for p in compiled)}


class Recorder:
    """backend="mlc" (``mlc_backend``, with ``OPTIONS``), counting the graphs Dynamo hands it (one
    per DDPOptimizer split) and those mlc compiles."""

    def __init__(self):
        self.dynamo_graphs, self.compiled = 0, []

    def __call__(self, gm, example_inputs):
        self.dynamo_graphs += 1
        return mlc_backend(gm, example_inputs, options=OPTIONS, _on_compile=lambda g, c: self.compiled.append(c))

    def summary(self) -> dict:
        forward = [c for c in self.compiled if c.graph.name.startswith("forward")]
        return {"dynamo_graphs": self.dynamo_graphs, "mlc_graphs": [c.graph.name for c in self.compiled],
                "matmuls": sum(str(c.graph).count(" = mm(") for c in forward)}  # in kernels or not


def ddp_outside():
    """torch.compile(DDP(model)): Dynamo's DDPOptimizer splits the graph at bucket boundaries."""
    eager = train(DDP(make_model(), bucket_cap_mb=BUCKET_CAP_MB))
    torch._dynamo.reset()
    backend = Recorder()
    compiled = train(torch.compile(DDP(make_model(), bucket_cap_mb=BUCKET_CAP_MB), backend=backend))
    return {**compare(eager, compiled), **backend.summary()}


def ddp_inside():
    """DDP(torch.compile(model)): one graph, DDP's hooks all-reduce the gradients it computes."""
    eager = train(DDP(make_model(), bucket_cap_mb=BUCKET_CAP_MB))
    torch._dynamo.reset()
    backend = Recorder()
    compiled = train(DDP(torch.compile(make_model(), backend=backend), bucket_cap_mb=BUCKET_CAP_MB))
    return {**compare(eager, compiled), **backend.summary()}


def fsdp2():
    """fully_shard on each block and on the root, then torch.compile of the root."""
    from torch.distributed.fsdp import fully_shard

    def sharded():
        model = make_model()
        for block in model.blocks:
            fully_shard(block)
        return fully_shard(model)

    eager = train(sharded())
    torch._dynamo.reset()
    backend = Recorder()
    compiled = train(torch.compile(sharded(), backend=backend))
    return {**compare(eager, compiled), **backend.summary()}


def collective_in_graph():
    """A collective inside the compiled function: Dynamo traces a functional all_reduce, which mlc
    runs as an ATen fallback."""

    def f(x):
        y = x * 2
        dist.all_reduce(y)
        return torch.relu(y) + 1

    x = torch.arange(6.0).reshape(2, 3) * (dist.get_rank() + 1) - 3
    torch._dynamo.reset()
    backend = Recorder()
    out = torch.compile(f, backend=backend)(x.clone())
    fallbacks = sorted({str(n.attrs["target"]) for c in backend.compiled for n in c.graph.nodes if n.op == "aten"})
    return {"max_diff": (out - f(x.clone())).abs().max().item(), "fallbacks": fallbacks, **backend.summary()}


SCENARIOS = {"ddp_outside": ddp_outside, "ddp_inside": ddp_inside, "fsdp2": fsdp2,
             "collective_in_graph": collective_in_graph}


def main(out_dir: str, names: list[str]):
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # a dead peer: an error, not a hang
    rank = dist.get_rank()
    results = {}
    for name in names:
        start = time.perf_counter()
        try:
            results[name] = SCENARIOS[name]()
        except Exception:  # noqa: BLE001 - reported to the test, which fails with it
            results[name] = {"error": traceback.format_exc()}
        results[name]["seconds"] = time.perf_counter() - start
        dist.barrier()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
