"""mlc.explain: the report's figures for a small model, its text and HTML forms, the cost
model's roofs, and the CPU fallback warning."""

import html.parser
import math
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import mlc
from mlc.cost import GPUS, Cost, bound, launch_time
from mlc.explain import pass_counts
from mlc.passes import PIPELINE


def block(x, w, b):
    h = F.layer_norm(x, x.shape[-1:], w, b)
    return torch.softmax(h @ h.transpose(-1, -2), dim=-1)


def test_report_has_kernels_costs_passes_and_eager_figures():
    x, w, b = torch.randn(2, 8, 16), torch.randn(16), torch.randn(16)
    report = mlc.explain(block, x, w, b)
    names = [k.name for k in report.kernels]
    assert names == ["fused_var_mean_add_rsqrt_sub_mul", "fused_amax_sub_exp_sum_div"]
    assert all("@triton.jit" in k.source and k.bytes > 0 for k in report.kernels)
    # layer_norm kernel, bmm, softmax kernel
    assert report.launches == 3
    assert report.eager.launches == 3  # native_layer_norm, bmm, _softmax
    # Read x (1 KiB) + w + b, write h; the bmm; softmax reads and writes [2,8,8].
    assert report.bytes == (2 * 8 * 16 * 4 * 2 + 2 * 16 * 4) + (2 * 2 * 8 * 16 * 4 + 2 * 8 * 8 * 4) + 2 * 2 * 8 * 8 * 4
    assert report.flops > 0 and report.eager.flops > 0
    assert [p.name for p in report.passes] == ["import"] + [p.__name__ for p in PIPELINE]
    assert "kernel @fused_amax_sub_exp_sum_div" in report.passes[-1].ir
    text = str(report)
    assert "mlc" in text and "eager" in text and "fused_amax_sub_exp_sum_div" in text


