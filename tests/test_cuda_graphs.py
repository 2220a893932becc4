"""mode="reduce-overhead" on a GPU: the decode step's launch plan replayed from a CUDA graph.

Needs a CUDA device (skipped elsewhere; on CPUs the mode is reported not applied, see
test_modes.py).
"""

import pytest
import torch

from mlc.runtime.cuda_graphs import CUDAGraphPlan
from mlc.testing import decode

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def test_decode_replays_one_cuda_graph_and_matches_eager(monkeypatch, compiled_graphs):
    monkeypatch.setenv("MLC_INTERPRET", "0")
    seen = compiled_graphs
    model = decode.build(layers=2, max_seq=32).cuda()
    eager = decode.build(layers=2, max_seq=32).cuda()
    prompt = torch.randint(0, 256, (1, 3), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    ptr = model.layers[0].k_cache.data_ptr()
    compiled = torch.compile(model, backend="mlc", mode="reduce-overhead")
    with torch.no_grad():
        want = decode.greedy(eager, prompt, 8)
        got = decode.greedy(compiled, prompt, 8)
    assert torch.equal(got, want)
    torch.testing.assert_close(model.layers[1].v_cache, eager.layers[1].v_cache, rtol=1e-3, atol=1e-3)
    assert model.layers[0].k_cache.data_ptr() == ptr
    runners = [g.runner for g in seen if isinstance(getattr(g, "runner", None), CUDAGraphPlan)]
    assert runners and all(len(r.graphs) == 1 and r.failed is None for r in runners)

