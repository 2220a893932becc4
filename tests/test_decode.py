"""LLM decode: buffers written in place by mlc's scatter kernel, one compile for every position.

The cache writes (``index_copy_`` into module buffers) lower to ``index_copy``, whose kernel
(``codegen/templates/scatter.py``) writes only the new token's slices; when AOT autograd would
copy the result back into the buffer, the plan lets the kernel write the buffer itself.
"""

import pytest
import torch
from torch.testing import FileCheck

import mlc
from mlc.ir import parse, verify
from mlc.ir.reference import run_reference
from mlc.runtime.plan import KernelLaunch
from mlc.testing import decode


def _scatter_launches(graphs):
    launches = []
    for g in graphs:
        g = getattr(g, "compiled", None) or g  # a FrozenGraph compiles on its first call
        if getattr(g, "plan", None) is not None:
            launches += [x for x in g.plan.launches if x is not None and x.template.starts_from_targets]
    return launches


INDEX_COPY = """graph @k(%cache: f32[2,3,8,4], %pos: i64[1], %k: f32[2,3,1,4]) {
  %0 = mul(%k, %k) : f32[2,3,1,4]
  %1 = index_copy(%cache, %pos, %0) {dim=2} : f32[2,3,8,4]
  return %1
}"""


@pytest.mark.parametrize("position", [0, 5, 7, -1])
def test_index_copy_kernel_writes_the_slices_at_the_position(position):
    body = verify(parse(INDEX_COPY))
    launch = KernelLaunch(body, interpret=True)
    FileCheck().check("tl.where(").check("tl.store(out0_ptr").check_not("tl.load(in0_ptr").run(launch.source.source)
    cache, k = torch.randn(2, 3, 8, 4), torch.randn(2, 3, 1, 4)
    pos = torch.tensor([position])
    (got,) = launch([cache, pos, k], {})
    (want,) = run_reference(body, [cache, pos, k])
    torch.testing.assert_close(got, want)
    assert got.data_ptr() != cache.data_ptr()  # not allowed in place: a copy of the cache, then the slices

    launch.in_place = frozenset({0})
    before = cache.clone()
    (got,) = launch([cache, pos, k], {})
    assert got is cache  # written in place: only the slices at the position changed
    torch.testing.assert_close(cache, want)
    changed = (cache != before).any(dim=(0, 1, 3)).nonzero().flatten().tolist()
    assert changed == [position % 8]


@pytest.mark.parametrize("batch, freeze", [(1, False), (2, True)])
def test_decode_matches_eager_with_one_graph_and_caches_written_in_place(compiled_graphs, batch, freeze):
    model = decode.build(layers=2, max_seq=16, batch=batch)
    eager = decode.build(layers=2, max_seq=16, batch=batch)
    prompt = torch.randint(0, 256, (batch, 3), generator=torch.Generator().manual_seed(batch))
    cache = model.layers[0].k_cache
    ptr = cache.data_ptr()
    compiled = torch.compile(model, backend="mlc", options={"freeze": freeze})
    with torch.no_grad():
        want = decode.greedy(eager, prompt, 6)
        got = decode.greedy(compiled, prompt, 6)
        # the logits of one more step, and the caches both wrote, agree as well
        pos, last = torch.tensor([8]), got[:, -1:].clone(memory_format=torch.contiguous_format)
        torch.testing.assert_close(compiled(last, pos), eager(last, pos), rtol=1e-4, atol=1e-4)
    assert torch.equal(got, want)
    for a, b in zip(model.layers, eager.layers):
        torch.testing.assert_close(a.k_cache, b.k_cache, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.v_cache, b.v_cache, rtol=1e-5, atol=1e-5)
    assert len(compiled_graphs) == 1  # every position ran the one compiled graph
    assert cache.data_ptr() == ptr
    scatters = _scatter_launches(compiled_graphs)  # per layer, K and V in one launch (RoPE fused in)
    assert [(len(s.targets), s.in_place) for s in scatters] == [(2, frozenset({0, 1}))] * 2


def test_decode_step_is_near_its_memory_floor():
    model = decode.build(layers=2, max_seq=64, d_model=128, d_ff=256, vocab=512)
    report = mlc.explain(model, torch.tensor([[3]]), torch.tensor([5]))
    (graph,) = report.graphs
    assert not graph.fallbacks and sum("index_copy" in k.name for k in report.kernels) == 2
    floor = decode.floor_bytes(model)
    assert floor <= graph.cost.bytes <= 1.05 * floor
    assert graph.cost.bytes < report.eager.bytes


