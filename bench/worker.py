"""One measurement of bench/run.py, in a process of its own: compile one case with one backend.

    python bench/worker.py CASE SIZE BACKEND PHASE --json OUT [--ir-only]

bench/run.py starts it twice per (case, backend) with the same cache directories in the
environment (MLC_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR): PHASE "cold" on
empty ones, then "warm" in a new process, so the second compile sees only what the first
left on disk. Writes one JSON object to OUT:

- ``compile_s``: the first call's time minus the time spent inside the compiled graphs during
  it (Dynamo, AOT autograd and the backend's compile; running the kernels is not counted).
  On a GPU, where kernels may be JIT-compiled inside their first launch, it is the first
  call's time minus the second's instead.
- ``max_abs_err``, ``max_rel_err``: against eager PyTorch on the same inputs; relative is
  max |out - eager| / max |eager|.
- cold only: launches, bytes, FLOPs and modeled H100 time (mlc and eager from ``mlc.explain``;
  Inductor's C++ kernels and ATen calls counted while it runs, see ``count_inductor``).
- on a GPU: ``latency_ms`` measured with ``triton.testing.do_bench`` (and eager's, for mlc).

``--ir-only`` (mlc on CPU at sizes too large for Triton's interpreter): mlc compiles as usual,
kernels included, then its compiled graphs run through the reference executor, which runs
mlc's final IR op by op in torch; the kernels themselves are then run in the interpreter at
the case's ``check`` size (``kernel_check``).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import re
import sys
import time
import warnings

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mlc  # noqa: E402
from mlc.cost import EagerCounter  # noqa: E402
from cases import build_case  # noqa: E402

CUDA = torch.cuda.is_available()


class Timed:
    """A ``torch.compile`` backend wrapping another; it adds up the time spent inside the
    compiled graphs it returns, so that a call's compile time can be told from its run time."""

    def __init__(self, backend):
        self.backend = backend
        self.run_s = 0.0

    def __call__(self, gm, example_inputs):
        compiled = self.backend(gm, example_inputs)

        def run(*args):
            start = time.perf_counter()
            try:
                return compiled(*args)
            finally:
                self.run_s += time.perf_counter() - start

        return run


def mlc_backend(interpret: bool, ir_only: bool, seen: list):
    def on_compile(imported, compiled):
        seen.append(compiled)
        if ir_only:
            # After the compile (kernels generated and loaded, caches written): run the final IR
            # op by op instead of the kernels, which take minutes in the interpreter at bench sizes.
            if not hasattr(compiled, "plan"):
                raise RuntimeError("mlc's CompiledGraph has no 'plan' attribute: update bench/worker.py")
            compiled.plan = None

    return functools.partial(mlc.mlc_backend, options={"interpret": interpret}, _on_compile=on_compile)


def sync():
    if CUDA:
        torch.cuda.synchronize()


def timed_call(fn, inputs):
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        out = fn(*inputs)
    sync()
    return out, time.perf_counter() - start


