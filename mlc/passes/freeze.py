"""Freezing: graph inputs that hold parameters and buffers become named constants.

The backend decides which inputs of an inference graph may be frozen (``mlc.backend``:
parameters and buffers the graph does not write, traced with static shapes) and runs this
before ``PIPELINE``; constant folding then does their transposes, casts and concatenations
once. It takes tensors, not a user option, so it is not in ``PIPELINE`` (nor in ``mlc opt``).
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..ir.graph import Graph, GraphBuilder, Node, Value, rebuild


def freeze(graph: Graph, frozen: Mapping[int, tuple[str, torch.Tensor]]) -> Graph:
    """``graph`` with the inputs at ``frozen``'s positions turned into constants ``(name, tensor)``."""
    at = {graph.inputs[k]: named for k, named in frozen.items()}

    def input(b: GraphBuilder, node: Node) -> Value:
        if node not in at:
            return b.input(node.name, node.types[0])
        name, tensor = at[node]
        return b.constant(name, tensor.detach(), node.types[0])

    return rebuild(graph, input=input)
