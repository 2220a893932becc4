"""The launch plan: what a compiled graph does on every call.

Built once per compiled graph: each node becomes one step that reads and writes value slots.
Kernel steps allocate their outputs and launch; views are made with torch (no copies);
matmuls, fallbacks and the rest call their torch implementation. Per call, Python only
walks the step list.

A graph of static shapes goes one step further once its first call has decided every launch:
the plan writes itself out as one generated Python function (``straight_line``), a line per
step with its allocations, arguments and launch options bound as constants. Later calls run
that function: no step list, no slot list, no per-kernel lookups (what Inductor's generated
``call`` does too).
"""

from __future__ import annotations

import functools
import operator
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import sympy
import torch
import triton

from .. import autotune as tuner
from ..codegen.compile import load_kernel, sizes_fn
from ..codegen.templates import PERSISTENT_LIMIT, KernelSource, generate, is_aten, template_of
from ..codegen.writer import without_triton_code
from ..ir.graph import Graph, Node, Value
from ..ir.ops import OPS, Category
from ..ir.types import SymType, free_symbols
from ..ir.reference import _has_symbols, resolve, run_reference


def _symbol_getters(graph: Graph) -> list[tuple[sympy.Symbol, int, int | None]]:
    """Where each size symbol is read at run time: (symbol, input index, dim or None)."""
    found: dict[sympy.Symbol, tuple[int, int | None]] = {}
    for k, node in enumerate(graph.inputs):
        t = node.types[0]
        if isinstance(t, SymType):
            if isinstance(t.expr, sympy.Symbol):
                found.setdefault(t.expr, (k, None))
            continue
        for d, dim in enumerate(t.shape):
            if isinstance(dim, sympy.Symbol):
                found.setdefault(dim, (k, d))
    return [(s, k, d) for s, (k, d) in found.items()]


@functools.lru_cache(maxsize=None)
def _warn_unsupported(op: str):
    warnings.warn(f"mlc: '{op}' has no Triton code; mlc's torch reference runs it outside any kernel (a Python-level "
                  f"fallback)", stacklevel=4)


class LaunchAt(NamedTuple):
    """What one kernel's launch does at one concrete shape: decided once (``KernelLaunch.at``)
    and replayed by every call at that shape."""

    device: torch.device
    outs: tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...]  # (shape, strides, dtype) per output
    empty: bool  # every output is empty: nothing to compute
    aten: bool  # the autotuner's ATen choice: the region runs as torch ops
    scalars: tuple  # the size symbols and size arguments, after the tensors
    kwargs: dict  # what Triton's launch takes by keyword: grid, meta-parameters, launch options
    on_cpu: bool  # outputs come from Inductor's CPU allocator
    zeroed: tuple[int, ...]  # outputs zeroed before the launch (the kernel adds into them)


