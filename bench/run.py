"""mlc against eager PyTorch: kernels, launches and modeled bytes through global memory.

    python bench/run.py            # targets and the model zoo at bench sizes
    python bench/run.py --quick    # small sizes, a minute or two

Nothing here is timed: no machine of ours has a GPU. Costs are modeled (mlc/cost.py) from
the compiled IR, and eager is counted the same way, one launch per non-view ATen op. Writes
bench/results.md and bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import mlc  # noqa: E402
from mlc.testing.models import MODELS, rotate_half  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
# ATen matmul-like work: the same in mlc (ATen) and eager until matmul kernels land.
MATMUL_NAMES = ("mm", "bmm", "addmm", "baddbmm", "linear", "matmul", "scaled_dot_product", "convolution")


# --- targets: each must be exactly one mlc kernel ----------------------------------------------

def softmax(x):
    return torch.softmax(x, dim=-1)


def log_softmax(x):
    return torch.log_softmax(x, dim=-1)


def layer_norm(x, w, b):
    return F.layer_norm(x, x.shape[-1:], w, b)


def rms_norm(x, w):
    return F.rms_norm(x, x.shape[-1:], w, eps=1e-6)


def rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def pointwise_chain(x, y):
    return torch.tanh(F.gelu(x * 2 + y) - torch.sigmoid(y)) * 0.5


class GPT2MLP(torch.nn.Module):
    """x + (gelu(x @ W1 + b1)) @ W2 + b2: the target is exactly 2 kernels."""

    def __init__(self, d):
        super().__init__()
        self.fc, self.proj = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.proj(F.gelu(self.fc(x), approximate="tanh"))


class LlamaMLP(torch.nn.Module):
    """x + w2(silu(w1 n) * w3 n) with n = rmsnorm(x): the target is at most 2 kernels after the norm."""

    def __init__(self, d, d_ff):
        super().__init__()
        self.norm = torch.nn.RMSNorm(d, eps=1e-6)
        self.w1, self.w3 = torch.nn.Linear(d, d_ff, bias=False), torch.nn.Linear(d, d_ff, bias=False)
        self.w2 = torch.nn.Linear(d_ff, d, bias=False)

    def forward(self, x):
        n = self.norm(x)
        return x + self.w2(F.silu(self.w1(n)) * self.w3(n))


def target_cases(quick: bool):
    rows, d = (64, 256) if quick else (4096, 768)
    x = torch.randn(rows, d)
    q = torch.randn(2 if quick else 8, 4 if quick else 12, 32 if quick else 512, 64)
    return {
        "softmax": (softmax, (x,)),
        "log_softmax": (log_softmax, (x,)),
        "layer_norm": (layer_norm, (x, torch.randn(d), torch.randn(d))),
        "rms_norm": (rms_norm, (x, torch.randn(d))),
        "rope": (rope, (q, torch.randn(q.shape[-2], 64), torch.randn(q.shape[-2], 64))),
        "pointwise_chain": (pointwise_chain, (x, torch.randn(d))),
    }


# Matmul targets: (model, inputs, expected kernels)
def mlp_cases(quick: bool):
    d, rows = (64, 32) if quick else (768, 4096)
    dtype = torch.float32 if quick else torch.float16
    x = torch.randn(rows // 8, 8, d, dtype=dtype)
    return {
        "gpt2_mlp": (GPT2MLP(d).to(dtype).eval(), (x,), 2),
        "llama_mlp (norm + 2)": (LlamaMLP(d, 8 * d // 3 // 8 * 8).to(dtype).eval(), (x,), 3),
    }


def model_cases(quick: bool):
    if quick:
        sizes = dict(batch=2, seq=16, d_model=64)
        return {name: spec.build(dtype=torch.float32, **sizes) for name, spec in MODELS.items()}
    big = dict(batch=8, seq=512, d_model=768, dtype=torch.float16)
    return {
        "gpt2_block d768 s512 b8 fp16": MODELS["gpt2_block"].build(n_heads=12, **big),
        "llama_block d768 s512 b8 fp16": MODELS["llama_block"].build(n_heads=12, n_kv_heads=4, d_ff=2048,
                                                                     max_seq=512, **big),
        "mlp": MODELS["mlp"].build(batch=512, d_in=1024),
        "conv_block": MODELS["conv_block"].build(batch=16, hw=32),
        "embedding_classifier": MODELS["embedding_classifier"].build(batch=64, seq=128, vocab=1000),
    }


def _non_matmul(items) -> int:
    return sum(b for name, b, _ in items if not any(m in name for m in MATMUL_NAMES))


def measure(name: str, fn, inputs) -> dict:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks are listed in the row instead
        report = mlc.explain(fn, *inputs)
    mlc_items = [i for g in report.graphs for i in g.cost.items]
    return {
        "name": name,
        "kernels": len(report.kernels),
        "launches": report.launches,
        "eager_launches": report.eager.launches,
        "mb": report.bytes / 1e6,
        "eager_mb": report.eager.bytes / 1e6,
        "non_matmul_mb": _non_matmul(mlc_items) / 1e6,
        "eager_non_matmul_mb": _non_matmul(report.eager.items) / 1e6,
        "h100_us": sum(g.cost.time("H100") for g in report.graphs) * 1e6,
        "eager_h100_us": report.eager.time("H100") * 1e6,
        "fallbacks": sorted(set(report.fallbacks)),
        "kernel_names": [k.name for k in report.kernels],
        "seconds": time.perf_counter() - start,
    }


def table(rows) -> str:
    head = ("| case | mlc kernels | launches mlc / eager | MB mlc / eager | non-matmul MB mlc / eager (ratio) "
            "| H100 us mlc / eager | runs through ATen |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        ratio = r["non_matmul_mb"] / r["eager_non_matmul_mb"] if r["eager_non_matmul_mb"] else math.nan
        lines.append(f"| {r['name']} | {r['kernels']} | {r['launches']} / {r['eager_launches']} "
                     f"| {r['mb']:.2f} / {r['eager_mb']:.2f} | {r['non_matmul_mb']:.2f} / "
                     f"{r['eager_non_matmul_mb']:.2f} ({ratio:.2f}) | {r['h100_us']:.1f} / {r['eager_h100_us']:.1f} "
                     f"| {', '.join(f.split('.')[1] for f in r['fallbacks']) or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--out", default=str(HERE), help="directory for results.md and results.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    targets = [measure(n, f, x) for n, (f, x) in target_cases(args.quick).items()]
    mlps = [(measure(n, m, x), want) for n, (m, x, want) in mlp_cases(args.quick).items()]
    models = []
    for name, (model, inputs) in model_cases(args.quick).items():
        models.append(measure(name, model.eval(), inputs))
    text = ("## Targets: each one kernel\n\n" + table(targets)
            + "\n\n## Matmul targets: GPT-2 MLP 2 kernels, LLaMA MLP 2 after its norm; bytes <= 0.6 of eager\n\n"
            + table([r for r, _ in mlps]) + "\n\n## Models (inference)\n\n" + table(models)
            + "\n\nMB are modeled bytes through global memory per call; non-matmul excludes matmuls, attention "
              "and convolutions (ATen calls, the same for both). H100 us: each launch bound by bytes or FLOPs, "
              "plus 4 us launch overhead.\n")
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (out / f"results{suffix}.md").write_text(text)
    (out / f"results{suffix}.json").write_text(
        json.dumps({"targets": targets, "matmul_targets": [r for r, _ in mlps], "models": models}, indent=1))
    bad = [t["name"] for t in targets if t["kernels"] != 1 or t["launches"] != 1]
    # The bytes target is for bench sizes: at --quick sizes the weights dominate both sides.
    bad += [r["name"] for r, want in mlps if r["launches"] != want or (not args.quick and r["mb"] > 0.6 * r["eager_mb"])]
    if bad:
        print(f"targets missed: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
