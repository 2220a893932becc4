"""The ``torch.compile`` entry: options, AOT autograd, FX -> IR -> passes -> runtime."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import re
import time
import warnings
from typing import Any, Callable

import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd
from torch._subclasses.fake_tensor import unset_fake_temporarily

from . import cache
from .logs import output_code_loggers, trace, tracing
from .frontend.decompositions import decompositions
from .frontend.fx import ImportedGraph, UnsupportedGraph, import_fx
from .frontend.partition import SavedActivations, partition
from .ir import fuel
from .ir.graph import Graph
from .options import CUDA_GRAPH_MODES, Options, cuda_graphs_note, make_options, settings
from .passes import PassRecord, build_pipeline, freeze, run_passes
from .ir.types import TensorType
from .runtime.cuda_graphs import CUDAGraphPlan
from .runtime.plan import Plan
from .ir.reference import run_reference

_graph_ids = itertools.count()
log = logging.getLogger(__name__)
_code_logs = output_code_loggers(__name__)


class CompiledGraph:
    """What a compiled FX graph becomes: a callable taking its inputs as one list (boxed).

    It replays a launch plan of generated kernels when they can run (a GPU, or Triton's
    interpreter with ``interpret=True``); otherwise the reference executor runs the graph
    op by op, with a warning.

    ``cache`` says whether the whole-graph cache held it: ``"hit"``, ``"hit (remote)"`` (from the
    ``remote_cache``) or ``"miss: <why>"``; ``compile_seconds`` is the time mlc spent on it (after
    AOT autograd); ``saved``, for a forward graph, what it saves for the backward
    (``frontend.partition.SavedActivations``).
    """

    def __init__(self, graph: Graph, output_spec: tuple, passes: list[PassRecord], opts: Options,
                 sources: list | None = None):
        # An instance attribute: AOT autograd's wrappers copy __dict__, not class attributes.
        self._boxed_call = True
        self.graph = graph
        self.output_spec = output_spec
        self._plain_outputs = output_spec == tuple(range(len(graph.outputs)))  # the graph's outputs, in order
        self.passes = passes
        self.plan: Plan | None = None
        self.runner = None  # what runs the plan: the plan itself, or its CUDA graphs (mode="reduce-overhead")
        self.record = False  # explain() sets it to see the sizes of a call
        self.last_args = None
        self.cache = "miss: not looked up"
        self.compile_seconds = 0.0
        self.saved: SavedActivations | None = None
        if opts.interpret or _on_gpu(graph):
            self.plan = Plan(graph, interpret=opts.interpret, autotune=opts.autotune, sources=sources,
                             strict=opts.strict, remote_cache=opts.remote_cache)
            self.runner = self.plan
            if opts.mode in CUDA_GRAPH_MODES and not opts.interpret and _on_gpu(graph):
                self.runner = CUDAGraphPlan(self.plan)  # replays the plan's launches from CUDA graphs
        else:
            _warn_no_kernels()

    def __call__(self, args: list) -> list:
        if self.record:
            self.last_args = args
        outs = self.runner(args) if self.plan is not None else run_reference(self.graph, args)
        if self._plain_outputs:  # the usual case
            return outs
        return [outs[s] if isinstance(s, int) else s[1] for s in self.output_spec]


def _mutated_inputs(gm: torch.fx.GraphModule, output_spec: tuple, graph: Graph) -> dict[int, int]:
    """The inputs of ``graph`` that AOT autograd overwrites after the call, with the position of
    the graph output it copies into each (its input-mutation epilogue: a module buffer written
    by ``index_copy_``, say).

    AOT autograd returns the new value of each mutated input first among the graph's outputs
    and then runs ``input.copy_(new)``, which does nothing when ``new`` is that input itself.
    So a kernel may write such an input in place, when nothing else reads it: the plan decides
    (``Plan.write_in_place``).
    """
    context = torch._guards.TracingContext.try_get()
    meta = context.fw_metadata if context is not None else None
    if meta is None:
        return {}
    placeholders = [n.name for n in gm.graph.find_nodes(op="placeholder")]
    if len(placeholders) != len(meta.input_info):  # deduplicated or synthetic inputs: positions differ
        return {}
    position = {n.name: k for k, n in enumerate(graph.inputs)}
    out = {}
    for j, i in enumerate(meta.mutated_inp_runtime_indices):
        info = meta.input_info[i]
        if not info.mutates_data or info.mutates_metadata or info.mutates_storage_metadata:
            continue
        if i < len(placeholders) and placeholders[i] in position and j < len(output_spec) \
                and isinstance(output_spec[j], int):
            out[position[placeholders[i]]] = output_spec[j]
    return out


def _on_gpu(graph: Graph) -> bool:
    return any(isinstance(t, TensorType) and t.device.startswith("cuda") for n in graph.inputs for t in n.types)


@functools.lru_cache(maxsize=None)
def _warn_no_kernels():
    warnings.warn("mlc: graphs on CPU tensors run op by op through torch (the reference executor); "
                  "set MLC_INTERPRET=1 or options={'interpret': True} to run mlc's Triton kernels in "
                  "Triton's interpreter", stacklevel=3)


def compile_graph(gm: torch.fx.GraphModule, kind: str, opts: Options,
                  on_compile: Callable[[Graph, CompiledGraph], Any] | None = None,
                  frozen: dict[int, tuple[str, torch.Tensor]] | None = None) -> Callable:
    """Compile one ATen graph from AOT autograd (``kind`` is forward, backward or inference).

    ``on_compile(imported_graph, compiled)`` lets ``capture`` and ``explain`` watch.
    ``frozen`` maps input positions to the (name, tensor) that becomes a constant there; the
    compiled graph then takes the other inputs only.
    """
    start = time.perf_counter()
    name = f"{kind}_{next(_graph_ids)}"
    try:
        imported: ImportedGraph = import_fx(gm, name)
    except UnsupportedGraph as e:
        warnings.warn(f"mlc: graph {name} runs through PyTorch unchanged: {e}", stacklevel=2)
        return make_boxed_func(gm.forward)
    log.info("graph %s: received from AOT autograd, %d ATen nodes -> %d mlc nodes%s", name,
             len(gm.graph.nodes), len(imported.graph.nodes), f", {len(frozen)} inputs frozen" if frozen else "")
    records: list[PassRecord] = []
    graph = freeze(imported.graph, frozen) if frozen else imported.graph
    if opts.quantize and not frozen:
        why = "training graphs are never frozen" if kind != "inference" else "nothing in it was frozen"
        warnings.warn(f"mlc: quantize={opts.quantize!r} leaves graph {name} unquantized: it needs frozen "
                      f"weights, and {why}", stacklevel=2)
    compiled = _compile_cached(graph, imported.output_spec, name, opts, records)
    if compiled.plan is not None and kind != "backward":
        compiled.plan.write_in_place(_mutated_inputs(gm, imported.output_spec, graph))
    compiled.saved = gm.meta.get("mlc_saved")  # a forward graph: what it saves for the backward
    compiled.compile_seconds = time.perf_counter() - start
    _log_compiled(compiled, opts.interpret)
    if tracing():
        _trace_compiled(compiled, _size_hints(gm))
    if on_compile is not None:
        on_compile(imported.graph, compiled)
    return compiled


def _compile_cached(graph: Graph, output_spec: tuple, name: str, opts: Options,
                    records: list[PassRecord]) -> CompiledGraph:
    """The passes and the plan, or both from the whole-graph cache (``mlc.cache``)."""
    if not opts.cache or opts.dump_dir or opts.fuel is not None or fuel.active():
        why = ("cache=False" if not opts.cache else "dump_dir is set: the passes run to write their dumps"
               if opts.dump_dir else "an optimization fuel budget is set: the passes run to spend it")
        status, key = f"miss: disabled ({why})", None
    else:
        try:
            key, graph_key, key_options = cache.graph_keys(graph, output_spec, opts)
        except (TypeError, RuntimeError) as e:  # a constant that cannot be hashed (not a plain tensor)
            status, key = f"miss: not cacheable ({type(e).__name__}: {e})", None
        else:
            hit, status = cache.load_graph(key, graph_key, key_options, name, remote=opts.remote_cache)
            if hit is not None:
                compiled = CompiledGraph(hit.graph, hit.output_spec, hit.passes, opts, sources=hit.sources)
                compiled.cache = status
                return compiled
    with fuel.budget(opts.fuel) if opts.fuel is not None else contextlib.nullcontext():
        graph = run_passes(graph, build_pipeline(opts), verify_each=opts.verify, dump_dir=opts.dump_dir,
                           log=records)
    compiled = CompiledGraph(graph, output_spec, records, opts)
    if key is not None:
        launches = compiled.plan.launches if compiled.plan is not None else []
        # A kernel the safety net caught has no source: the entry then keeps none, and a hit generates again.
        sources = [launch.source for launch in launches] if None not in launches else []
        problem = cache.store_graph(key, graph_key, key_options,
                                    cache.CachedGraph(graph, output_spec, records, sources), remote=opts.remote_cache)
        if problem:
            status += f" (not cached: {problem})"
    compiled.cache = status
    return compiled


def _log_compiled(compiled: CompiledGraph, interpret: bool):
    """What mlc decided for one graph, as log records (``TORCH_LOGS="+mlc"``), and the generated
    kernels (``output_code``, ``mlc_output_code``)."""
    g = compiled.graph
    kernels = [n for n in g.nodes if n.op == "kernel"]
    fallbacks = sorted({n.attrs["target"] for n in g.nodes if n.op == "aten"})
    runs = ("kernels in Triton's interpreter" if compiled.plan is not None and interpret
            else "kernels on the GPU" if compiled.plan is not None else "op by op (the reference executor)")
    log.info("graph %s: compiled in %.0f ms (cache: %s): %d kernel(s), %d node(s), runs %s", g.name,
             compiled.compile_seconds * 1e3, compiled.cache, len(kernels), len(g.nodes), runs)
    if fallbacks:
        log.info("graph %s: runs through ATen: %s", g.name, ", ".join(fallbacks))
    if log.isEnabledFor(logging.DEBUG):
        from .report import fused_ops

        for n in kernels:
            log.debug("graph %s: fused %s: %s", g.name, n.attrs["body"].name, " + ".join(fused_ops(n.attrs["body"])))
        for note in g.notes:
            log.debug("graph %s: %s", g.name, note)
    launches = compiled.plan.launches if compiled.plan is not None else []
    for code_log in _code_logs:
        if code_log.isEnabledFor(logging.DEBUG):
            for launch in launches:
                if launch is not None:
                    code_log.debug("mlc kernel %s (graph %s, %s template):\n%s", launch.source.name, g.name,
                                   launch.source.kind, launch.source.source)


def _trace_compiled(compiled: CompiledGraph, sizes: dict):
    """``TORCH_TRACE`` artifacts, for tlparse: the IR after each pass, each kernel's source and
    the graph's part of the ``mlc.explain`` summary (costs at ``sizes``, the sizes traced)."""
    g = compiled.graph
    for i, record in enumerate(compiled.passes):
        trace(f"mlc_ir_{g.name}_{i:02d}_{record.name}",
              lambda r=record: f"// after pass: {r.name} ({r.ms:.3f} ms)\n{r.ir}\n")
    from .cost import Cost
    from .report import Report
    from .report.build import report_graph

    try:
        graph_report, kernel_reports = report_graph(compiled, sizes, configs=False)
    except Exception as e:  # noqa: BLE001 - a debugging aid must not fail the compile it describes
        log.warning("graph %s: no mlc_explain trace artifact: %s: %s", g.name, type(e).__name__, e)
        return
    for k, kr in enumerate(kernel_reports):
        trace(f"mlc_kernel_{g.name}_{k}_{kr.name}", lambda kr=kr: kr.source or f"# not generated: {kr.fallback}")
    report = Report([graph_report], kernel_reports, Cost())
    lines = report.graph_lines(graph_report)
    if sizes:
        lines.append(f"  (costs at the sizes traced: {', '.join(f'{s}={v}' for s, v in sizes.items())})")
    trace(f"mlc_explain_{g.name}", lambda: "\n".join(lines) + "\n")


