"""A random-program fuzzer: small PyTorch functions compiled with mlc, checked against eager.

``generate(seed)`` builds a ``Program``: a few inputs of odd shapes (size-1 dims anywhere,
one-element and zero-size tensors, batch 1), some passed transposed, sliced or expanded, and
a straight-line function of 3-12 ops drawn from every op family mlc compiles (pointwise,
broadcasting binaries, reductions, softmax, norms, views, strided slices, ``cat``, matmuls
with broadcast operands, half and bf16 round trips, gathers), in fp32, fp16 or bf16, for
inference or training, static or ``dynamic=True``. Every op is checked eagerly as it is
drawn, so a program is always valid PyTorch.

``run(program)`` compiles it with ``backend="mlc"`` (kernels in Triton's interpreter) and
compares outputs (and gradients, in training) with eager. The error allowed is relative to a
float64 run: mlc may be as far from it as eager in the program's dtype is, plus a tolerance
for the dtype. ``shrink`` drops ops (and simplifies inputs) while the outcome stays a
failure, so a report shows the smallest program that fails. ``python bench/fuzz.py`` runs
thousands.
"""

from __future__ import annotations

import random
import re
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace

import torch

OUTCOMES = ("ok", "wrong", "crash", "invalid")
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}
DIMS = [1, 1, 2, 3, 4, 5, 7, 8, 16, 17]
DTYPE_NAMES = {torch.float32: "torch.float32", torch.float16: "torch.float16", torch.bfloat16: "torch.bfloat16"}


@dataclass(frozen=True)
class Input:
    shape: tuple[int, ...]
    layout: str = "contiguous"  # "contiguous", "transposed", "sliced", "expanded"

    def make(self, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
        shape = self.shape
        if self.layout == "transposed" and len(shape) >= 2:
            base = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=gen)
            return base.transpose(-1, -2).to(dtype)
        if self.layout == "sliced" and shape:
            base = torch.randn(*shape[:-1], 2 * shape[-1] + 1, generator=gen).to(dtype)
            return base[..., 1::2]
        if self.layout == "expanded" and len(shape) >= 2:  # a leading dim of stride 0 (rank 1: all equal)
            base = torch.randn(*[1 if k == 0 else d for k, d in enumerate(shape)], generator=gen).to(dtype)
            return base.expand(*shape)
        return torch.randn(*shape, generator=gen).to(dtype)


@dataclass(frozen=True)
class Program:
    """A function as source lines over ``x0..`` (inputs) and ``v0..`` (values); returns ``outputs``."""

    seed: int
    dtype: torch.dtype
    inputs: tuple[Input, ...]
    lines: tuple[str, ...]
    outputs: tuple[str, ...]
    train: bool = False
    dynamic: bool = False

    def source(self) -> str:
        args = ", ".join(f"x{k}" for k in range(len(self.inputs)))
        body = [f"    {line}" for line in self.lines] or ["    pass"]
        return "\n".join([f"def f({args}):", *body, f"    return ({', '.join(self.outputs)},)"])

    def function(self):
        scope = {"torch": torch, "F": torch.nn.functional}
        exec(compile(self.source(), f"<fuzz program {self.seed}>", "exec"), scope)  # noqa: S102 - our own text
        return scope["f"]

    def make_inputs(self) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        xs = [i.make(self.dtype, gen) for i in self.inputs]
        if self.train:
            xs = [x.detach().requires_grad_(True) for x in xs]
        return xs

    def describe(self) -> str:
        ins = ", ".join(f"x{k}: {list(i.shape)} {i.layout}" for k, i in enumerate(self.inputs))
        mode = ("training" if self.train else "inference") + (", dynamic=True" if self.dynamic else "")
        return f"# seed {self.seed}, {str(self.dtype).replace('torch.', '')}, {mode}\n# inputs {ins}\n{self.source()}"


# --- drawing ops -------------------------------------------------------------------------------