class KernelLaunch:
    """One generated kernel, ready to launch with its inputs and size symbols.

    Its launch config is chosen once per set of launch sizes (``config``): by the autotuner
    (``mlc.autotune``) at the ``autotune`` level, once per shape bucket. ``tunings`` holds the
    autotuner's record per bucket and ``tuning`` the latest one: the config chosen, and how many
    candidates survived pruning. In Triton's interpreter the launch always uses the interpreter's
    few large blocks; an explicit level ("default", "max") still tunes for the GPU target, for
    the record and the cache, while "auto" tunes only launches on a GPU.
    ``source`` skips code generation (a whole-graph cache hit brings it).

    Everything a call decides from its sizes (output shapes, config, grid, the size arguments)
    is decided once per concrete value of the size symbols and kept in ``shapes``: a call at a
    shape seen before only allocates its outputs and launches.
    """

    def __init__(self, body: Graph, interpret: bool, persistent_limit: int = PERSISTENT_LIMIT,
                 autotune: str = "off", source: KernelSource | None = None, remote_cache: str | None = None):
        self.source: KernelSource = source or generate(body, persistent_limit, interpret)
        self.template = template_of(self.source)
        self.fn = load_kernel(self.source, interpret)
        self.body = body
        self.interpret = interpret
        self.autotune = autotune
        self.remote_cache = remote_cache  # where tuning results are shared too (the option)
        self.tunings: dict[tuple, tuner.Tuning] = {}
        self.tuning: tuner.Tuning | None = None
        ks = self.source
        self.symbols = ks.symbols
        self.out_types = [v.type for v in body.outputs]
        self.n_launch_sizes = len(ks.launch)
        self.sizes = sizes_fn(list(ks.launch) + [d for t in self.out_types for d in t.shape], self.symbols)
        self.strided = ks.input_strided
        self.stride_dims = [(k, d) for k, ds in enumerate(self.strided) for d in ds]  # the strides passed, in order
        # The graph was compiled (and Dynamo guards) for one device: its kernels launch there.
        self.device = torch.device(next((v.type.device for v in body.outputs), "cpu"))
        self.configs: dict[tuple, tuple[dict, dict]] = {}
        self.shapes: dict[tuple, LaunchAt] = {}
        # Per output, the input it may be written into (``Template.in_place_targets``): the plan
        # puts the outputs it allows in ``in_place``; a scatter's other outputs start as copies.
        # ``targets``: per output, the input it starts from or is stored over (None: no output is).
        self.candidates = self.template.in_place_targets(ks)
        self.targets: list[int | None] | None = None
        if self.candidates is not None and self.template.starts_from_targets:
            self.targets = [c[0] for c in self.candidates]
        self.in_place: frozenset[int] = frozenset()
        self.zeroed = tuple(self.template.zeroed_outputs(ks))

    def config(self, sizes: tuple, env: dict | None = None, inputs=None) -> tuple[dict, dict]:
        """(constexpr meta-parameters, launch options) for these launch sizes, decided once per size.

        ``env`` binds the size symbols (the autotuner's cost model needs them); ``inputs`` are
        the tensors of the call, for timing configs on a GPU.
        """
        if sizes in self.configs:
            return self.configs[sizes]
        config, final = self._choose(sizes, env, inputs)
        cfg = _split(config, self.interpret)
        if final:  # else a call that binds the size symbols will tune
            self.configs[sizes] = cfg
        return cfg

    def _choose(self, sizes: tuple, env: dict | None, inputs) -> tuple[dict, bool]:
        """The config for these sizes, and whether it is final (not waiting for a call's sizes to tune)."""
        fixed = self.template.fixed_config(self.source, sizes, self.interpret)
        target = "interpreter" if self.interpret else "GPU"
        level = self.autotune
        if level == "auto":
            level = "off" if self.interpret else "default"
        env = {s: env[s] for s in self.symbols} if env is not None and all(s in env for s in self.symbols) else None
        reason = None
        if self.autotune == "off":
            reason = "off"
        elif level == "off":
            reason = ("skipped: interpret=True launches the interpreter's large blocks; autotune='auto' tunes "
                      "GPU launches only ('default' or 'max' rank GPU configs here too)")
        elif env is None and self.symbols:
            self.tuning = tuner.untuned(sizes, fixed, "skipped: the sizes of a call are needed", target)
            return fixed, False
        if reason is not None:
            self.tuning = tuner.untuned(sizes, fixed, reason, target)
            return fixed, True
        b = tuner.bucket(sizes)
        if b not in self.tunings:
            timer = None
            if not self.interpret and inputs and all(x.is_cuda for x in inputs if isinstance(x, torch.Tensor)):
                timer = functools.partial(self._time, inputs, env)
            self.tunings[b] = tuner.tune(self.source, self.body, sizes, env or {}, level, timer,
                                         remote=self.remote_cache)
        self.tuning = self.tunings[b]
        return (fixed if self.interpret else self.tuning.config), True

    def _time(self, inputs, env: dict, cfg: dict) -> float:
        """Milliseconds one config takes on the GPU (``triton.testing.do_bench``)."""
        syms, sizes, dims = self.call_sizes(env)
        meta, options = _split(cfg, interpret=False)
        at = self._launch_at(inputs[0].device, syms, sizes, self._out_specs(dims), meta, options)
        outs = _allocate(at)
        return triton.testing.do_bench(lambda: self._run(inputs, outs, env, at))

    def call_sizes(self, env: dict) -> tuple[list, tuple, list]:
        """(symbol values, launch sizes, output dims) for a call's size symbols (``env``)."""
        syms = [env[s] for s in self.symbols]
        all_sizes = self.sizes(*syms)
        return syms, tuple(int(x) for x in all_sizes[:self.n_launch_sizes]), all_sizes[self.n_launch_sizes:]

    def at(self, env: dict, inputs: Sequence[torch.Tensor], device: torch.device) -> LaunchAt:
        """The launch at the shape ``env`` binds, decided now and kept in ``shapes`` (once its config
        is final: an autotuner still waiting for a call's sizes decides again)."""
        syms, sizes, dims = self.call_sizes(env)
        outs = self._out_specs(dims)
        # Nothing to compute when every output is empty (one empty output alone is not that: a
        # reduction over an empty dim still writes its rows, 0 for a sum, nan for a mean).
        empty = all(0 in shape for shape, _, _ in outs)
        meta, options = ({}, {}) if empty else self.config(sizes, env, inputs)
        at = self._launch_at(device, syms, sizes, outs, meta, options)
        if empty or sizes in self.configs:
            self.shapes[tuple(syms)] = at
        return at

    def _out_specs(self, dims) -> tuple:
        outs, pos = [], 0
        for t in self.out_types:
            shape = tuple(int(d) for d in dims[pos:pos + t.rank])
            pos += t.rank
            outs.append((shape, _contiguous_strides(shape), t.dtype))
        return tuple(outs)

    def _launch_at(self, device, syms, sizes: tuple, outs: tuple, meta: dict, options: dict) -> LaunchAt:
        empty = all(0 in shape for shape, _, _ in outs)
        grid = None if empty else self.grid(sizes, meta)
        scalars = (*(int(s) for s in syms), *self.template.size_args(sizes))
        return LaunchAt(device, outs, empty, is_aten(meta), scalars, {"grid": grid, "warmup": False, **meta, **options},
                        device.type == "cpu" and _empty_strided_cpu is not None, () if empty else self.zeroed)

    def __call__(self, inputs: Sequence[torch.Tensor], env: dict) -> list[torch.Tensor]:
        # The hot path of every call: kept to a lookup, the allocation and the launch.
        at = self.shapes.get(tuple([env[s] for s in self.symbols]) if self.symbols else ())
        if at is None:
            at = self.at(env, inputs, self.device)
        outs = _allocate(at)
        if self.targets is not None:
            self._start_from(inputs, outs)
        if at.empty:
            return outs
        return self._run(inputs, outs, env, at)

    def _start_from(self, inputs, outs: list[torch.Tensor]):
        for k, j in enumerate(self.targets):
            if j is None:
                continue
            if k in self.in_place and inputs[j].is_contiguous():
                outs[k] = inputs[j]  # written in place (a scatter: only the indexed slices move)
            elif self.template.starts_from_targets:
                outs[k].copy_(inputs[j])

    def grid(self, sizes: tuple, meta: dict) -> tuple[int, ...] | None:
        """Program instances per axis for these launch sizes and meta-parameters (None: the
        autotuner chose to run this matmul region through ATen)."""
        return None if is_aten(meta) else self.template.grid(sizes, meta)

    def _run(self, inputs, outs, env, at: LaunchAt) -> list[torch.Tensor]:
        if at.aten:  # the autotuner's ATen choice for a matmul kernel
            results = run_reference(self.body, list(inputs), env)
            for o, r in zip(outs, results):
                o.copy_(r)
            return outs
        if self.stride_dims:
            args = (*inputs, *outs, *at.scalars, *[inputs[k].stride(d) for k, d in self.stride_dims])
        else:
            args = (*inputs, *outs, *at.scalars)
        if self.interpret:
            _interpret(self.fn, args, at.kwargs)
        else:
            self.fn.run(*args, **at.kwargs)  # what ``fn[grid](...)`` calls, without the proxy it builds
        return outs