def _size_hints(gm: torch.fx.GraphModule) -> dict:
    """The size symbols of ``gm``'s inputs with the values Dynamo traced them at."""
    env = {}
    for p in gm.graph.find_nodes(op="placeholder"):
        val = p.meta.get("val")
        for d in (val.shape if isinstance(val, torch.Tensor) else [val]):
            if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol and d.node.hint is not None:
                env[d.node.expr] = int(d.node.hint)
    return env


# --- freezing (the pass is mlc.passes.freeze) -----------------------------------------------


class FrozenGraph:
    """An inference graph compiled with its parameters and buffers as constants.

    Dynamo passes parameters as graph inputs and, unless Inductor's own freezing is on, does
    not guard them. So the guard is here, on every call: each frozen input must be the tensor
    object that was frozen, at the version it was frozen at (in-place updates, an optimizer
    step included, bump ``_version``). When one is not, the graph is compiled again with the
    values the inputs hold now: the cost of a changed weight is one compile, never a stale
    result. The check is one identity and one integer comparison per frozen tensor.
    """

    def __init__(self, compile: Callable[[dict], CompiledGraph], frozen: dict[int, tuple[str, torch.Tensor]],
                 n_inputs: int):
        self._boxed_call = True
        self.compile = compile
        self.names = {k: name for k, (name, _) in frozen.items()}
        self.positions = sorted(frozen)
        self.rest = [k for k in range(n_inputs) if k not in frozen]
        self.freezes = 0
        self._freeze([t for _, t in (frozen[k] for k in self.positions)])

    def _freeze(self, tensors: list[torch.Tensor]):
        self.tensors, self.versions = tensors, [t._version for t in tensors]
        # AOT autograd compiles under a FakeTensorMode; folding computes with the real tensors.
        with unset_fake_temporarily():
            self.compiled = self.compile({k: (self.names[k], t) for k, t in zip(self.positions, tensors)})
        if not isinstance(self.compiled, CompiledGraph):  # mlc could not import it: PyTorch runs it, unfrozen
            self.rest = list(range(len(self.rest) + len(self.positions)))
        self.freezes += 1

    def __call__(self, args: list) -> list:
        tensors = [args[k] for k in self.positions]
        if any(a is not b for a, b in zip(tensors, self.tensors)) or [t._version for t in tensors] != self.versions:
            self._freeze(tensors)
        return self.compiled([args[k] for k in self.rest])