UNARY = ["torch.exp({a}.clamp(max=4))", "torch.tanh({a})", "torch.sigmoid({a})", "torch.relu({a})",
         "F.gelu({a})", "F.gelu({a}, approximate='tanh')", "F.silu({a})", "torch.abs({a})", "-{a}",
         "torch.sqrt(torch.abs({a}) + 0.5)", "torch.log(torch.abs({a}) + 1)", "torch.sin({a})", "torch.cos({a})",
         "torch.rsqrt(torch.abs({a}) + 1)", "torch.erf({a})", "torch.clamp({a}, -0.5, 0.5)", "{a} * 2 - 1",
         "torch.where({a} > 0, {a}, 0.1 * {a})", "{a}.float().to({a}.dtype)", "{a} ** 2",
         "{a}.to(torch.float16).to({a}.dtype)", "{a}.to(torch.bfloat16).to({a}.dtype)", "torch.floor({a} * 3)"]
BINARY = ["{a} + {b}", "{a} - {b}", "{a} * {b}", "{a} / (torch.abs({b}) + 1)", "torch.maximum({a}, {b})",
          "torch.minimum({a}, {b})", "torch.where({b} > 0, {a}, {b})"]
REDUCE = ["{a}.sum(dim={d}, keepdim={k})", "{a}.mean(dim={d}, keepdim={k})", "{a}.amax(dim={d}, keepdim={k})",
          "{a}.amin(dim={d}, keepdim={k})", "{a}.var(dim={d}, keepdim={k})", "{a}.sum()",
          "torch.softmax({a}, dim={d})", "torch.log_softmax({a}, dim={d})",
          "F.layer_norm({a}, {a}.shape[-1:])", "{a} * torch.rsqrt({a}.pow(2).mean(-1, keepdim=True) + 1e-6)"]
VIEWS = ["{a}.transpose({d}, {e})", "{a}.permute(*reversed(range({a}.dim())))", "{a}.unsqueeze({d})",
         "{a}.squeeze({d})", "{a}.reshape(-1)", "{a}.flatten({d})", "{a}[..., ::2]", "{a}.narrow({d}, 0, 1)",
         "{a}.contiguous()", "{a}.unsqueeze(0).expand(2, *{a}.shape)", "{a}.t() if {a}.dim() == 2 else {a}"]
DATA = ["torch.cat([{a}, {a}], dim={d})", "torch.cat([{a}, {b}], dim={d})", "torch.stack([{a}, {a}], dim={d})",
        "{a}.index_select({d}, torch.tensor([0, 0]))", "torch.gather({a}, {d}, torch.zeros_like({a}, "
        "dtype=torch.long))"]
MATMUL = ["{a} @ {b}", "{a} @ {a}.transpose(-1, -2)", "torch.matmul({a}, {b}.transpose(-1, -2))",
          "torch.relu({a} @ {b} + 1)", "F.linear({a}, {b})"]
FAMILIES = [(UNARY, 4), (BINARY, 4), (REDUCE, 3), (VIEWS, 3), (DATA, 1), (MATMUL, 2)]


def _shape(rng: random.Random, rank: int) -> tuple[int, ...]:
    return tuple(rng.choice(DIMS) for _ in range(rank))


