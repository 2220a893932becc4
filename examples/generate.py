"""Greedy generation from a small LLaMA-architecture model with a static KV cache, compiled by mlc.

    python examples/generate.py              # 4 layers, width 256, 12 new tokens
    python examples/generate.py --layers 2 --steps 6

The model (``mlc.testing.decode``, random weights, nothing downloaded) writes each token's keys
and values into preallocated caches in place and attends over them with a length mask, so one
compiled graph serves every position. The script decodes with eager PyTorch and with
``backend="mlc"`` (kernels in Triton's interpreter here: no GPU is needed), checks that the tokens
are the same, and prints what one decode step moves through memory, against its floor, and the
tokens/s that bandwidth allows on an H100 and an A100 (``mlc.cost``).
"""

import argparse
import os
import time
import warnings

import torch

os.environ.setdefault("MLC_INTERPRET", "1")  # before mlc reads it: run the kernels on the CPU

import mlc  # noqa: E402
from mlc.cost import GPUS  # noqa: E402
from mlc.testing import decode  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12, help="tokens to generate")
    parser.add_argument("--quantize", action="store_true", help="int8 weights (options quantize='int8-weight')")
    args = parser.parse_args(argv)
    sizes = dict(layers=args.layers, d_model=args.width, n_heads=args.width // 64, n_kv_heads=max(1, args.width // 128),
                 d_ff=args.width * 8 // 3 // 64 * 64, vocab=1024, max_seq=64)
    options = {"freeze": True, **({"quantize": "int8-weight"} if args.quantize else {})}
    model = decode.build(**sizes)
    prompt = torch.randint(0, sizes["vocab"], (1, 5), generator=torch.Generator().manual_seed(0))

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = decode.greedy(model, prompt, args.steps)
        model.reset()
        compiled = torch.compile(model, backend="mlc", options=options)
        start = time.perf_counter()
        got = decode.greedy(compiled, prompt, args.steps)
        seconds = time.perf_counter() - start
        model.reset()
        report = mlc.explain(model, prompt[:, :1].clone(), torch.tensor([4]), **options)

    print(f"prompt    {prompt[0].tolist()}")
    print(f"eager     {want[0].tolist()}")
    same = "the same" if torch.equal(got, want) else \
        "int8 weights round, so tokens may differ" if args.quantize else "DIFFERENT"
    print(f"mlc       {got[0].tolist()}  ({same}; "
          f"{seconds:.1f} s with compiling, kernels in Triton's interpreter)")
    step = sum(g.cost.bytes for g in report.graphs)
    launches = sum(len(g.cost.items) for g in report.graphs)
    floor = decode.floor_bytes(model, int8=args.quantize)
    print(f"one step  {launches} launches, {step / 1e6:.3f} MB modeled (eager {report.eager.bytes / 1e6:.3f} MB "
          f"in {len(report.eager.items)} launches); floor {floor / 1e6:.3f} MB: weights{' (int8)' if args.quantize else ''}, both caches, the new K/V")
    for name, gpu in GPUS.items():
        print(f"{name:9} {gpu.bandwidth / step:,.0f} tokens/s bandwidth-bound (mlc), "
              f"{gpu.bandwidth / report.eager.bytes:,.0f} (eager), {gpu.bandwidth / floor:,.0f} (floor)")
    return 0 if torch.equal(got, want) or args.quantize else 1


if __name__ == "__main__":
    raise SystemExit(main())
