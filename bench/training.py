"""Training rows: one forward+backward step of the zoo, eager against Inductor (CPU) and mlc.

    python bench/training.py                       # the zoo at its quick sizes, fp32
    python bench/training.py --models mlp,llama_block --precision bf16
    python bench/training.py --models bert_layer,llama_block --seq 256 --out /tmp/t.md   # longer sequences

Per model and backend: the activations saved for the backward (bytes of the distinct storages
of the tensors autograd saves, parameters excluded, counted with
``torch.autograd.graph.saved_tensors_hooks``: the same counting for all three), and launches and bytes of the whole step. eager and mlc are
modeled by ``mlc.cost`` (eager: one launch per non-view ATen op, forward and backward; mlc:
its compiled forward and backward graphs); Inductor is counted while its CPU code runs, as in
bench/run.py (C++ kernels + ATen calls). Gradients are checked against eager. Writes
bench/training.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import sys
import warnings

import torch

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
import mlc  # noqa: E402
from mlc.cost import EagerCounter, graph_cost  # noqa: E402
from mlc.ir.reference import bind_symbols  # noqa: E402
from cases import CASES, build_case  # noqa: E402
from mlc.testing.models import MODELS  # noqa: E402
from worker import InductorCounter  # noqa: E402

ZOO = ["mlp", "gpt2_block", "llama_block", "bert_layer", "vit_block", "resnet_block", "conv_block"]


def _loss(out) -> torch.Tensor:
    return out.float().square().mean()


def step(fn, inputs, params) -> tuple[int, list]:
    """Saved activation bytes of one forward, then the backward; returns them and the grads.

    The bytes are those of the distinct storages the saved tensors keep alive: several views
    of one buffer (q, k and v split from one projection; a tensor and its transpose) hold it
    once, and a view of a larger buffer holds all of it."""
    params_storage = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params_storage:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    for p in params:
        p.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(*inputs)
    loss.backward()
    return sum(saved.values()), [p.grad.clone() if p.grad is not None else None for p in params]


def measure(name: str, precision: str, seq: int | None = None) -> dict:
    """One row; ``seq`` replaces the quick size's sequence length (and cache length) where it has one."""
    row = {"model": name}
    if seq is None:
        model, inputs = build_case(name, "quick")
    else:
        sizes = dict(CASES[name].sizes["quick"])
        dtype = sizes.pop("dtype")
        sizes.update({k: seq for k in ("seq", "max_seq") if k in sizes})
        model, inputs = MODELS[name].build(dtype=dtype, **sizes)
    model.train()
    params = list(model.parameters())

    def train(*xs):  # the loss is part of the step, so each backend runs (and counts) it and its backward
        return _loss(model(*xs))

    with EagerCounter() as counter:
        saved, want = step(train, inputs, params)
    row["eager"] = {"saved": saved, "launches": counter.cost.launches, "bytes": counter.cost.bytes}

    torch._dynamo.reset()
    compiled = torch.compile(train, backend="inductor")
    step(compiled, inputs, params)  # compile forward and backward
    with InductorCounter() as counter:
        saved, _ = step(compiled, inputs, params)
    row["inductor"] = {"saved": saved, "launches": counter.cost.launches, "bytes": counter.cost.bytes}

    torch._dynamo.reset()
    graphs = []

    def watch(imported, cg):
        cg.record = True
        graphs.append(cg)

    backend = functools.partial(mlc.mlc_backend, options={"precision": precision}, _on_compile=watch)
    saved, got = step(torch.compile(train, backend=backend), inputs, params)
    launches = nbytes = 0
    for cg in graphs:
        cost = graph_cost(cg.graph, bind_symbols(cg.graph, cg.last_args) if cg.last_args is not None else {})
        launches, nbytes = launches + cost.launches, nbytes + cost.bytes
    # Against the largest gradient of the step: some parameters' gradients are rounding noise
    # (a bias a batch norm subtracts again, every layer before a post-norm's last LayerNorm).
    pairs = [(g, w) for g, w in zip(got, want) if g is not None and w is not None]
    scale = max((w.abs().max().item() for _, w in pairs), default=1.0) or 1.0
    errs = [(g - w).abs().max().item() / scale for g, w in pairs]
    row["mlc"] = {"saved": saved, "launches": launches, "bytes": nbytes, "grad_rel_err": max(errs, default=0.0),
                  "kernels": sum(cg.graph.count("kernel") for cg in graphs)}
    return row


def table(rows, precision: str) -> str:
    lines = [f"| model | saved MB eager / Inductor (CPU) / mlc{' ' + precision if precision != 'default' else ''} "
             f"| fwd+bwd launches eager / Inductor (CPU) / mlc | fwd+bwd MB eager / Inductor (CPU) / mlc "
             f"| mlc kernels | grad error mlc |", "|---|---|---|---|---|---|"]
    for r in rows:
        e, i, m = r["eager"], r["inductor"], r["mlc"]
        lines.append(f"| {r['model']} | {e['saved'] / 1e6:.3f} / {i['saved'] / 1e6:.3f} / {m['saved'] / 1e6:.3f} "
                     f"| {e['launches']} / {i['launches']} / {m['launches']} "
                     f"| {e['bytes'] / 1e6:.3f} / {i['bytes'] / 1e6:.3f} / {m['bytes'] / 1e6:.3f} "
                     f"| {m['kernels']} | {m['grad_rel_err']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo models")
    parser.add_argument("--precision", default="default", help="mlc's precision option (default, bf16, fp16)")
    parser.add_argument("--seq", type=int, default=None,
                        help="sequence length of the sequence models (default: the quick size's, 16)")
    parser.add_argument("--out", default=str(ROOT / "training.md"), help="the markdown table to write")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLC_PROGRESS", "0")
    warnings.simplefilter("ignore")
    rows = []
    for name in args.models.split(","):
        print(f"{name}: ...", file=sys.stderr, flush=True)
        rows.append(measure(name, args.precision, args.seq))
    text = table(rows, args.precision)
    pathlib.Path(args.out).write_text(
        "# Training: one forward+backward step (bench/training.py)\n\n" + text +
        "\nSaved MB: the distinct storages of the tensors autograd keeps for the backward (parameters excluded; "
        "views of one buffer count it once; saved_tensors_hooks, the same counting for all three). Grad error: max |mlc - eager| over every parameter's gradient, over the largest "
        "gradient's max |eager|. Launches and MB: eager and mlc modeled by mlc.cost (per launch, inputs read and "
        "outputs written once); Inductor (CPU) counted while its C++ kernels and ATen calls run. Sizes: the "
        f"zoo's quick sizes (bench/cases.py){f', sequences of {args.seq}' if args.seq else ''}, fp32.\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
