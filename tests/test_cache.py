"""The persistent cache (``mlc.cache``): whole graphs hit and miss with a reason, corrupted
entries are ignored and rewritten, and two processes compiling at once lose nothing."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import mlc
from mlc import cache
from mlc.backend import mlc_backend
from mlc.codegen.compile import write_module
from mlc.codegen.templates import generate
from mlc.ir import parse


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 24)
        self.norm = torch.nn.LayerNorm(24)

    def forward(self, x):
        return self.norm(torch.nn.functional.gelu(self.fc(x))) * 2


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLC_CACHE_DIR", str(tmp_path))
    return tmp_path


def compile_once(model, x, **options):
    """Compile and run ``model`` (inference), checked against eager; returns the CompiledGraph."""
    seen = []
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend=lambda gm, ex: mlc_backend(
            gm, ex, options={"interpret": True, **options}, _on_compile=lambda g, c: seen.append(c)))
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))
    finally:
        torch._dynamo.reset()
    (cg,) = seen
    return cg


def test_hit_and_miss_reasons(fresh_cache, monkeypatch):
    model, x = Block().eval(), torch.randn(5, 16)
    first = compile_once(model, x)
    assert first.cache == "miss: no entry"
    second = compile_once(model, x)
    assert second.cache == "hit"
    assert str(second.graph).replace(second.graph.name, "g") == str(first.graph).replace(first.graph.name, "g")
    assert [ln.source.source for ln in second.plan.launches] == [ln.source.source for ln in first.plan.launches]
    assert compile_once(model, x, fold_limit=0).cache == "miss: options changed (fold_limit: 2.0 -> 0)"
    assert compile_once(model, x, cache=False).cache == "miss: disabled (cache=False)"
    # A changed weight is another graph (frozen constants are part of the key).
    with torch.no_grad():
        model.fc.weight.mul_(0.5)
    assert compile_once(model, x).cache == "miss: no entry"
    # Options that do not change the compiled graph share its entry.
    assert compile_once(model, x, verify=False, autotune="off").cache == "hit"
    changed = dict(cache.versions(), torch="0.0-old")
    monkeypatch.setattr(cache, "versions", lambda: changed)
    assert compile_once(model, x).cache == f"miss: torch version changed ({torch.__version__} -> 0.0-old)"


def test_training_graphs_are_cached_too(fresh_cache):
    model, x = Block(), torch.randn(5, 16, requires_grad=True)
    for expected in ("miss: no entry", "hit"):
        seen = []
        torch._dynamo.reset()
        compiled = torch.compile(model, backend=lambda gm, ex: mlc_backend(
            gm, ex, options={"interpret": True}, _on_compile=lambda g, c: seen.append(c)))
        out = compiled(x)
        out.sum().backward()
        grad = x.grad.clone()
        x.grad = None
        model(x).sum().backward()
        torch.testing.assert_close(grad, x.grad)
        x.grad = None
        torch._dynamo.reset()
        assert [c.cache for c in seen] == [expected, expected]  # forward and backward


def test_corrupted_graph_entry_is_ignored_and_rewritten(fresh_cache):
    model, x = Block().eval(), torch.randn(5, 16)
    compile_once(model, x)
    (entry,) = (fresh_cache / "graphs").rglob("*.pt")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        cg = compile_once(model, x)
    assert cg.cache.startswith("miss: entry corrupted")
    assert compile_once(model, x).cache == "hit"


def test_corrupted_kernel_module_is_rewritten(fresh_cache):
    g = parse("""
    graph @f(%x: f32[8]) {
      %0 = kernel @k(%x) : f32[8] {
        %1 = exp(%x) : f32[8]
        yield %1
      }
      return %0
    }
    """)
    ks = generate(g.nodes[0].attrs["body"])
    path = write_module(ks)
    with open(path, "w") as f:
        f.write("import triton\n@triton.ji")
    with pytest.warns(UserWarning, match="does not hold its source"):
        assert write_module(ks) == path
    with open(path) as f:
        assert f.read() == ks.source


def test_unreadable_json_entry_is_a_miss(fresh_cache):
    cache.store_json("tuning", "ab" * 16, {"x": 1})
    assert cache.load_json("tuning", "ab" * 16) == ({"x": 1}, "")
    path = cache.entry_path("tuning", "ab" * 16, "json")
    with open(path, "wb") as f:
        f.write(b"\xff\x00garbage")
    with pytest.warns(UserWarning, match="it will be rewritten"):
        value, why = cache.load_json("tuning", "ab" * 16)
    assert value is None and why.startswith("entry corrupted")
    assert cache.load_json("tuning", "cd" * 16) == (None, "no entry")


def test_explain_reports_the_cache(fresh_cache):
    model, x = Block().eval(), torch.randn(5, 16)
    first = mlc.explain(model, x, interpret=True)
    second = mlc.explain(model, x, interpret=True)
    assert [g.cache for g in first.graphs] == ["miss: no entry"]
    assert [g.cache for g in second.graphs] == ["hit"]
    assert "cache: hit" in str(second)


SCRIPT = textwrap.dedent("""
    import sys, torch, warnings
    from mlc.backend import mlc_backend
    warnings.simplefilter("ignore")
    sizes = [int(s) for s in sys.argv[1:]]
    seen = []
    for d in sizes:
        torch.manual_seed(d)
        model = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.ReLU(), torch.nn.LayerNorm(8)).eval()
        x = torch.randn(3, d)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend=lambda gm, ex: mlc_backend(
            gm, ex, options={"interpret": True}, _on_compile=lambda g, c: seen.append(c.cache)))
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))
    print(" ".join(s.split(":")[0] for s in seen))
""")


def test_two_processes_compiling_at_once_lose_nothing(fresh_cache):
    env = {**os.environ, "MLC_CACHE_DIR": str(fresh_cache), "MLC_INTERPRET": "1"}

    def start(*sizes):
        return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, sizes)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    # Both write the graph for 4 features at once, and one other graph each.
    procs = [start(4, 5), start(4, 6)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    leftovers = [f for f in fresh_cache.rglob("*") if f.name.startswith(".tmp-")]
    assert leftovers == []
    p = start(4, 5, 6)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert out.split() == ["hit", "hit", "hit"]
