"""Calling an ATen op by name: how fallback (``aten``) nodes run, and what runs them.

A fallback node calls a PyTorch operator by its name, ``namespace.op.overload``: one of
PyTorch's own (``aten``, ``prims``: an *ATen op*), or one defined with ``torch.library``
in any other namespace (``mylib::op``, ``transformers::...``: a *custom op*). Warnings and
``mlc.explain`` name each by what it is (``fallback_kind``).
"""

from __future__ import annotations

import functools

import torch

from .graph import Operand


ATEN_NAMESPACES = ("aten", "prims")


def fallback_kind(target: str) -> str:
    """``"ATen op"`` for PyTorch's own operators, ``"custom op"`` for one defined with
    ``torch.library`` (any other namespace)."""
    return "ATen op" if target.split(".", 1)[0] in ATEN_NAMESPACES else "custom op"


def custom_op_name(target: str) -> str:
    """``mylib.twice.default`` -> ``mylib::twice``: a custom op as ``torch.library`` names it."""
    namespace, op = target.split(".")[:2]
    return f"{namespace}::{op}"


@functools.lru_cache(maxsize=None)
def resolve_target(target: str):
    """'aten.sort.default' -> torch.ops.aten.sort.default (ValueError if there is none)."""
    parts = target.split(".")
    if len(parts) != 3:
        raise ValueError(f"fallback target '{target}' is not of the form namespace.op.overload")
    try:
        return getattr(getattr(getattr(torch.ops, parts[0]), parts[1]), parts[2])
    except (AttributeError, RuntimeError) as e:
        raise ValueError(f"no ATen op named '{target}'") from e


def fill_operands(template, tensors):
    if isinstance(template, Operand):
        return tensors[template.index]
    if isinstance(template, (tuple, list)):
        return type(template)(fill_operands(t, tensors) for t in template)
    return template


def call_aten(target: str, args, kwargs, tensors):
    fn = resolve_target(target)
    return fn(*fill_operands(args, tensors), **{k: fill_operands(v, tensors) for k, v in kwargs})
