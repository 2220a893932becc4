"""One compiled optimizer step against eager's: launches and bytes, for SGD and AdamW.

    python bench/optimizer.py                 # the zoo's gpt2_block parameters, width 256

``torch.compile(optimizer.step, backend="mlc")`` on the parameters of a model whose gradients
are set; the step is compiled after one eager step (so the states exist, as in training) and
counted by ``mlc.explain``: mlc's launches and bytes modeled from its compiled graph
(``mlc.cost``), eager's one launch per ATen call, moving its inputs and outputs (a foreach call
is one launch over every tensor). Writes nothing; prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import mlc  # noqa: E402
from mlc.testing.models import MODELS  # noqa: E402

OPTIMIZERS = {
    "SGD momentum": lambda ps, foreach: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01, foreach=foreach),
    "AdamW": lambda ps, foreach: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.1, foreach=foreach),
}


def measure(model_name: str, width: int, name: str, foreach: bool) -> dict:
    model, _ = MODELS[model_name].build(d_model=width)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    opt = OPTIMIZERS[name](params, foreach)
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = mlc.explain(opt.step)
    mlc_launches = sum(len(g.cost.items) for g in report.graphs)
    return {"optimizer": name, "foreach": foreach, "params": len(params),
            "launches": (len(report.eager.items), mlc_launches),
            "MB": (report.eager.bytes / 1e6, sum(g.cost.bytes for g in report.graphs) / 1e6),
            "fallbacks": sorted({f for g in report.graphs for f in g.fallbacks})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2_block", choices=sorted(MODELS))
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args(argv)
    print(f"{args.model} at width {args.width}\n")
    print("| optimizer | foreach | parameters | launches eager / mlc | MB eager / mlc | ATen in mlc |")
    print("|---|---|---|---|---|---|")
    for name in OPTIMIZERS:
        for foreach in (True, False):
            r = measure(args.model, args.width, name, foreach)
            print(f"| {name} | {foreach} | {r['params']} | {r['launches'][0]} / {r['launches'][1]} | "
                  f"{r['MB'][0]:.3f} / {r['MB'][1]:.3f} | {', '.join(r['fallbacks']) or '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