_SOURCE_PART = re.compile(r"\._(modules|parameters|buffers)\['([^']+)'\]")


def _freezable(gm: torch.fx.GraphModule, example_inputs) -> dict[int, tuple[str, torch.Tensor]]:
    """The inputs of the inference graph AOT autograd is compiling that may become constants.

    Parameters (``nn.Parameter``) and module buffers (known from Dynamo's source of the input)
    that the graph does not write, with the shape, dtype and strides the graph was traced for.
    AOT autograd's inputs are its lifted parameters, then Dynamo's inputs; when its graph takes
    another number of inputs (deduplicated ones), nothing is frozen.
    """
    context = torch._guards.TracingContext.try_get()
    meta = context.fw_metadata if context is not None else None
    if meta is None:
        return {}
    sources = [getattr(n, "_dynamo_source", None) for n in gm.graph.find_nodes(op="placeholder")]
    sources = [None] * len(context.params_flat or []) + sources
    real = [*(context.params_flat or []), *example_inputs]
    if not (len(real) == len(sources) == len(meta.input_info)):
        return {}
    frozen = {}
    for k, (t, source, info) in enumerate(zip(real, sources, meta.input_info)):
        name = source.name if source is not None else ""
        if not isinstance(t, torch.Tensor) or not (isinstance(t, torch.nn.Parameter) or "._buffers[" in name):
            continue
        if info.mutates_data or info.mutates_metadata or t.is_inference() or type(t) not in (torch.Tensor,
                                                                                           torch.nn.Parameter):
            continue
        parts = [m.group(2) for m in _SOURCE_PART.finditer(name)]
        frozen[k] = (".".join(parts) or f"param{k}", t)
    return frozen


