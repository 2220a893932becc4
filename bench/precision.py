"""Modeled bytes, launches and error of each ``precision`` mode (and int8 weights) against fp32 eager.

    python bench/precision.py            # bench sizes (GPT-2 MLP 4096x768, blocks at d768 s512 b2)
    python bench/precision.py --quick    # small sizes, in Triton's interpreter

Bytes and launches are modeled from the compiled IR (mlc/cost.py), as in bench/run.py. The
error is ``mlc.explain``'s accuracy: max |mlc - eager| over max |eager|, eager being the fp32
model. At bench sizes the compiled graphs run through the reference executor (torch, op by
op, with the same casts and roundings as the kernels, except that a kernel also keeps
low-precision matmul results in fp32 registers); with --quick the kernels themselves run,
in the interpreter. Writes bench/precision.md (or bench/precision-quick.md).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import mlc  # noqa: E402
from mlc.testing.models import MODELS  # noqa: E402
from run import GPT2MLP  # noqa: E402  (bench/run.py, beside this file)

HERE = pathlib.Path(__file__).resolve().parent
MODES = [("fp32 (default)", {}), ("tf32", {"precision": "tf32"}), ("bf16", {"precision": "bf16"}),
         ("fp16", {"precision": "fp16"}), ("fp32 + int8 weights", {"quantize": "int8-weight"}),
         ("bf16 + int8 weights", {"precision": "bf16", "quantize": "int8-weight"})]


def models(quick: bool):
    if quick:
        return {"gpt2_mlp d64": (GPT2MLP(64).eval(), (torch.randn(4, 8, 64),)),
                "gpt2_block": MODELS["gpt2_block"].build(batch=2),
                "llama_block": MODELS["llama_block"].build(batch=2)}
    big = dict(batch=2, seq=512, d_model=768, n_heads=12)
    return {"gpt2_mlp d768 4096 tokens": (GPT2MLP(768).eval(), (torch.randn(512, 8, 768),)),
            "gpt2_block d768 s512 b2": MODELS["gpt2_block"].build(**big),
            "llama_block d768 s512 b2": MODELS["llama_block"].build(n_kv_heads=4, d_ff=2048, max_seq=512, **big)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, kernels run in the interpreter")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    lines = ["| model | mode | launches | MB | vs fp32 | weight MB | max rel error |", "|---|---|---|---|---|---|---|"]
    for name, (model, inputs) in models(args.quick).items():
        base = None
        for mode, options in MODES:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                report = mlc.explain(model, *inputs, interpret=args.quick, **options)
            weights = sum(c.numel() * c.element_size() for g in report.graphs for c in g.graph.constants.values()
                          if c.dim() >= 2)
            base = base or report.bytes
            lines.append(f"| {name} | {mode} | {report.launches} | {report.bytes / 1e6:.1f} | "
                         f"{report.bytes / base:.2f} | {weights / 1e6:.2f} | {report.accuracy.max_rel:.2e} |")
            print(lines[-1], flush=True)
    out = HERE / ("precision-quick.md" if args.quick else "precision.md")
    out.write_text("# Precision modes against fp32\n\nWritten by `python bench/precision.py"
                   + (" --quick" if args.quick else "") + "`; see its docstring for what is measured.\n\n"
                   + "\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