def test_a_buffer_read_after_its_write_is_not_written_in_place(compiled_graphs):
    def f(buf, i, v):
        old = buf * 2  # computed before the write, but its kernel may run after it
        buf.index_copy_(0, i, v)
        return old + buf

    buf, v = torch.randn(6, 3), torch.randn(2, 3)
    i = torch.tensor([4, 1])
    eager_buf = buf.clone()
    want = f(eager_buf, i, v)
    got = torch.compile(f, backend="mlc")(buf, i, v)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(buf, eager_buf)


def test_a_buffer_written_from_a_transposed_read_of_itself_is_not_stored_over(compiled_graphs):
    def f(buf):
        buf.copy_((buf * 2 + 1).t())  # each element reads another's old value
        return buf.abs()

    # 512 x 512: several programs in the interpreter, so a kernel storing over its input would
    # let the later ones read elements the earlier ones already wrote.
    buf = torch.arange(512 * 512, dtype=torch.float32).reshape(512, 512) / 1000
    eager_buf = buf.clone()
    want = f(eager_buf)
    torch.testing.assert_close(torch.compile(f, backend="mlc")(buf), want)
    torch.testing.assert_close(buf, eager_buf)
    launches = [x for g in compiled_graphs for x in g.plan.launches if x is not None]
    assert launches and not any(x.in_place for x in launches)


def test_functional_index_put_leaves_its_input_alone(compiled_graphs):
    def f(buf, i, v):
        return torch.index_copy(buf, 1, i, v) + buf

    buf, v, i = torch.randn(2, 5, 3), torch.randn(2, 1, 3), torch.tensor([3])
    before = buf.clone()
    torch.testing.assert_close(torch.compile(f, backend="mlc")(buf, i, v), f(buf, i, v))
    assert torch.equal(buf, before)
    (scatter,) = _scatter_launches(compiled_graphs)
    assert scatter.in_place == frozenset()


def test_decode_layer_under_dynamic_shapes(compiled_graphs):
    layer = decode.DecodeLayer(max_seq=12).eval()
    eager = decode.DecodeLayer(max_seq=12).eval()
    eager.load_state_dict(layer.state_dict())
    compiled = torch.compile(layer, backend="mlc", dynamic=True)
    cos, sin = torch.randn(1, 16), torch.randn(1, 16)
    with torch.no_grad():
        for p in range(4):
            x, pos = torch.randn(1, 1, 64), torch.tensor([p])
            mask = (torch.arange(12) <= p).view(1, 1, 1, -1)
            torch.testing.assert_close(compiled(x, pos, cos, sin, mask), eager(x, pos, cos, sin, mask),
                                       rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.k_cache, eager.k_cache, rtol=1e-5, atol=1e-5)
    assert len(compiled_graphs) == 1


def test_accumulating_index_put_stays_an_aten_call():
    def f(buf, i, v):
        return torch.index_put(buf, (i,), v, accumulate=True)

    buf, v, i = torch.randn(5, 3), torch.randn(4, 3), torch.tensor([0, 2, 2, 4])
    with pytest.warns(UserWarning, match="aten.index_put"):
        got = torch.compile(f, backend="mlc")(buf, i, v)
    torch.testing.assert_close(got, f(buf, i, v))


def test_decode_over_a_long_cache_splits_the_attention_over_key_ranges(compiled_graphs):
    # 4 (batch, head) programs over 512 cached keys: flash-decoding's 4 ranges of 128 keys each.
    model = decode.build(layers=2, max_seq=512)
    eager = decode.build(layers=2, max_seq=512)
    prompt = torch.randint(0, 256, (1, 3), generator=torch.Generator().manual_seed(3))
    compiled = torch.compile(model, backend="mlc")
    with torch.no_grad():
        want = decode.greedy(eager, prompt, 4)
        got = decode.greedy(compiled, prompt, 4)
    assert torch.equal(got, want)
    (g,) = compiled_graphs
    graph = (getattr(g, "compiled", None) or g).graph
    splits = [n for k in graph.nodes if k.op == "kernel" for n in k.attrs["body"].nodes if n.op == "attention_split"]
    assert [(n.attrs["splits"], n.attrs["chunk"]) for n in splits] == [(4, 128)] * 2
    assert not any(n.op == "attention" for k in graph.nodes if k.op == "kernel" for n in k.attrs["body"].nodes)