def test_cpu_without_interpret_warns_once_and_runs_the_reference_executor():
    code = """
import os, warnings, torch, mlc
os.environ.pop("MLC_INTERPRET", None)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    f = torch.compile(lambda x: torch.exp(x) + 1, backend="mlc")
    x = torch.randn(8)
    torch.testing.assert_close(f(x), torch.exp(x) + 1)
    g = torch.compile(lambda x: torch.sin(x) * 2, backend="mlc")
    torch.testing.assert_close(g(x), torch.sin(x) * 2)
print(sum("reference executor" in str(m.message) for m in w))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLC_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "1"


def test_op_without_triton_code_warns_by_name_and_stays_correct(recwarn):
    f = torch.compile(lambda x, y: torch.atan2(torch.exp(x), y) * 2, backend="mlc")
    x, y = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(f(x, y), torch.atan2(torch.exp(x), y) * 2)
    assert any("'atan2' has no Triton code" in str(w.message) for w in recwarn)


def moe_router(x, w):
    """A top-1 mixture-of-experts router: the chosen expert's weight, renormalized over the
    one chosen (a sum over a size-1 dim)."""
    probs = torch.softmax(x @ w, dim=-1)
    top, expert = torch.topk(probs, 1, dim=-1)
    return top / top.sum(dim=-1, keepdim=True), expert


@pytest.mark.parametrize("options", [{}, {"fuel": 0}], ids=["default", "out_of_fuel"])
def test_no_warning_says_an_op_with_triton_code_has_none(options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = mlc.explain(moe_router, torch.randn(8, 16), torch.randn(16, 4), **options)
    messages = [str(m.message) for m in caught]
    assert not any("has no Triton code" in m for m in messages), messages
    assert report.accuracy.max_abs == 0
    notes = "\n".join(report.graphs[0].notes)
    if options:  # no decision allowed: nothing fused, every op outside a kernel, and the notes say why
        assert not report.kernels and "not a kernel: sum: out of fuel" in notes
    else:  # the sum over one expert is a copy, fused with the division that reads it
        assert [k.ops for k in report.kernels][-1] == ["copy", "div"]
        assert "size-1" not in notes


# --- the full report: kernels with grids, configs and roofs; the HTML page ------------------


def softmax_mm_cumsum(x, w):
    h = torch.softmax(x, dim=-1)
    return (h @ w).sum(1), torch.cumsum(h, 0)  # a row sum: not a matmul epilogue (a column sum is)


@pytest.fixture(scope="module")
def report():
    return mlc.explain(softmax_mm_cumsum, torch.randn(32, 64), torch.randn(64, 64))


def test_each_kernel_has_its_ops_grid_config_and_modeled_cost(report):
    softmax, total = report.kernels
    assert (softmax.name, softmax.kind, softmax.ops) == ("fused_amax_sub_exp_sum_div", "reduction",
                                                         ["amax", "sub", "exp", "sum", "div"])
    assert (total.name, total.ops) == ("fused_sum", ["sum"])
    # The interpreter ran them: its configs, and the grid that covers the 32 rows.
    assert softmax.target == "interpreter" and "num_warps" not in softmax.config
    assert softmax.grid == (math.ceil(32 / softmax.config["XBLOCK"]),)
    assert total.grid == (math.ceil(32 / total.config["XBLOCK"]),)
    for k in report.kernels:
        h100 = GPUS["H100"]
        assert k.time("H100") == max(k.bytes / h100.bandwidth, k.flops / h100.flops) + h100.launch
        assert k.bound("A100") == "memory"  # a softmax and a sum move far more bytes than they compute
        assert k.tuning is None or isinstance(k.tuning, str)


def test_launches_pair_cost_items_with_kernels_and_record_fusion_decisions(report):
    g, = report.graphs
    launches = report.launches_of(g)
    assert [x.name for x in launches] == ["fused_amax_sub_exp_sum_div", "mm", "fused_sum", "aten.cumsum.default"]
    assert [x.kernel is not None for x in launches] == [True, False, True, False]
    assert sum(x.bytes for x in launches) == report.bytes
    assert report.fusions(g) == ["fused_amax_sub_exp_sum_div: amax + sub + exp + sum + div", "fused_sum: sum"]
    assert "not fused: mm -> sum: a matmul and a reduction in one kernel (a reduction over other dims than a " \
           "column of the matmul's result)" in g.notes
    assert report.fallbacks == ["aten.cumsum.default"]
    # The node and kernel counts after each pass: fuse turns 7 ops into 2 kernels, mm and cumsum.
    assert pass_counts(g.passes[-1]) == (4, 2)


def test_text_report_lists_passes_launches_notes_and_fallbacks(report):
    text = str(report)
    assert text.startswith("mlc: 1 graph(s), 2 generated kernel(s), 1 fallback op(s)")
    lines = text.splitlines()
    row = next(ln for ln in lines if ln.strip().startswith("fused_amax_sub_exp_sum_div "))
    k = report.kernels[0]
    assert f"XBLOCK={k.config['XBLOCK']}" in row and row.split()[1] == str(k.grid[0]) and "memory" in row
    assert any(ln.split()[:1] == ["fuse"] and ln.split()[-2:] == ["4", "2"] for ln in lines)
    assert "  fused: fused_sum: sum" in lines
    assert "  runs through ATen: aten.cumsum.default" in lines
    # The launch table shows the GPU asked for; the summary shows them all.
    assert "A100 us" in report.text("A100").split("\ngraph ")[1] and "A100 us" not in text.split("\ngraph ")[1]


def test_cost_roofs_and_modeled_time():
    # A 4096^3 fp16 matmul is compute-bound on both GPUs; an elementwise add of 16M floats is memory-bound.
    mm_bytes, mm_flops = 3 * 4096 * 4096 * 2, 2 * 4096 ** 3
    assert bound(mm_bytes, mm_flops, "H100") == bound(mm_bytes, mm_flops, "A100") == "compute"
    assert bound(3 * 4 * 2 ** 24, 2 ** 24, "H100") == "memory"
    assert launch_time(mm_bytes, mm_flops, "A100") == pytest.approx(mm_flops / 312e12 + 4e-6)
    cost = Cost()
    cost.add("a", mm_bytes, mm_flops)
    cost.add("b", 1000, 0)
    assert cost.time("H100") == launch_time(mm_bytes, mm_flops) + launch_time(1000, 0)
    with pytest.raises(ValueError, match="unknown GPU 'V100'; known GPUs: H100, A100"):
        bound(1, 1, "V100")


class _Page(html.parser.HTMLParser):
    """Tags with attributes, the text inside each <pre>, the text of each SVG node group."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.pres: list[str] = []
        self.groups: list[tuple[str, list[str]]] = []  # (class, texts)
        self.text: list[str] = []
        self._pre = self._group = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "pre":
            self._pre = []
        if tag == "g" and "node" in attrs.get("class", ""):
            self._group = (attrs["class"], [])

    def handle_endtag(self, tag):
        if tag == "pre":
            self.pres.append("".join(self._pre))
            self._pre = None
        if tag == "g" and self._group is not None:
            self.groups.append(self._group)
            self._group = None

    def handle_data(self, data):
        self.text.append(data)
        if self._pre is not None:
            self._pre.append(data)
        if self._group is not None and self.get_starttag_text().startswith("<text"):
            self._group[1].append(data)


