"""Public helpers: ``capture``."""

from __future__ import annotations

import functools

import torch

from .backend import mlc_backend
from .ir.graph import Graph
from .options import make_options


def capture(fn, *example_inputs, **options) -> list[Graph]:
    """The IR graphs mlc receives when ``fn(*example_inputs)`` runs compiled, before any pass.

    Like ``jax.make_jaxpr``: one graph per compiled region (Dynamo graph breaks make more);
    under autograd, the forward graph (the backward graph is compiled when backward runs).
    Options are those of ``torch.compile(..., options=...)``; ``mode`` and ``dynamic`` too.
    """
    mode = options.pop("mode", None)
    dynamic = options.pop("dynamic", None)
    make_options(mode, options)  # fail early on a bad option
    graphs: list[Graph] = []
    backend = functools.partial(mlc_backend, mode=mode, options=options,
                                _on_compile=lambda imported, compiled: graphs.append(imported))
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend=backend, dynamic=dynamic)
    compiled(*example_inputs)
    torch._dynamo.reset()
    return graphs