def generate(seed: int, *, n_ops: tuple[int, int] = (3, 12), zero_size: float = 0.03) -> Program:
    """A random valid program, reproducible from ``seed``."""
    rng = random.Random(seed)
    dtype = rng.choices([torch.float32, torch.float16, torch.bfloat16], [6, 2, 2])[0]
    rank = rng.choice([1, 2, 2, 3, 3, 4])
    base = _shape(rng, rank)
    if rng.random() < zero_size:
        base = tuple(0 if k == rng.randrange(rank) else d for k, d in enumerate(base))
    inputs = [Input(base, rng.choice(["contiguous"] * 5 + ["transposed", "sliced", "expanded"]))]
    for _ in range(rng.randint(0, 2)):  # broadcast partners: size-1 dims, a suffix of dims, or the same
        shape = rng.choice([tuple(1 if rng.random() < 0.4 else d for d in base), base[rng.randrange(rank):], base])
        inputs.append(Input(shape or (1,), rng.choice(["contiguous"] * 3 + ["transposed", "expanded"])))
    program = Program(seed, dtype, tuple(inputs), (), ("x0",), train=rng.random() < 0.25,
                      dynamic=rng.random() < 0.15)
    gen_inputs = program.make_inputs()
    values = {f"x{k}": x.detach() for k, x in enumerate(gen_inputs)}
    scope = {"torch": torch, "F": torch.nn.functional}
    lines: list[str] = []
    target = rng.randint(*n_ops)
    attempts = 0
    while len(lines) < target and attempts < 20 * target:
        attempts += 1
        family = rng.choices([f for f, _ in FAMILIES], [w for _, w in FAMILIES])[0]
        template = rng.choice(family)
        names = list(values)
        a = rng.choice(names[-3:] if rng.random() < 0.7 else names)
        b = rng.choice(names)
        if "{b}" in template and family is MATMUL and rng.random() < 0.5:
            b = _matmul_partner(rng, values[a], inputs, values, dtype)
            if b is None:
                continue
        rank_a = values[a].dim()
        d = rng.randrange(-rank_a, rank_a) if rank_a else 0
        e = rng.randrange(-rank_a, rank_a) if rank_a else 0
        expr = template.format(a=a, b=b, d=d, e=e, k=rng.random() < 0.5)
        name = f"v{len(lines)}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = eval(expr, scope, dict(values))  # noqa: S307 - our own text
        except Exception:  # noqa: BLE001 - an op that does not apply to these shapes: draw another
            continue
        if not isinstance(out, torch.Tensor) or out.numel() > 4096 or out.dim() > 5:
            continue
        if not out.is_floating_point():
            continue
        values[name] = out
        lines.append(f"{name} = {expr}")
    inputs_now = tuple(inputs)  # _matmul_partner may have added inputs
    used = {n for line in lines for n in _names(line.split(" = ", 1)[1])}
    leaves = [n for n in values if n.startswith("v") and n not in used]
    outputs = tuple(leaves[-4:]) or ("x0",)
    return replace(program, inputs=inputs_now, lines=tuple(lines), outputs=outputs)


def _matmul_partner(rng, a: torch.Tensor, inputs: list[Input], values: dict, dtype) -> str | None:
    """A new input that ``a @ it`` accepts: [K, N], or batched with a broadcast batch dim."""
    if a.dim() == 0:
        return None
    k = a.shape[-1]
    n = rng.choice(DIMS)
    shape = (k, n) if a.dim() == 1 or rng.random() < 0.6 else (*[1 if rng.random() < 0.5 else d
                                                                  for d in a.shape[:-2]], k, n)
    inputs.append(Input(shape, rng.choice(["contiguous", "contiguous", "transposed"])))
    name = f"x{len(inputs) - 1}"
    gen = torch.Generator().manual_seed(hash((len(inputs), shape)) % (2 ** 31))
    values[name] = inputs[-1].make(dtype, gen)
    return name


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\b[xv]\d+\b", expr))


# --- running ------------------------------------------------------------------------------------

@dataclass
class Result:
    program: Program
    outcome: str  # one of OUTCOMES
    detail: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _flat(outs) -> list[torch.Tensor]:
    return [o for o in outs if isinstance(o, torch.Tensor)]


