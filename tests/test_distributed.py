"""mlc under torch.distributed: DDP (compiled outside and inside) and FSDP2 give eager's parameters.

Two ranks on the gloo backend, on CPU, kernels in Triton's interpreter. The ranks are
processes running ``tests/distributed_ranks.py`` (all scenarios in one pair of processes, so
torch is imported twice, not eight times); each test reads what its scenario reported.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch.distributed as dist

RANKS = os.path.join(os.path.dirname(__file__), "distributed_ranks.py")
SCENARIOS = ["ddp_outside", "ddp_inside", "fsdp2", "collective_in_graph"]
TIMEOUT_S = 300  # a rank that waits on a dead peer gives up after gloo's 60 s; this bounds the rest

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run every scenario on 2 ranks; returns [rank 0's results, rank 1's]."""
    out = tmp_path_factory.mktemp("ranks")
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
               GLOO_SOCKET_IFNAME="lo", MLC_INTERPRET="1", MLC_STRICT="1", MLC_VERIFY="1",
               # both ranks compile into one empty cache at once
               MLC_CACHE_DIR=str(tmp_path_factory.mktemp("cache")))
    procs = [subprocess.Popen([sys.executable, RANKS, str(out), *SCENARIOS], env=dict(env, RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = []
    for r, p in enumerate(procs):
        path = out / f"rank{r}.json"
        assert p.returncode == 0 and path.exists(), f"rank {r} exited with {p.returncode}:\n" + "\n".join(logs)[-6000:]
        results.append(json.loads(path.read_text()))
    return results


def scenario(ranks, name) -> dict:
    for r, results in enumerate(ranks):
        assert "error" not in results[name], f"rank {r}: {results[name]['error']}"
    return ranks[0][name]


def check_training(ranks, name) -> dict:
    """Eager's parameters after the steps (fp32 tolerance), the same on both ranks, and changed."""
    got = scenario(ranks, name)
    for results in ranks:
        assert results[name]["max_diff"] <= 1e-5, results[name]
        assert results[name]["moved"] > 1e-3, results[name]  # the steps did change the parameters
    # each rank trained on its own data: equal parameters mean the gradients were all-reduced
    assert ranks[0][name]["checksum"] == pytest.approx(ranks[1][name]["checksum"], rel=1e-9)
    assert got["mlc_graphs"], "mlc compiled nothing"
    return got


def test_ddp_compiled_outside(ranks):
    got = check_training(ranks, "ddp_outside")
    # DDPOptimizer split the graph at DDP's bucket boundaries (bucket_cap_mb=1, three 1 MB layers)
    # into 3 graphs, each compiled by mlc, forward and backward; all 4 matmuls are in them.
    assert got["dynamo_graphs"] == 3
    assert [g.split("_")[0] for g in got["mlc_graphs"]] == ["forward"] * 3 + ["backward"] * 3
    assert got["matmuls"] == 4


def test_ddp_compiled_inside(ranks):
    got = check_training(ranks, "ddp_inside")
    # DDP's forward is active while the compiled module runs, so DDPOptimizer splits it too.
    assert got["dynamo_graphs"] == 3
    assert got["matmuls"] == 4


def test_fsdp2(ranks):
    got = check_training(ranks, "fsdp2")
    # FSDP2's hooks (all-gather, reduce-scatter) are graph breaks and run eagerly; mlc compiles
    # the blocks (block 0, blocks 1 and 2 sharing one graph) and the root's own layer.
    assert got["dynamo_graphs"] == 3
    assert got["matmuls"] == 3


def test_collective_in_a_compiled_graph(ranks):
    got = scenario(ranks, "collective_in_graph")
    assert got["max_diff"] == 0
    assert "_c10d_functional.all_reduce.default" in got["fallbacks"]