def errors(out: torch.Tensor, expected: torch.Tensor) -> dict:
    diff = (out.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    return {"max_abs_err": diff, "max_rel_err": diff / scale if scale else diff}


# --- Inductor on CPU: what its generated code does per call ---------------------------------

_PYBINDING = re.compile(r"(\w+) = async_compile\.cpp_pybinding\(\[.*?\], r?'''(.*?)'''", re.S)


def _pointer_weights(source: str) -> list[int]:
    """For each pointer parameter of a C++ kernel, how often it moves its buffer: an
    ``in_out_ptr`` is read and written (2), an ``in_ptr`` read and an ``out_ptr`` written (1)."""
    params = re.search(r"void\s+kernel\((.*?)\)", source, re.S).group(1).split(",")
    return [2 if "in_out_ptr" in p else 1 for p in params if "*" in p]


class InductorCounter(EagerCounter):
    """Counts what a call of Inductor's CPU code does: each C++ kernel call is one launch that
    moves each of its tensor arguments once (an in-out argument twice); each ATen call (the
    extern matmuls, attention, convolution, fallbacks) is counted as eager's are. The C++
    kernels' FLOPs are not counted."""

    def __enter__(self):
        from torch._inductor.codecache import PyCodeCache

        modules = {id(m): m for m in [*PyCodeCache.modules, *PyCodeCache.modules_no_attr.values()]}
        self._restore = []
        for module in modules.values():
            if not hasattr(module, "call") or not getattr(module, "__file__", None):
                continue
            source = pathlib.Path(module.__file__).read_text()
            for name, kernel_source in _PYBINDING.findall(source):
                kernel = getattr(module, name)
                self._restore.append((module, name, kernel))
                setattr(module, name, self._counting(name, kernel, _pointer_weights(kernel_source)))
        return super().__enter__()

    def __exit__(self, *exc):
        for module, name, kernel in self._restore:
            setattr(module, name, kernel)
        return super().__exit__(*exc)

    def _counting(self, name, kernel, weights):
        def run(*args):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            self.cost.add(name, sum(w * t.numel() * t.element_size() for w, t in zip(weights, tensors)), 0)
            return kernel(*args)

        return run

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        out = kwargs.pop("out", None)
        if out is None or not hasattr(func.overloadpacket, "default"):
            return super().__torch_dispatch__(func, types, args, kwargs)
        # extern_kernels.addmm(..., out=buf): counted as the functional op (its output once).
        result = super().__torch_dispatch__(func.overloadpacket.default, types, args, kwargs)
        return out.copy_(result)


def count_inductor(compiled, inputs) -> dict:
    with torch.no_grad(), InductorCounter() as counter:
        compiled(*inputs)
    cost = counter.cost
    cpp = [i for i in cost.items if not i[0].startswith("aten.")]
    return {"launches": cost.launches, "kernels": len(cpp), "extern_calls": cost.launches - len(cpp),
            "bytes": cost.bytes, "flops": None, "h100_us": None,
            "extern_flops": sum(f for n, _, f in cost.items if n.startswith("aten."))}


# --- mlc and eager: the cost model ------------------------------------------------------------

def count_mlc(model, inputs) -> tuple[dict, dict]:
    report = mlc.explain(model, *inputs, interpret=False)  # costs come from the IR; nothing needs to run fast
    mine = {"launches": report.launches, "kernels": len(report.kernels), "bytes": report.bytes,
            "flops": report.flops, "h100_us": sum(g.cost.time("H100") for g in report.graphs) * 1e6,
            "fallbacks": sorted(set(report.fallbacks))}
    eager = {"launches": report.eager.launches, "bytes": report.eager.bytes, "flops": report.eager.flops,
             "h100_us": report.eager.time("H100") * 1e6}
    return mine, eager


def kernel_check(case: str) -> dict:
    """mlc's kernels run in Triton's interpreter at the case's check size, against eager."""
    torch._dynamo.reset()
    model, inputs = build_case(case, "check")
    with torch.no_grad():
        expected = model(*inputs)
        out = torch.compile(model, backend=mlc_backend(True, False, []))(*inputs)
    return errors(out, expected)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case")
    p.add_argument("size", choices=["bench", "quick", "check"])
    p.add_argument("backend", choices=["mlc", "inductor"])
    p.add_argument("phase", choices=["cold", "warm"])
    p.add_argument("--json", required=True)
    p.add_argument("--ir-only", action="store_true")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")  # fallbacks are listed in the results instead
    torch._dynamo.reset()
    device = "cuda" if CUDA else "cpu"
    model, inputs = build_case(args.case, args.size)
    model, inputs = model.to(device), tuple(x.to(device) for x in inputs)
    with torch.no_grad():
        expected = model(*inputs)

    seen: list = []
    inner = mlc_backend(not CUDA, args.ir_only and not CUDA, seen) if args.backend == "mlc" else "inductor"
    if inner == "inductor":
        inner = torch._dynamo.lookup_backend("inductor")
    backend = Timed(inner)
    compiled = torch.compile(model, backend=backend)
    out, first = timed_call(compiled, inputs)
    result = {"case": args.case, "size": args.size, "backend": args.backend, "phase": args.phase, "device": device}
    if CUDA:
        _, again = timed_call(compiled, inputs)
        result["compile_s"] = first - again
    else:
        result["compile_s"] = first - backend.run_s
    result.update(errors(out, expected))
    if args.backend == "mlc":
        result["cache"] = [getattr(c, "cache", None) for c in seen]
        result["ir_only"] = bool(args.ir_only and not CUDA)
    if args.phase == "cold":
        if args.backend == "mlc":
            result["counts"], result["eager_counts"] = count_mlc(model, inputs)
            if result["ir_only"]:
                result["kernel_check"] = kernel_check(args.case)
        elif not CUDA:
            result["counts"] = count_inductor(compiled, inputs)
    if CUDA:
        import triton.testing

        with torch.no_grad():
            result["latency_ms"] = triton.testing.do_bench(lambda: compiled(*inputs))
            if args.backend == "mlc":
                result["eager_latency_ms"] = triton.testing.do_bench(lambda: model(*inputs))
    pathlib.Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
