"""The launch plan: what a compiled graph does on every call.

Built once per compiled graph: each node becomes one step that reads and writes value slots.
Kernel steps allocate their outputs and launch; views are made with torch (no copies);
matmuls, fallbacks and the rest call their torch implementation. Per call, Python only
walks the step list.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import sympy
import torch
import triton

from .. import autotune as tuner
from ..codegen.compile import load_kernel, sizes_fn
from ..codegen.templates import PERSISTENT_LIMIT, KernelSource, generate, is_aten, template_of
from ..codegen.writer import without_triton_code
from ..ir.graph import Graph, Node, Value
from ..ir.ops import OPS
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


class KernelLaunch:
    """One generated kernel, ready to launch with its inputs and size symbols.

    Its launch config is chosen once per set of launch sizes (``config``): by the autotuner
    (``mlc.autotune``) at the ``autotune`` level, once per shape bucket. ``tunings`` holds the
    autotuner's record per bucket and ``tuning`` the latest one: the config chosen, and how many
    candidates survived pruning. In Triton's interpreter the launch always uses the interpreter's
    few large blocks; an explicit level ("default", "max") still tunes for the GPU target, for
    the record and the cache, while "auto" tunes only launches on a GPU.
    ``source`` skips code generation (a whole-graph cache hit brings it).
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
        self.configs: dict[tuple, tuple[dict, dict]] = {}

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
        outs = self._outputs(dims, inputs)
        meta, options = _split(cfg, interpret=False)
        return triton.testing.do_bench(lambda: self._run(inputs, outs, env, syms, sizes, meta, options))

    def _outputs(self, dims, inputs) -> list[torch.Tensor]:
        outs, pos = [], 0
        device = inputs[0].device if inputs else torch.device("cpu")
        for t in self.out_types:
            shape = tuple(int(d) for d in dims[pos:pos + t.rank])
            pos += t.rank
            outs.append(torch.empty(shape, dtype=t.dtype, device=device))
        return outs

    def call_sizes(self, env: dict) -> tuple[list, tuple, list]:
        """(symbol values, launch sizes, output dims) for a call's size symbols (``env``)."""
        syms = [env[s] for s in self.symbols]
        all_sizes = self.sizes(*syms)
        return syms, tuple(int(x) for x in all_sizes[:self.n_launch_sizes]), all_sizes[self.n_launch_sizes:]

    def __call__(self, inputs: Sequence[torch.Tensor], env: dict) -> list[torch.Tensor]:
        syms, sizes, dims = self.call_sizes(env)
        outs = self._outputs(dims, inputs)
        if all(o.numel() == 0 for o in outs):  # nothing to compute (one empty output alone is not that:
            return outs  # a reduction over an empty dim still writes its rows, 0 for a sum, nan for a mean)
        meta, options = self.config(sizes, env, inputs)
        return self._run(inputs, outs, env, syms, sizes, meta, options)

    def grid(self, sizes: tuple, meta: dict) -> tuple[int, ...] | None:
        """Program instances per axis for these launch sizes and meta-parameters (None: the
        autotuner chose to run this matmul region through ATen)."""
        return None if is_aten(meta) else self.template.grid(sizes, meta)

    def _run(self, inputs, outs, env, syms, sizes, meta, options) -> list[torch.Tensor]:
        if is_aten(meta):  # the autotuner's ATen choice for a matmul kernel
            results = run_reference(self.body, list(inputs), env)
            for o, r in zip(outs, results):
                o.copy_(r)
            return outs
        strides = [x.stride(d) for x, ds in zip(inputs, self.strided) for d in ds]
        grid = self.grid(sizes, meta)
        args = (*inputs, *outs, *syms, *self.template.size_args(sizes), *strides)
        if self.interpret:
            # Masked-off lanes compute too in the interpreter (log(0), 0/0): numpy's warnings
            # about them say nothing about the stored results.
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                self.fn[grid](*args, **meta)
        else:
            self.fn[grid](*args, **meta, **options)
        return outs


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
        self.launches: list[KernelLaunch | None] = []
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

        def kernel_step(values, env):
            args = [values[i] for i in ins]
            if index in self.failures:
                results = run_reference(body, args, env)
            else:
                try:
                    results = launch(args, env)
                except Exception as e:  # noqa: BLE001 - the safety net: a kernel that fails to launch
                    if self.strict:
                        raise
                    self._fail(index, body.name, "failed to launch", e)
                    results = run_reference(body, args, env)
            for o, r in zip(outs, results):
                values[o] = r

        return kernel_step

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
            return
        if node.op == "kernel":
            self.steps.append(self._kernel_step(node, ins, outs, interpret))
            return
        ref = OPS[node.op].ref
        static = {k: v for k, v in node.attrs.items() if not _has_symbols(v)}
        dynamic = {k: v for k, v in node.attrs.items() if _has_symbols(v)}
        single = len(outs) == 1

        def call_step(values, env):
            attrs = {**static, **{k: resolve(v, env) for k, v in dynamic.items()}} if dynamic else static
            r = ref(*(values[i] for i in ins), **attrs)
            if single:
                values[outs[0]] = r
            else:
                for o, x in zip(outs, r):
                    values[o] = x

        self.steps.append(call_step)

    def __call__(self, args: Sequence[Any]) -> list[Any]:
        values: list[Any] = [None] * self.num_slots
        values[:self.n_inputs] = args
        for o, c in self.constants:
            values[o] = c
        env = {s: (args[k] if d is None else args[k].shape[d]) for s, k, d in self.getters}
        for step, free in zip(self.steps, self.free_after):
            step(values, env)
            for s in free:
                values[s] = None
        return [values[o] for o in self.out_slots]