def _error(got: torch.Tensor, want: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(mlc's distance from the float64 result, eager's), scaled by the result's magnitude.

    Where float64 is finite, mlc must be finite too unless eager is not (then both overflowed);
    mlc may be finite where eager overflowed (fp16 arithmetic in fp32 registers does that), and is
    then held to the float64 value. A nan of mlc's that neither eager nor float64 has is wrong.
    """
    g, w, r = got.double(), want.double(), ref.double()
    if (torch.isnan(g) & ~torch.isnan(w) & ~torch.isnan(r)).any():
        return float("inf"), 0.0
    finite = torch.isfinite(r)
    if finite.sum() == 0:
        return 0.0, 0.0
    if (finite & ~torch.isfinite(g) & torch.isfinite(w)).any():
        return float("inf"), 0.0  # mlc overflowed where eager and float64 did not
    scale = max(r[finite].abs().max().item(), 1.0)
    mine, theirs = finite & torch.isfinite(g), finite & torch.isfinite(w)
    return ((g - r)[mine].abs().max().item() / scale if mine.any() else 0.0,
            (w - r)[theirs].abs().max().item() / scale if theirs.any() else 0.0)


def _compare(program: Program, got: list, want: list, ref: list, n_outputs: int) -> str | None:
    """What is wrong with mlc's ``got`` (outputs, then gradients) against eager's and float64's.

    Gradients get ten times the outputs' tolerance: backward sums many terms (an expanded
    input's gradient is a sum over the expanded dim) whose cancellation eager's and float64's
    orders can hit exactly where a fused kernel's order does not.
    """
    if len(got) != len(want):
        return f"{len(got)} outputs, eager {len(want)}"
    for k, (g, w, r) in enumerate(zip(got, want, ref)):
        tol = TOL[program.dtype] * (1 if k < n_outputs else 10)
        what = f"output {k}" if k < n_outputs else f"the gradient of x{k - n_outputs}"
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"{what}: {g.dtype}{list(g.shape)}, eager {w.dtype}{list(w.shape)}"
        mlc_err, eager_err = _error(g, w, r)
        if mlc_err > 2 * eager_err + tol:
            return f"{what}: error {mlc_err:.3g} against float64 (eager's {eager_err:.3g}, tolerance {tol:g})"
    return None


def _call(program: Program, fn, xs, ref: bool = False):
    """Outputs, then (in training) the gradients of the inputs, as one flat list."""
    outs = _flat(fn(*xs))
    if not program.train:
        return [o.detach() for o in outs]
    loss = sum((o.double() if ref else o.float()).sum() * (k + 1) for k, o in enumerate(outs) if o.requires_grad)
    grads = []
    if isinstance(loss, torch.Tensor):
        grads = list(torch.autograd.grad(loss, xs, allow_unused=True))
    return [o.detach() for o in outs] + [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, xs)]


def run(program: Program, options: dict | None = None) -> Result:
    """Compile ``program`` with mlc and compare with eager (and float64)."""
    start = time.perf_counter()
    options = {"interpret": True, **(options or {})}
    fn = program.function()
    try:
        want = _call(program, fn, program.make_inputs())
        xs64 = [x.detach().double().requires_grad_(program.train) for x in program.make_inputs()]
        ref = _call(program, fn, xs64, ref=True)
    except Exception as e:  # noqa: BLE001 - eager itself fails: not a program to judge mlc by
        return Result(program, "invalid", f"eager: {type(e).__name__}: {e}")
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="mlc", options=options, dynamic=program.dynamic or None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = _call(program, compiled, program.make_inputs())
        except Exception as e:  # noqa: BLE001 - every crash is a finding
            detail = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()
            return Result(program, "crash", " | ".join(detail[-3:])[:600], time.perf_counter() - start)
        finally:
            torch._dynamo.reset()
    problem = _compare(program, got, want, ref, len(program.outputs))
    seen = sorted({str(w.message) for w in caught if str(w.message).startswith("mlc")})
    return Result(program, "wrong" if problem else "ok", problem or "", time.perf_counter() - start, seen)


def signature(result: Result) -> str:
    """What makes two failures the same: the outcome and, for a crash, the error without its numbers."""
    if result.outcome != "crash":
        return result.outcome
    return "crash: " + re.sub(r"\d+", "N", result.detail.split(" | ")[-1])[:120]


def shrink(result: Result, options: dict | None = None, budget: int = 60) -> Result:
    """A smaller program failing the same way (``signature``): ops dropped one by one, then
    training and ``dynamic`` turned off."""
    best, want = result, signature(result)
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        p = best.program
        for k in reversed(range(len(p.lines))):
            name = p.lines[k].split(" = ", 1)[0]
            lines = p.lines[:k] + p.lines[k + 1:]
            if any(name in _names(line.split(" = ", 1)[1]) for line in lines):
                continue  # used later: cannot drop alone
            outputs = tuple(o for o in p.outputs if o != name)
            if not outputs:
                outputs = (lines[-1].split(" = ", 1)[0],) if lines else ("x0",)
            candidate = replace(p, lines=lines, outputs=outputs)
            tries += 1
            r = run(candidate, options)
            if signature(r) == want:
                best, changed = r, True
                break
            if tries >= budget:
                break
        for flag in ("train", "dynamic"):
            if getattr(best.program, flag) and tries < budget:
                tries += 1
                r = run(replace(best.program, **{flag: False}), options)
                if signature(r) == want:
                    best, changed = r, True
    return best


def ir_text(program: Program) -> str:
    """The IR mlc receives for ``program`` (before any pass), for a report."""
    import mlc

    try:
        graphs = mlc.capture(program.function(), *program.make_inputs(), interpret=True,
                             dynamic=program.dynamic or None)
    except Exception as e:  # noqa: BLE001 - the report says why there is no IR
        return f"(no IR: {type(e).__name__}: {e})"
    return "\n\n".join(str(g) for g in graphs)
