"""Warm starts through Redis: compile time with an empty cache directory and a Redis another
process filled, against a cold compile and a local warm start.

    python bench/remote_cache.py [--models gpt2_block,llama_block] [--redis redis://HOST:PORT/DB] [--repeat 3]
                                 [--autotune]

Without ``--redis`` it starts a ``redis-server`` of its own on a free loopback port. Every
measurement is a fresh process (``bench/compile_time.py``'s worker: compile time is the first
call's time minus a later call's), run ``--repeat`` times, the median reported:

- cold: empty cache directory, empty Redis (the compile fills both);
- remote warm: another empty directory, the Redis the cold run filled (``hit (remote)``);
- local warm: the directory the remote-warm run filled (``hit``).

``--autotune`` compiles with ``autotune="default"`` (what a GPU gets: GPU configs searched,
pruned by ptxas and ranked, here by the cost model), each run with an empty Triton cache, so a
cold compile pays every ptxas compile and a warm one finds the tuning results in the cache.

"mlc's part" is the time mlc spends after AOT autograd (``compile_seconds``: import, cache
lookup, passes, code generation, kernel loading); the rest is Dynamo and AOT autograd.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compile_time import _run  # noqa: E402 - the same worker as bench/compile_time.py


def start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def measure(model: str, url: str, repeat: int, autotune: str = "auto") -> dict:
    os.environ["MLC_REMOTE_CACHE"] = url  # the worker's options leave remote_cache to the environment
    names = ("cold", "remote warm", "local warm")
    runs = {(name, part): [] for name in names for part in ("compile_s", "mlc_stage_s")}
    verdicts = {}
    for _ in range(repeat):
        flush(url)
        with tempfile.TemporaryDirectory() as cold_dir, tempfile.TemporaryDirectory() as warm_dir:
            for name, d in zip(names, (cold_dir, warm_dir, warm_dir)):
                with tempfile.TemporaryDirectory() as triton_cache:
                    r = _run("mlc", model, d, autotune=autotune, triton_cache=triton_cache)
                for part in ("compile_s", "mlc_stage_s"):
                    runs[name, part].append(r[part])
                verdicts[name] = sorted(set(r["cache"]))
    return {key: statistics.median(v) for key, v in runs.items()} | {"verdicts": verdicts}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="gpt2_block,llama_block")
    parser.add_argument("--redis", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--autotune", action="store_true", help='autotune="default", as on a GPU')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        proc, url = start_redis(workdir) if args.redis is None else (None, args.redis)
        try:
            print("| model | cold s | remote warm s | local warm s | mlc's part: cold / remote warm / local warm s "
                  "| verdicts (remote warm) |")
            print("|---|---|---|---|---|---|")
            for model in args.models.split(","):
                r = measure(model, url, args.repeat, "default" if args.autotune else "auto")
                stage = " / ".join(f"{r[name, 'mlc_stage_s']:.2f}" for name in ("cold", "remote warm", "local warm"))
                print(f"| {model} | {r['cold', 'compile_s']:.2f} | {r['remote warm', 'compile_s']:.2f} | "
                      f"{r['local warm', 'compile_s']:.2f} | {stage} | {', '.join(r['verdicts']['remote warm'])} |",
                      flush=True)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)


if __name__ == "__main__":
    main()
