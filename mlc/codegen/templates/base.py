"""The template protocol: what a kernel template tells the rest of mlc.

A template turns the regions it takes into Triton source (``generate``), and answers every
question the runtime, the autotuner, the cost model, the cache and ``explain`` have about
the kernels it wrote, so that none of them needs to know which template wrote a kernel:

| question | method | asked by |
|---|---|---|
| does it write this region? | ``takes(body)`` | ``generate`` (the registry, in order) |
| the source | ``generate(body, persistent_limit=, interpret=)`` | ``generate``, the fusion pass |
| how many programs | ``grid(sizes, meta)`` | the launch, ``explain`` |
| which sizes are arguments | ``size_args(sizes)`` | the launch |
| the config without tuning | ``fixed_config(ks, sizes, interpret)`` | the launch, ``aot-check`` |
| the configs to search | ``space(ks, sizes, level)``, ``clip(ks, cfg, sizes)`` | the autotuner |
| static limits of a config | ``registers(ks, cfg)``, ``shared_bytes(ks, cfg)`` | the autotuner |
| modeled time of a config | ``modeled_time(ks, body, cfg, sizes, ...)`` | the autotuner |

``sizes`` are a launch's sizes as ints, in the order of ``KernelSource.launch`` (each
template says what they are). What the cache stores for a kernel is its ``KernelSource``:
the template's own facts live in ``params`` as JSON values.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import triton

from ...cost import GPU, blocks_per_sm, config_time
from ...ir.graph import Graph
from ..source import KernelSource

INTERPRET_MAX_BLOCK = 1 << 16  # elements per program in the interpreter (each program costs ~1 ms of Python)
ATEN = {"backend": "aten"}  # a config that runs the region as torch ops (matmuls: cuBLAS, then the epilogue)


def is_aten(config: dict) -> bool:
    """Does this config run the region through torch instead of the generated kernel?"""
    return config.get("backend") == "aten"


class Template(ABC):
    """One kind of kernel. Subclasses set ``name`` and ``meta`` (the constexpr names of its
    configs, besides ``num_warps``/``num_stages``) and implement ``takes``, ``generate`` and
    ``fixed_config``; the other defaults fit a one-dimensional launch over ``sizes[0]``
    elements in blocks of ``meta[0]``."""

    name: str = ""
    meta: tuple[str, ...] = ()

    @abstractmethod
    def takes(self, body: Graph) -> bool:
        """Is ``body`` this template's kind of region? The registry asks in order; the first
        that takes a region writes it, or raises ``CodegenError`` saying why it cannot."""

    @abstractmethod
    def generate(self, body: Graph, *, persistent_limit: int, interpret: bool) -> KernelSource:
        """The kernel for ``body``; ``CodegenError`` if it is not one kernel of this template.
        ``interpret``: the kernel runs in Triton's interpreter (a few of its gaps need other code)."""

    # --- launching --------------------------------------------------------------------------

    starts_from_targets = False  # an output it writes in place holds its target's values before the launch

    def in_place_targets(self, ks: KernelSource) -> list[list[int]] | None:
        """Per output, the kernel inputs it could be written over, in place, when the plan allows
        it (``Plan.write_in_place``; None: no output could). With ``starts_from_targets``, an output
        has one, and when the plan does not allow it there, the output starts as a copy of that
        input (a scatter writes only some elements)."""
        return ks.params.get("in_place")

    def zeroed_outputs(self, ks: KernelSource) -> list[int]:
        """The outputs that must hold zeros before the launch (programs add into them atomically)."""
        return ks.params.get("zeroed", [])

    def grid(self, sizes: tuple, meta: dict) -> tuple[int, ...]:
        return (triton.cdiv(sizes[0], meta[self.meta[0]]),)

    def size_args(self, sizes: tuple) -> list[int]:
        """The launch sizes the kernel takes as arguments, after the size symbols."""
        return list(sizes)

    @abstractmethod
    def fixed_config(self, ks: KernelSource, sizes: tuple, interpret: bool) -> dict:
        """The config without tuning: the interpreter's few large blocks, or a GPU rule."""

    # --- tuning -----------------------------------------------------------------------------

    def space(self, ks: KernelSource, sizes: tuple, level: str) -> list[dict]:
        """The declared configs at ``level`` ("default" or "max"); the fixed config is always
        a candidate besides these."""
        return []

    def clip(self, ks: KernelSource, cfg: dict, sizes: tuple) -> dict:
        """``cfg`` with blocks no larger than the problem needs (so equal ones deduplicate)."""
        return dict(cfg)

    def registers(self, ks: KernelSource, cfg: dict) -> tuple[int, str]:
        """About how many registers per thread the config's blocks need, and what they hold."""
        elements = math.prod(cfg[m] for m in self.meta)
        return elements // (32 * cfg["num_warps"]), "block"

    def shared_bytes(self, ks: KernelSource, cfg: dict) -> int:
        """Shared memory the config's pipeline needs, before compiling (0: none staged)."""
        return 0

    def modeled_time(self, ks: KernelSource, body: Graph, cfg: dict, sizes: tuple, nbytes: float, flops: float,
                     gpu: GPU, registers: int, shared: int) -> float:
        """Seconds ``cfg`` is modeled to take on ``gpu`` (``cost.config_time``): ``nbytes`` and
        ``flops`` are the region's, ``registers``/``shared`` what ptxas said (0: not compiled)."""
        per_program = cfg[self.meta[0]]
        programs = math.ceil(sizes[0] / per_program)
        total = max(sizes[0], 1)
        return config_time(gpu, programs=programs, resident=blocks_per_sm(gpu, cfg["num_warps"], registers, shared),
                           nbytes=nbytes, flops=flops, in_flight=per_program * nbytes / total)

    def __repr__(self) -> str:
        return f"<template {self.name}>"
