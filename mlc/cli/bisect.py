"""``mlc bisect``: find the one optimization decision after which mlc's result is wrong.

mlc's passes ask ``mlc.ir.fuel`` before each decision (a fusion merge, a rewrite rule, a
fold, a CSE merge, a precision change). ``bisect`` compiles the function with every decision
allowed and counts them (D); if the result differs from eager, it binary-searches the
smallest budget N in 1..D whose result differs, in about log2(D) more compiles. Decision N is
then the culprit: the report names it and shows the IR the compile ends with just before it
(N - 1 decisions) and with it (N), as a diff. A result that is wrong with no decision at all
points at the frontend or the code generator instead.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field

import torch

from ..backend import mlc_backend
from ..ir import fuel

# max |mlc - eager| / max |eager| above which a result is wrong, by the outputs' widest float dtype
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@dataclass
class Trial:
    limit: int | None
    error: float  # relative to eager
    decisions: list[str]
    ir: list[str]  # the final IR of each compiled graph


@dataclass
class Bisection:
    decisions: int  # made with no limit
    tolerance: float
    full: Trial
    culprit: int | None = None  # 1-based; None: the result is right, or wrong with no decision
    before: Trial | None = None
    after: Trial | None = None
    compiles: int = 0
    trials: list[tuple[int | None, float]] = field(default_factory=list)

    def text(self) -> str:
        head = f"mlc bisect: {self.decisions} optimization decision(s); tolerance {self.tolerance:g}"
        if self.full.error <= self.tolerance:
            return f"{head}\noutputs match eager with every decision (error {self.full.error:.3g}): nothing to bisect"
        if self.culprit is None:
            return (f"{head}\noutputs differ from eager (error {self.before.error:.3g}) even with no optimization "
                    f"decision: the frontend or the code generator is wrong, not a pass's decision")
        lines = [head, f"outputs differ from eager after decision {self.culprit} of {self.decisions} "
                       f"(error {self.after.error:.3g}; {self.culprit - 1} decisions: {self.before.error:.3g}), "
                       f"found in {self.compiles} compiles:",
                 f"  decision {self.culprit}: {self.full.decisions[self.culprit - 1]}", "",
                 f"IR before (fuel={self.culprit - 1}) and after (fuel={self.culprit}) that decision:"]
        for k, (a, b) in enumerate(zip(self.before.ir, self.after.ir)):
            diff = list(difflib.unified_diff(a.splitlines(), b.splitlines(), f"graph {k}, fuel={self.culprit - 1}",
                                             f"graph {k}, fuel={self.culprit}", lineterm="", n=2))
            lines += diff or [f"(graph {k}: the same)"]
        return "\n".join(lines)


def _flat(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _flat(item)]
    if isinstance(x, dict):
        return [t for item in x.values() for t in _flat(item)]
    return []


def relative_error(got, want) -> float:
    """max |got - want| / max |want| over every tensor output (inf for a shape or count mismatch)."""
    got, want = _flat(got), _flat(want)
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return float("inf")
        g, w = g.detach().double(), w.detach().double()
        if not torch.equal(torch.isnan(g), torch.isnan(w)):
            return float("inf")
        ok = ~torch.isnan(w)
        if ok.any():
            scale = max(w[ok].abs().max().item(), 1e-30)
            diff = (g[ok] - w[ok]).abs()
            worst = max(worst, float("inf") if torch.isinf(diff).any() else diff.max().item() / scale)
    return worst


def _tolerance(outputs) -> float:
    floats = [t.dtype for t in _flat(outputs) if t.is_floating_point()]
    return max((TOLERANCE.get(d, 1e-4) for d in floats), default=0.0)


def bisect(fn, *example_inputs, tolerance: float | None = None, dynamic: bool | None = None,
           **options) -> Bisection:
    """Bisect the optimization decisions of compiling ``fn`` with mlc (see the module doc).

    ``options`` are mlc's compile options (the cache is always off here); ``fn`` runs under
    ``no_grad``, like ``mlc.explain``.
    """
    with torch.no_grad():
        expected = fn(*example_inputs)
    tol = _tolerance(expected) if tolerance is None else tolerance
    options = {**options, "cache": False}

    def trial(limit: int | None) -> Trial:
        graphs: list[str] = []
        backend = functools.partial(mlc_backend, options=options,
                                    _on_compile=lambda imported, compiled: graphs.append(str(compiled.graph)))
        torch._dynamo.reset()
        try:
            with fuel.budget(limit) as f, torch.no_grad():
                got = torch.compile(fn, backend=backend, dynamic=dynamic)(*example_inputs)
        finally:
            torch._dynamo.reset()
        return Trial(limit, relative_error(got, expected), list(f.log), graphs)

    full = trial(None)
    result = Bisection(len(full.decisions), tol, full, compiles=1, trials=[(None, full.error)])
    if full.error <= tol:
        return result
    lo, hi = 0, result.decisions  # at hi the result is wrong; at lo it is right, once checked
    none = trial(0)
    result.compiles += 1
    result.trials.append((0, none.error))
    if none.error > tol:
        result.before = none
        return result
    known = {0: none, hi: full}
    while hi - lo > 1:
        mid = (lo + hi) // 2
        t = trial(mid)
        result.compiles += 1
        result.trials.append((mid, t.error))
        known[mid] = t
        if t.error > tol:
            hi = mid
        else:
            lo = mid
    result.culprit, result.before, result.after = hi, known[lo], known[hi]
    return result
