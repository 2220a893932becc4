"""Reports of compiled graphs and their kernels, as ``mlc.explain`` and the backend's trace
artifacts make them: what each kernel fused, its source, grid, config, tuning and cost."""

from __future__ import annotations

from ..codegen.writer import without_triton_code
from ..cost import graph_cost, kernel_cost
from ..ir.graph import Graph, Node
from ..runtime.plan import KernelLaunch
from .data import GraphReport, KernelReport, fused_ops


def _grid(launch: KernelLaunch, env: dict) -> tuple[tuple[int, ...] | None, dict]:
    """The grid and the configuration ``launch`` uses for the sizes in ``env``, as its ``__call__`` does
    (no grid when the autotuner chose to run a matmul kernel through ATen)."""
    _, sizes, _ = launch.call_sizes(env)
    meta, options = launch.config(sizes)
    return launch.grid(sizes, meta), {**meta, **options}


def _kernel_report(node: Node, graph: str, launch: KernelLaunch | None, env: dict,
                   failure: str | None = None, configs: bool = True) -> KernelReport:
    """A kernel's report. ``launch`` is the plan's (None when no plan ran kernels, or the kernel
    could not be built); ``failure`` what the plan's safety net caught for it; ``configs=False``
    leaves the grid and config out."""
    body: Graph = node.attrs["body"]
    nbytes, flops = kernel_cost(node, env)
    if launch is None and failure is None:  # nothing ran kernels (the reference executor): what a GPU would launch
        try:
            launch = KernelLaunch(body, interpret=False)
        except Exception as e:  # noqa: BLE001 - a report describes a kernel that cannot be built, it does not fail
            failure = f"could not be generated or loaded: {type(e).__name__}: {e}"
    if launch is None:
        return KernelReport(body.name, graph, "", str(body), nbytes, flops, "-", fused_ops(body), None, {}, "-",
                            None, fallback=failure)
    grid, config = _grid(launch, env) if configs and all(s in env for s in launch.symbols) else (None, {})
    if launch.interpret:  # the interpreter ignores warps and stages; the plan passes none
        config = {k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}
    tuning = getattr(launch, "tuning", None)
    return KernelReport(body.name, graph, launch.source.source, str(body), nbytes, flops, launch.source.kind,
                        fused_ops(body), grid, config, "interpreter" if launch.interpret else "GPU",
                        None if tuning is None else str(tuning), launch.source.layout, failure)


def report_graph(cg: CompiledGraph, env: dict, configs: bool = True) -> tuple[GraphReport, list[KernelReport]]:
    """The report of one compiled graph and of its kernels, for the sizes in ``env``.

    ``configs=False`` leaves out grids and launch configs (choosing them may tune): the
    backend's ``mlc_explain_<graph>`` trace artifact is written at compile time, before any call.
    """
    g = cg.graph
    launches = iter(cg.plan.launches if cg.plan is not None else [])
    failures = cg.plan.failures if cg.plan is not None else {}
    kernels = [_kernel_report(node, g.name, next(launches, None), env, failures.get(k), configs)
               for k, node in enumerate(n for n in g.nodes if n.op == "kernel")]
    fallbacks = [n.attrs["target"] for n in g.nodes if n.op == "aten"]
    saved = getattr(cg, "saved", None)
    return GraphReport(g.name, str(g), cg.passes, list(g.notes), fallbacks, graph_cost(g, env), g, cg.cache,
                       without_triton_code(g), None if saved is None else str(saved)), kernels