def _freeze_here(g: torch.fx.GraphModule, candidates: dict[int, tuple[str, torch.Tensor]]):
    """``candidates`` that match ``g``'s inputs as traced (static shapes, same dtype and strides)."""
    placeholders = g.graph.find_nodes(op="placeholder")
    out = {}
    for k, (name, t) in candidates.items():
        fake = placeholders[k].meta.get("val") if k < len(placeholders) else None
        if (isinstance(fake, torch.Tensor) and all(isinstance(d, int) for d in (*fake.shape, *fake.stride()))
                and tuple(fake.shape) == tuple(t.shape) and tuple(fake.stride()) == t.stride()
                and fake.dtype == t.dtype and fake.device == t.device):
            out[k] = (name, t)
    return out


# --- the backend ----------------------------------------------------------------------------


def mlc_backend(gm: torch.fx.GraphModule, example_inputs, mode: str | None = None, options: dict | None = None,
                _on_compile: Callable[[Graph, CompiledGraph], Any] | None = None):
    """The ``torch.compile`` backend ``"mlc"``. ``mode`` and ``options`` come from ``torch.compile``."""
    opts = make_options(mode, options)
    log.info("received a Dynamo graph of %d nodes; mode %r%s", len(gm.graph.nodes), opts.mode,
             "".join(f", {s}" for s in settings(mode, options) if s.source != "default"))
    note = cuda_graphs_note(opts.mode, any(isinstance(x, torch.Tensor) and x.is_cuda for x in example_inputs),
                            opts.interpret)
    if note:
        log.info(note)

    def compiler(kind):
        return lambda g, inputs: compile_graph(g, kind, opts, _on_compile)

    def inference_compiler(g, inputs):
        frozen = _freeze_here(g, _freezable(gm, example_inputs)) if opts.freeze else {}
        if len(g.graph.find_nodes(op="placeholder")) != len(inputs) or not frozen:
            return compile_graph(g, "inference", opts, _on_compile)
        return FrozenGraph(lambda tensors: compile_graph(g, "inference", opts, _on_compile, tensors),
                           frozen, len(inputs))

    return aot_autograd(
        fw_compiler=compiler("forward"),
        bw_compiler=compiler("backward"),
        inference_compiler=inference_compiler,
        partition_fn=functools.partial(partition, precision=opts.precision),
        decompositions=decompositions(),
    )(gm, example_inputs)


def register() -> None:
    """Make ``backend="mlc"`` known to ``torch.compile`` (the entry point does it too)."""
    from torch._dynamo.backends import registry

    # When torch loads the entry point it registers the backend itself after importing mlc.
    if "mlc" not in registry._COMPILER_FNS and registry._BACKENDS.get("mlc") is None:
        registry.register_backend(compiler_fn=mlc_backend, name="mlc")
