"""The ``torch.compile`` entry: options, AOT autograd, FX -> IR -> passes -> runtime."""

from __future__ import annotations

import functools
import itertools
import warnings
from typing import Any, Callable

import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from .frontend.decompositions import decompositions
from .frontend.fx import ImportedGraph, UnsupportedGraph, import_fx
from .ir.graph import Graph
from .options import Options, make_options
from .passes import PIPELINE, PassRecord, run_passes
from .ir.types import TensorType
from .runtime.plan import Plan
from .runtime.reference import run_reference

_graph_ids = itertools.count()


class CompiledGraph:
    """What a compiled FX graph becomes: a callable taking its inputs as one list (boxed).

    It replays a launch plan of generated kernels when they can run (a GPU, or Triton's
    interpreter with ``interpret=True``); otherwise the reference executor runs the graph
    op by op, with a warning.
    """

    def __init__(self, graph: Graph, output_spec: tuple, passes: list[PassRecord], opts: Options):
        # An instance attribute: AOT autograd's wrappers copy __dict__, not class attributes.
        self._boxed_call = True
        self.graph = graph
        self.output_spec = output_spec
        self.passes = passes
        self.plan: Plan | None = None
        self.record = False  # explain() sets it to see the sizes of a call
        self.last_args = None
        if opts.interpret or _on_gpu(graph):
            self.plan = Plan(graph, interpret=opts.interpret)
        else:
            _warn_no_kernels()

    def __call__(self, args: list) -> list:
        self.last_args = args if self.record else None
        outs = self.plan(args) if self.plan is not None else run_reference(self.graph, args)
        return [outs[s] if isinstance(s, int) else s[1] for s in self.output_spec]


def _on_gpu(graph: Graph) -> bool:
    return any(isinstance(t, TensorType) and t.device.startswith("cuda") for n in graph.inputs for t in n.types)


@functools.lru_cache(maxsize=None)
def _warn_no_kernels():
    warnings.warn("mlc: graphs on CPU tensors run op by op through torch (the reference executor); "
                  "set MLC_INTERPRET=1 or options={'interpret': True} to run mlc's Triton kernels in "
                  "Triton's interpreter", stacklevel=3)


def compile_graph(gm: torch.fx.GraphModule, kind: str, opts: Options,
                  on_compile: Callable[[Graph, CompiledGraph], Any] | None = None) -> Callable:
    """Compile one ATen graph from AOT autograd (``kind`` is forward, backward or inference).

    ``on_compile(imported_graph, compiled)`` lets ``capture`` and ``explain`` watch.
    """
    name = f"{kind}_{next(_graph_ids)}"
    try:
        imported: ImportedGraph = import_fx(gm, name)
    except UnsupportedGraph as e:
        warnings.warn(f"mlc: graph {name} runs through PyTorch unchanged: {e}", stacklevel=2)
        return make_boxed_func(gm.forward)
    records: list[PassRecord] = []
    graph = run_passes(imported.graph, PIPELINE, verify_each=opts.verify, dump_dir=opts.dump_dir, log=records)
    compiled = CompiledGraph(graph, imported.output_spec, records, opts)
    if on_compile is not None:
        on_compile(imported.graph, compiled)
    return compiled


def mlc_backend(gm: torch.fx.GraphModule, example_inputs, mode: str | None = None, options: dict | None = None,
                _on_compile: Callable[[Graph, CompiledGraph], Any] | None = None):
    """The ``torch.compile`` backend ``"mlc"``. ``mode`` and ``options`` come from ``torch.compile``."""
    opts = make_options(mode, options)

    def compiler(kind):
        return lambda g, inputs: compile_graph(g, kind, opts, _on_compile)

    return aot_autograd(
        fw_compiler=compiler("forward"),
        bw_compiler=compiler("backward"),
        inference_compiler=compiler("inference"),
        decompositions=decompositions(),
    )(gm, example_inputs)


def register() -> None:
    """Make ``backend="mlc"`` known to ``torch.compile`` (the entry point does it too)."""
    from torch._dynamo.backends import registry

    # When torch loads the entry point it registers the backend itself after importing mlc.
    if "mlc" not in registry._COMPILER_FNS and registry._BACKENDS.get("mlc") is None:
        registry.register_backend(compiler_fn=mlc_backend, name="mlc")
