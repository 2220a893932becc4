"""``mode="reduce-overhead"``: a launch plan recorded once in a CUDA graph, then replayed.

A decode step is a few dozen small launches, and the host work around each (Python, Triton's
launcher) can take longer than the GPU does. ``torch.cuda.CUDAGraph`` records the plan's
launches once per input layout and replays them with one call.

Replays read and write fixed addresses, so the graph owns its buffers. Each input is copied
into a static buffer recorded with the graph, except the inputs the plan writes in place (a KV
cache, see ``Plan.write_in_place``): those are recorded as the caller's own tensors, so the
replay writes them where they are, and a call with another tensor there records again. Outputs
are copied out of the graph's memory (an output that is one of the inputs is returned as that
input). The first call at a layout runs the plan once on a side stream (Triton compiles and the
autotuner times there; capturing needs none of that left), then records.

Nothing here runs without a GPU: mlc's tests run on CPUs, where the mode is not applied and
``explain`` says why (``options.cuda_graphs_note``).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from .plan import Plan


class CUDAGraphPlan:
    """``plan`` replayed from CUDA graphs, one per layout of the inputs (shapes, strides, dtypes,
    and the addresses of the inputs written in place)."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list, list]] = {}
        self.failed: str | None = None  # why recording failed: the plan then runs as it is
        self.own: set[int] | None = None  # the inputs written in place (known once the plan is complete)

    def _in_place(self) -> set[int]:
        """Positions of the inputs some kernel writes in place."""
        slots = set()
        for launch, (_, ins) in zip(self.plan.launches, self.plan.kernel_nodes):
            if launch is not None and launch.targets is not None:
                slots |= {ins[launch.targets[k]] for k in launch.in_place}
        return {s for s in slots if s < self.plan.n_inputs}

    def _key(self, args: Sequence[Any], own: set[int]) -> tuple:
        return tuple((tuple(a.shape), a.stride(), a.dtype, a.data_ptr() if k in own else None)
                     if isinstance(a, torch.Tensor) else a for k, a in enumerate(args))

    def __call__(self, args: Sequence[Any]) -> list[Any]:
        if self.failed is not None:
            return self.plan(args)
        if self.own is None:  # after Plan.write_in_place, which runs once the compile is done
            self.own = self._in_place()
        own = self.own
        key = self._key(args, own)
        entry = self.graphs.get(key)
        if entry is None:
            try:
                entry = self.graphs[key] = self._record(args, own)
            except RuntimeError as e:  # capture refused an op of the plan (a host sync, say)
                self.failed = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                warnings.warn(f"mlc: mode='reduce-overhead': the launch plan of {self.plan.graph.name} could not "
                              f"be recorded in a CUDA graph ({self.failed[:300]}); it runs without one",
                              stacklevel=3)
                return self.plan(args)
        graph, static_in, static_out = entry
        for k, (s, a) in enumerate(zip(static_in, args)):
            if isinstance(a, torch.Tensor) and k not in own:
                s.copy_(a)
        graph.replay()
        inputs = {id(s): a for s, a in zip(static_in, args)}
        return [inputs.get(id(o), o.clone()) if isinstance(o, torch.Tensor) else o for o in static_out]

    def _record(self, args: Sequence[Any], own: set[int]):
        static_in = [a if k in own or not isinstance(a, torch.Tensor) else a.clone() for k, a in enumerate(args)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.plan(static_in)  # warm-up: compiles the kernels, and tunes them
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.plan(static_in)
        return graph, static_in, static_out
