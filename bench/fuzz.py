"""Run the random-program fuzzer (``mlc.testing.fuzz``) over many seeds.

    python bench/fuzz.py --n 10000            # seeds 0..9999, in as many processes as cores
    python bench/fuzz.py --n 500 --start 7000 --jobs 1
    python bench/fuzz.py --n 2000 --no-strict # with the safety net on: counts what it catches

Each program is compiled with ``backend="mlc"`` (kernels in Triton's interpreter, ``strict``
unless ``--no-strict``) and compared with eager and float64. Prints the count of each
outcome (ok, wrong, crash, invalid), the failures grouped by kind, and for each kind the
smallest failing program found by shrinking, as Python and as the IR mlc receives.
``--json FILE`` writes every result. Exit code 1 if any program crashed or was wrong.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup():
    os.environ.setdefault("MLC_INTERPRET", "1")
    os.environ.setdefault("MLC_PROGRESS", "0")
    os.environ.setdefault("MLC_CACHE_DIR", tempfile.mkdtemp(prefix="mlc-fuzz-cache-"))
    import warnings

    warnings.simplefilter("ignore")  # each program's warnings are in its result
    sys.path.insert(0, ROOT)


def _run_chunk(args) -> list[dict]:
    seeds, options = args
    _setup()
    from mlc.testing import fuzz

    out = []
    for seed in seeds:
        r = fuzz.run(fuzz.generate(seed), options)
        out.append({"seed": seed, "outcome": r.outcome, "detail": r.detail, "seconds": round(r.seconds, 3),
                    "signature": fuzz.signature(r), "warnings": r.warnings})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="programs to run (default 1000)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: cores)")
    parser.add_argument("--no-strict", action="store_true", help="safety net on: a failing kernel runs by reference")
    parser.add_argument("--shrink", type=int, default=60, help="runs spent shrinking each kind of failure")
    parser.add_argument("--json", metavar="FILE", help="write every result to FILE at the end")
    parser.add_argument("--jsonl", metavar="FILE", help="append each result to FILE as it comes (one JSON a line)")
    parser.add_argument("--summary", metavar="FILE", help="only summarize the results in a --jsonl FILE")
    args = parser.parse_args(argv)
    if args.summary:
        with open(args.summary) as f:
            results = [json.loads(line) for line in f if line.strip()]
        return _report(results, args, seconds=sum(r["seconds"] for r in results), options={"strict": True})
    options = {"strict": not args.no_strict}
    seeds = list(range(args.start, args.start + args.n))
    chunk = 25
    chunks = [(seeds[i:i + chunk], options) for i in range(0, len(seeds), chunk)]
    start = time.perf_counter()
    results: list[dict] = []
    from tqdm import tqdm

    sink = open(args.jsonl, "a") if args.jsonl else None
    with ProcessPoolExecutor(args.jobs) as pool, tqdm(total=len(seeds), unit="program", file=sys.stderr) as bar:
        for part in pool.map(_run_chunk, chunks):
            results.extend(part)
            bar.update(len(part))
            if sink is not None:
                sink.write("".join(json.dumps(r) + "\n" for r in part))
                sink.flush()
    if sink is not None:
        sink.close()
    return _report(results, args, time.perf_counter() - start, options)


def _report(results: list[dict], args, seconds: float, options: dict) -> int:
    """Print the counts, the kinds of failure and the smallest program of each."""
    counts = collections.Counter(r["outcome"] for r in results)
    caught = sum(1 for r in results if any("reference executor" in w for w in r["warnings"]))
    seeds = sorted(r["seed"] for r in results)
    print(f"{len(results)} programs (seeds {seeds[0]}..{seeds[-1]}), {seconds:.0f} s, strict={options['strict']}")
    print("  " + ", ".join(f"{k}: {counts.get(k, 0)}" for k in ("ok", "wrong", "crash", "invalid")))
    if not options["strict"]:
        print(f"  kernels caught by the safety net in {caught} program(s)")
    kinds = collections.defaultdict(list)
    for r in results:
        if r["outcome"] in ("wrong", "crash"):
            kinds[r["signature"]].append(r)
    if kinds:
        _setup()
        from mlc.testing import fuzz

        print(f"\n{len(kinds)} kind(s) of failure:")
        for signature, rs in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            print(f"\n== {len(rs)} x {signature}\n   seeds: {', '.join(str(r['seed']) for r in rs[:20])}")
            first = fuzz.run(fuzz.generate(rs[0]["seed"]), options)
            small = fuzz.shrink(first, options, budget=args.shrink)
            print(f"   smallest failing program ({small.outcome}: {small.detail}):")
            print(small.program.describe())
            print("   its IR:")
            print(fuzz.ir_text(small.program))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": seconds, "counts": counts, "results": results}, f, indent=1)
    return 1 if counts.get("wrong") or counts.get("crash") else 0


if __name__ == "__main__":
    sys.exit(main())
