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

from ..codegen.compile import load_kernel, sizes_fn
from ..codegen.config import PERSISTENT_LIMIT, launch_config, matmul_config, operand_itemsize
from ..codegen.kernel import KernelSource, generate
from ..ir.graph import Graph, Node, Value
from ..ir.ops import OPS, Category
from ..ir.types import SymType, free_symbols
from .reference import _has_symbols, resolve


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
    warnings.warn(f"mlc: '{op}' has no Triton code; it runs through torch outside any kernel", stacklevel=4)


class KernelLaunch:
    """One generated kernel, ready to launch with its inputs and size symbols."""

    def __init__(self, body: Graph, interpret: bool, persistent_limit: int = PERSISTENT_LIMIT):
        self.source: KernelSource = generate(body, persistent_limit, interpret)
        self.fn = load_kernel(self.source, interpret)
        self.interpret = interpret
        ks = self.source
        self.symbols = ks.symbols
        self.out_types = [v.type for v in body.outputs]
        # rnumel 0 is a reduction over an empty dim (a sum of nothing is 0), not "no rnumel".
        launch_sizes = list(ks.mnk) if ks.kind == "matmul" else [ks.numel, 1 if ks.rnumel is None else ks.rnumel]
        self.n_launch_sizes = len(launch_sizes)
        self.sizes = sizes_fn(launch_sizes + [d for t in self.out_types for d in t.shape], self.symbols)
        self.strided = ks.input_strided
        self.configs: dict[tuple, tuple[dict, dict]] = {}

    def _config(self, sizes: tuple) -> tuple[dict, dict]:
        """(constexpr meta-parameters, launch options) for these sizes, decided once per size."""
        if sizes not in self.configs:
            if self.source.kind == "matmul":
                cfg = matmul_config(*sizes[:3], self.interpret, operand_itemsize(self.source))
            else:
                cfg = launch_config(self.source, sizes[0], sizes[1], self.interpret)
            options = {} if self.interpret else {k: cfg[k] for k in ("num_warps", "num_stages") if k in cfg}
            self.configs[sizes] = ({k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")}, options)
        return self.configs[sizes]

    def __call__(self, inputs: Sequence[torch.Tensor], env: dict) -> list[torch.Tensor]:
        syms = [env[s] for s in self.symbols]
        all_sizes = self.sizes(*syms)
        sizes, dims = tuple(int(x) for x in all_sizes[:self.n_launch_sizes]), all_sizes[self.n_launch_sizes:]
        outs, pos = [], 0
        device = inputs[0].device if inputs else torch.device("cpu")
        for t in self.out_types:
            shape = tuple(int(d) for d in dims[pos:pos + t.rank])
            pos += t.rank
            outs.append(torch.empty(shape, dtype=t.dtype, device=device))
        if any(o.numel() == 0 for o in outs):
            return outs
        strides = [x.stride(d) for x, ds in zip(inputs, self.strided) for d in ds]
        meta, options = self._config(sizes)
        kind = self.source.kind
        if kind == "matmul":
            m, n, k, batch = sizes
            grid = (triton.cdiv(m, meta["BLOCK_SIZE_M"]) * triton.cdiv(n, meta["BLOCK_SIZE_N"]), batch)
            extra = [m, n, k]
        else:
            grid = (triton.cdiv(sizes[0], meta.get("BLOCK_SIZE") or meta["XBLOCK"]),)
            extra = [sizes[0], sizes[1]] if kind == "reduction" else [sizes[0]]
        args = (*inputs, *outs, *syms, *extra, *strides)
        if self.interpret:
            # Masked-off lanes compute too in the interpreter (log(0), 0/0): numpy's warnings
            # about them say nothing about the stored results.
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                self.fn[grid](*args, **meta)
        else:
            self.fn[grid](*args, **meta, **options)
        return outs


class Plan:
    """A graph turned into a list of steps over value slots."""

    def __init__(self, graph: Graph, interpret: bool):
        self.graph = graph
        self.getters = _symbol_getters(graph)
        slot: dict[Value, int] = {}
        for node in graph.inputs:
            slot[node.out] = len(slot)
        self.steps: list[Callable[[list, dict], None]] = []
        self.launches: list[KernelLaunch] = []
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
        unsupported = sorted({n.op for n in graph.nodes if OPS[n.op].category in (Category.POINTWISE,
                                                                                     Category.REDUCTION)})
        for op in unsupported:
            _warn_unsupported(op)

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
            launch = KernelLaunch(node.attrs["body"], interpret)
            self.launches.append(launch)

            def kernel_step(values, env):
                results = launch([values[i] for i in ins], env)
                for o, r in zip(outs, results):
                    values[o] = r

            self.steps.append(kernel_step)
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