# Masked-off lanes compute too in the interpreter (log(0), 0/0): numpy's warnings about them
# say nothing about the stored results. (The decorator form keeps no state on the errstate.)
@np.errstate(divide="ignore", invalid="ignore", over="ignore")
def _interpret(fn, args: tuple, kwargs: dict):
    fn.run(*args, **kwargs)


# Inductor's allocator for CPU outputs: torch.empty_strided without the Python argument parsing.
_empty_strided_cpu = getattr(torch._C._dynamo.guards, "_empty_strided_cpu", None)


def _allocate(at: LaunchAt) -> list[torch.Tensor]:
    if at.on_cpu:
        outs = [_empty_strided_cpu(shape, strides, dtype) for shape, strides, dtype in at.outs]
    else:
        outs = [torch.empty_strided(shape, strides, dtype=dtype, device=at.device) for shape, strides, dtype in at.outs]
    for k in at.zeroed:
        outs[k].zero_()
    return outs


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def _reader(slots: list[int]) -> Callable[[list], tuple]:
    """A function from the value slots to the tuple of the values in ``slots`` (one C call)."""
    if len(slots) > 1:
        return operator.itemgetter(*slots)
    return (lambda values: (values[slots[0]],)) if slots else (lambda values: ())


def _split(cfg: dict, interpret: bool) -> tuple[dict, dict]:
    """A config as (constexprs, launch options); the interpreter takes no launch options."""
    options = {} if interpret else {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
    return {k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")}, options


class Plan:
    """A graph turned into a list of steps over value slots.

    ``autotune`` is the option's level for its kernels; ``sources`` the kernels' generated
    sources in order, when known (a whole-graph cache hit), so that nothing is generated again.
    ``launches`` has one entry per kernel node (None where the kernel could not be built);
    ``failures`` maps the position (in ``launches``) of each kernel the safety net caught to what
    went wrong (``strict`` turns the
    net off: see ``_kernel_step``).
    """

    def __init__(self, graph: Graph, interpret: bool, autotune: str = "off",
                 sources: Sequence[KernelSource] | None = None, strict: bool = False,
                 remote_cache: str | None = None):
        self.graph = graph
        self.autotune = autotune
        self.remote_cache = remote_cache
        self.strict = strict
        self.failures: dict[int, str] = {}
        self._sources = iter(sources or ())
        self.getters = _symbol_getters(graph)
        slot: dict[Value, int] = {}
        for node in graph.inputs:
            slot[node.out] = len(slot)
        self.steps: list[Callable[[list, dict], None]] = []
        # Per step, what it does, for the straight-line call: ("kernel", launch index, ins, outs)
        # or ("call", torch function with its attributes bound, ins, outs); None: no straight line.
        self.ops: list[tuple | None] = []
        self.launches: list[KernelLaunch | None] = []
        self.kernel_nodes: list[tuple[Node, list[int]]] = []  # per launch: its node and input slots
        self.constants: list[tuple[int, Any]] = []
        for node in graph.nodes:
            for v in node.results:
                slot[v] = len(slot)
            self._add_step(node, slot, interpret)
        self.num_slots = len(slot)
        self.n_inputs = len(graph.inputs)
        self.out_slots = [slot[v] for v in graph.outputs]
        # After each step, the slots nothing later reads: dropped so memory is freed early.
        last_use: dict[int, int] = {}
        for i, node in enumerate(graph.nodes):
            for v in node.inputs:
                last_use[slot[v]] = i
        keep = set(self.out_slots)
        self.free_after: list[list[int]] = [[] for _ in graph.nodes]
        for s, i in last_use.items():
            if s not in keep and s >= self.n_inputs:
                self.free_after[i].append(s)
        # Constants take no step (they are put in place before the first).
        self.free_after = [f for n, f in zip(graph.nodes, self.free_after) if n.op != "constant"]
        assert len(self.free_after) == len(self.steps)
        # Only an op with no Triton code is named here. Any other op outside a kernel was left
        # there by fusion (a template that cannot write it, a cycle, the inlining budget, or
        # optimization fuel), and the graph's `not fused:`/`not a kernel:` notes say why.
        for op in without_triton_code(graph):
            _warn_unsupported(op)
        # The value slots with the constants in place, copied by every call.
        self._slots: list[Any] = [None] * self.num_slots
        for o, c in self.constants:
            self._slots[o] = c
        self._program = list(zip(self.steps, self.free_after))
        # What a call runs: the step list (``run_steps``), until ``straight_line`` replaces it.
        self.call: Callable[[Sequence[Any]], list[Any]] = self.run_steps
        self.source: str | None = None  # the straight-line call's Python source, once written

    def _kernel_step(self, node: Node, ins: list[int], outs: list[int], interpret: bool):
        """The step of a kernel node: its launch, behind the safety net.

        A kernel that fails to generate or to load, or whose launch raises, is mlc's bug, never
        the user's: unless ``strict``, its region then runs through the reference executor from
        that call on, with one warning naming the kernel and the error (``failures`` keeps it
        for ``explain``). ``strict`` lets the error through, so that tests see every bug.
        """
        body: Graph = node.attrs["body"]
        source = next(self._sources, None)
        index = len(self.launches)
        try:
            launch = KernelLaunch(body, interpret, autotune=self.autotune, source=source,
                                  remote_cache=self.remote_cache)
        except Exception as e:  # noqa: BLE001 - the safety net: any failure of code generation
            if self.strict:
                raise
            self._fail(index, body.name, "could not be generated or loaded", e)
            launch = None
        self.launches.append(launch)
        self.kernel_nodes.append((node, ins))

        read = _reader(ins)

        def kernel_step(values, env):
            args = read(values)
            if index in self.failures:
                results = run_reference(body, args, env)
            else:
                try:
                    results = launch(args, env)
                except Exception as e:  # noqa: BLE001 - the safety net: a kernel that fails to launch
                    results = self._fall_back(index, e, args, env)
            for o, r in zip(outs, results):
                values[o] = r

        self.ops.append(("kernel", index, ins, outs))
        return kernel_step

    def _fall_back(self, index: int, error: Exception, args, env: dict) -> list:
        """A kernel's launch raised: unless ``strict``, warn, run its region through the reference
        executor now and at every later call (the step list again: ``failures`` holds it)."""
        if self.strict:
            raise error
        body: Graph = self.kernel_nodes[index][0].attrs["body"]
        self._fail(index, body.name, "failed to launch", error)
        self.call = self.run_steps
        return run_reference(body, list(args), env)

    def _fail(self, index: int, name: str, what: str, error: Exception):
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        self.failures[index] = f"{what}: {message}"
        warnings.warn(f"mlc: kernel {name} {what} ({message[:300]}); its region runs through the reference "
                      f"executor instead. This is a bug in mlc: please report it (strict=True or MLC_STRICT=1 "
                      f"raises the error instead)", stacklevel=4)

    def _add_step(self, node: Node, slot: dict[Value, int], interpret: bool):
        ins = [slot[v] for v in node.inputs]
        outs = [slot[v] for v in node.results]
        if node.op == "constant":
            self.constants.append((outs[0], self.graph.constants[node.name]))
            return
        if node.op == "symint":
            expr = node.types[0].expr
            f = sizes_fn([expr], sorted(free_symbols([expr]), key=str))
            syms = sorted(free_symbols([expr]), key=str)

            def sym_step(values, env, o=outs[0]):
                values[o] = int(f(*(env[s] for s in syms))[0])

            self.steps.append(sym_step)
            self.ops.append(None)
            return
        if node.op == "kernel":
            self.steps.append(self._kernel_step(node, ins, outs, interpret))
            return
        ref = OPS[node.op].ref
        static = {k: v for k, v in node.attrs.items() if not _has_symbols(v)}
        dynamic = {k: v for k, v in node.attrs.items() if _has_symbols(v)}
        single = len(outs) == 1

        resolved: dict[tuple, dict] = {}  # the attributes at each shape, substituted once (no sympy per call)

        def call_step(values, env):
            attrs = static
            if dynamic:
                key = tuple(env.values())  # the plan binds the same symbols in the same order on every call
                attrs = resolved.get(key)
                if attrs is None:
                    attrs = resolved[key] = {**static, **{k: resolve(v, env) for k, v in dynamic.items()}}
            r = ref(*(values[i] for i in ins), **attrs)
            if single:
                values[outs[0]] = r
            else:
                for o, x in zip(outs, r):
                    values[o] = x

        self.steps.append(call_step)
        self.ops.append(None if dynamic else ("call", functools.partial(ref, **static), ins, outs))

    def write_in_place(self, writable: dict[int, int]):
        """Let kernels write graph inputs in place: ``writable`` maps an input's position
        to the graph output that the caller copies into it after the call (AOT autograd's
        input-mutation epilogue). A kernel whose output is that output and whose destination is
        that input writes into the input's own buffer when nothing after it in the graph reads
        the input (directly or through a view) and no graph output is the input: then nobody can
        see the old values, and the epilogue's copy is a copy of a tensor onto itself (none)."""
        graph = self.graph
        inputs = {n: k for k, n in enumerate(graph.inputs)}
        outputs: dict[Value, list[int]] = {}
        for o, v in enumerate(graph.outputs):
            outputs.setdefault(v, []).append(o)
        root: dict[Value, Node] = {n.out: n for n in graph.inputs}  # the input a value views, if any
        read_at: dict[Node, int] = {}  # each input: the last node position reading it or a view of it
        for pos, node in enumerate(graph.nodes):
            for v in node.inputs:
                if v in root:
                    read_at[root[v]] = pos
            if OPS[node.op].category is Category.VIEW and node.inputs and node.inputs[0] in root:
                root[node.out] = root[node.inputs[0]]
        returned = {root[v] for v in graph.outputs if v in root}
        position = {n: p for p, n in enumerate(graph.nodes)}
        for launch, (node, ins) in zip(self.launches, self.kernel_nodes):
            if launch is None or launch.candidates is None:
                continue
            targets = list(launch.targets or [None] * len(launch.candidates))
            allowed = set()
            for k, candidates in enumerate(launch.candidates):
                for j in candidates:
                    dst = graph.inputs[ins[j]] if ins[j] < self.n_inputs else None
                    if dst is None or dst in returned or read_at.get(dst, -1) > position[node] \
                            or j in targets[:k] + targets[k + 1:]:
                        continue
                    if writable.get(inputs[dst]) in outputs.get(node.results[k], ()):
                        targets[k] = j
                        allowed.add(k)
                        break
            if allowed or launch.targets is not None:
                launch.targets, launch.in_place = targets, frozenset(allowed)
        if self.source is not None:  # a straight-line call written before: write it again
            self.straighten()

    def __call__(self, args: Sequence[Any]) -> list[Any]:
        return self.call(args)

    def run_steps(self, args: Sequence[Any]) -> list[Any]:
        """One call, step by step (every call of a graph with size symbols; the first of others)."""
        values = self._slots.copy()
        values[:self.n_inputs] = args
        env = {s: (args[k] if d is None else args[k].shape[d]) for s, k, d in self.getters} if self.getters else {}
        for step, free in self._program:
            step(values, env)
            for s in free:
                values[s] = None
        if self.source is None and not self.getters and not self.failures:  # once every launch is decided
            self.straighten()
        return [values[o] for o in self.out_slots]

    def straighten(self):
        """Replace the step list by the straight-line call when that is possible: static shapes,
        every launch decided (``KernelLaunch.shapes``) and none failed. Also what to call after
        changing a launch (its ``fn`` or ``interpret``): the call is written again from them."""
        if self.getters or self.failures or None in self.ops or any(
                launch is None or () not in launch.shapes for launch in self.launches):
            self.call, self.source = self.run_steps, None
            return
        self.source, scope = straight_line(self)
        exec(compile(self.source, f"<mlc plan {self.graph.name}>", "exec"), scope)  # noqa: S102 - our own code
        self.call = scope["call"]


def straight_line(plan: Plan) -> tuple[str, dict]:
    """The Python source of ``plan``'s call at its one shape, and the names it uses.

    Slot ``k`` is the local ``sk``; a kernel's launch is written out (allocations, the arguments
    in order, its launch options as one bound dict) unless it starts from or writes an input, is
    empty, or runs through ATen: then its ``KernelLaunch`` runs it. Every launch keeps the safety
    net: an exception runs its region through the reference executor (``Plan._fall_back``).
    """
    scope: dict[str, Any] = {"_interpret": _interpret, "_empty_cpu": _empty_strided_cpu, "_empty": torch.empty_strided}
    for o, c in plan.constants:
        scope[f"s{o}"] = c
    names = lambda slots: ", ".join(f"s{k}" for k in slots)  # noqa: E731
    unpack = lambda slots: names(slots) + ("," if len(slots) == 1 else "")  # noqa: E731
    lines = ["def call(args):"]
    if plan.n_inputs:
        lines.append(f"    {unpack(range(plan.n_inputs))} = args")
    constant = {o for o, _ in plan.constants}
    for i, ((kind, what, ins, outs), free) in enumerate(zip(plan.ops, plan.free_after)):
        if kind == "call":
            scope[f"f{i}"] = what
            if len(outs) == 1:
                lines.append(f"    s{outs[0]} = f{i}({names(ins)})")
            else:
                lines.append(f"    {unpack(outs)} = f{i}({names(ins)})[:{len(outs)}]")
        else:
            launch: KernelLaunch = plan.launches[what]
            at = launch.shapes[()]
            scope[f"fail{i}"] = functools.partial(plan._fall_back, what)
            lines.append("    try:")
            if launch.targets is not None or at.empty or at.aten:
                scope[f"k{i}"] = launch
                lines.append(f"        {unpack(outs)} = k{i}(({unpack(ins)}), {{}})")
            else:
                scope[f"device{i}"] = at.device
                for o, spec in zip(outs, at.outs):
                    scope[f"o{o}"] = spec  # (shape, strides, dtype)
                    alloc = f"_empty_cpu(*o{o})" if at.on_cpu else f"_empty(*o{o}[:2], dtype=o{o}[2], device=device{i})"
                    lines.append(f"        s{o} = {alloc}")
                for k in at.zeroed:
                    lines.append(f"        s{outs[k]}.zero_()")
                args = [f"s{k}" for k in (*ins, *outs)] + [repr(int(x)) for x in at.scalars]
                args += [f"s{ins[k]}.stride({d})" for k, d in launch.stride_dims]
                scope[f"fn{i}"], scope[f"kw{i}"] = launch.fn, at.kwargs
                if launch.interpret:
                    lines.append(f"        _interpret(fn{i}, ({', '.join(args)},), kw{i})")
                else:
                    lines.append(f"        fn{i}.run({', '.join(args)}, **kw{i})")
            lines.append("    except Exception as e:  # the safety net (Plan._fall_back)")
            lines.append(f"        {unpack(outs)} = fail{i}(e, ({unpack(ins)}), {{}})")
        dropped = [k for k in free if k not in constant]
        if dropped:
            lines.append(f"    del {names(dropped)}")
    lines.append(f"    return [{names(plan.out_slots)}]")
    return "\n".join(lines) + "\n", scope