def test_html_page_is_self_contained_and_shows_graph_passes_and_kernels(report, tmp_path):
    g, = report.graphs
    g.notes.append("not fused: <script>alert(1)</script> & co")  # text from a report is escaped
    try:
        report.save_html(tmp_path / "report.html")
    finally:
        g.notes.pop()
    page = _Page()
    page.feed((tmp_path / "report.html").read_text())
    tags = [t for t, _ in page.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags
    assert all(a.get("href", "#").startswith("#") and "src" not in a for _, a in page.tags)
    assert tags.count("svg") == 1
    text = "".join(page.text)
    assert "not fused: <script>alert(1)</script> & co" in text
    # Summary, passes (each with its IR folded), kernels with their Triton sources.
    assert "eager / mlc" in text and "H100 us (modeled)" in text
    assert tags.count("details") >= len(g.passes) + len(report.kernels)
    assert all(p.ir in page.pres for p in g.passes)
    for k in report.kernels:
        assert k.source in page.pres and k.ir in page.pres
    # The drawing: each kernel a region holding the ops it fused, and linking to its source.
    kernels = [texts for cls, texts in page.groups if cls == "node kernel"]
    assert kernels == [[k.name, f"#{i}", *k.ops] for i, k in enumerate(report.kernels)]
    assert [cls for cls, _ in page.groups].count("node fallback") == 1
    assert [cls for cls, _ in page.groups].count("node matmul") == 1
    ids = {a["id"] for _, a in page.tags if "id" in a}
    assert {a["href"][1:] for t, a in page.tags if t == "a"} <= ids
    assert "cache: not recorded" in text or f"cache: {getattr(g, 'cache', None)}" in text


def test_without_the_interpreter_kernels_show_the_config_and_grid_a_gpu_would_launch(recwarn):
    report = mlc.explain(lambda x: torch.exp(x) + 1, torch.randn(3000), interpret=False)
    k, = report.kernels
    assert (k.name, k.target, k.config, k.grid) == ("fused_exp_add", "GPU", {"BLOCK_SIZE": 1024, "num_warps": 4},
                                                    (3,))
    assert "BLOCK_SIZE=1024 num_warps=4" in str(report)


# --- fallbacks named by what runs them ---------------------------------------------------------

@torch.library.custom_op("mylib::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@twice.register_fake
def _(x):
    return torch.empty_like(x)


def three_fallbacks(x):
    return torch.sinh(torch.cumsum(twice(x.exp()), 0)) + 1  # a custom op, an ATen op, an op without Triton code


def test_fallbacks_are_named_as_aten_ops_custom_ops_and_python_level(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = mlc.explain(three_fallbacks, torch.randn(4, 3))
    messages = [str(m.message) for m in caught]
    for expected in ["mlc: mylib.twice.default is a custom op (mylib::twice, torch.library); PyTorch runs it, "
                     "outside any kernel (fallback: no lowering)",
                     "mlc: aten.cumsum.default runs through ATen (fallback: no lowering)",
                     "mlc: 'sinh' has no Triton code; mlc's torch reference runs it outside any kernel (a Python-level "
                     "fallback)"]:
        assert expected in messages, messages
    assert not any("mylib.twice.default runs through ATen" in m for m in messages)
    assert report.accuracy.max_rel <= 1e-5  # fp32, values up to ~100
    lines = str(report).splitlines()
    assert "  runs through ATen: aten.cumsum.default" in lines
    assert "  custom ops (torch.library), run by PyTorch: mylib.twice.default" in lines
    assert "  Python-level fallbacks (no Triton code; mlc's torch reference runs them): sinh" in lines
    report.save_html(tmp_path / "report.html")
    page = _Page()
    page.feed((tmp_path / "report.html").read_text())
    text = "".join(page.text)
    assert "runs through ATen: aten.cumsum.default" in text
    assert "custom ops (torch.library), run by PyTorch: mylib.twice.default" in text
    assert "Python-level fallbacks (no Triton code; mlc's torch reference runs them): sinh" in text
