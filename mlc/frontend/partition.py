"""The forward/backward split: what the forward saves for the backward, and what it recomputes.

AOT autograd traces one joint graph and a partitioner cuts it in two. mlc uses PyTorch's
min-cut rematerialization partitioner (``min_cut_rematerialization_partition``, the one
Inductor uses) rather than a partitioner of its own on mlc's IR: it already solves the
problem as a max-flow min-cut over the joint FX graph, with a view of what is cheap to
recompute that is mlc's too (pointwise ops, views and reductions, which mlc fuses into the
backward's kernels; never matmuls, convolutions, attention or random ops), and it runs
before import, where the cut can still change what the two graphs exchange. Written again
on mlc's IR it would have to rebuild AOT autograd's bookkeeping of saved tensors.

Before the cut, attention written by hand is rewritten so that the backward recomputes its
probabilities blockwise instead of reading them (``hand_attention.recompute_attention``).

Two guarantees on top: the forward never saves more bytes than the default partitioner's
(which saves every intermediate the backward reads; the smaller of the two is used), and
with ``precision`` ``"bf16"``/``"fp16"`` the fp32 activations saved for the backward cross
over in that type (the forward casts before it returns them, the backward casts back as it
reads them; never an attention's log-sum-exp), as narrow_storage does for tensors between
kernels. What was saved, in what type, and what the min cut recomputed instead is ``SavedActivations``, on the forward graph
module's ``meta["mlc_saved"]`` for ``mlc.explain``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition

from .hand_attention import recompute_attention

LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SavedActivations:
    """The tensors one forward graph saves for its backward.

    Activations are what the forward computes and keeps alive for the backward; graph inputs
    it saves (parameters, the user's inputs, views of them) cost no memory of their own and
    are listed apart.
    """

    names: list[str]  # saved activations, in the order the forward returns them
    bytes: int  # what they take, in the type they are saved in
    default_bytes: int  # the activations the default partitioner would have saved
    inputs: list[str] = field(default_factory=list)  # saved graph inputs (and views of them)
    recomputed: list[str] = field(default_factory=list)  # saved by the default, recomputed by the min cut
    narrowed: list[str] = field(default_factory=list)  # saved in the lower precision type
    shared: list[str] = field(default_factory=list)  # views of another saved tensor, taken again in backward
    partitioner: str = "min-cut"  # or "default" when the min cut would have saved more
    attention: list[str] = field(default_factory=list)  # attention written by hand: recomputed or why not


    def __str__(self) -> str:
        text = (f"{len(self.names)} activation(s), {self.bytes / 1e6:.3f} MB saved for backward ({self.partitioner} "
                f"partitioner; the default saves {self.default_bytes / 1e6:.3f} MB)")
        if self.recomputed:
            text += f"; recomputed in backward instead: {', '.join(self.recomputed)}"
        if self.shared:
            text += f"; views of a saved tensor taken again in backward: {', '.join(self.shared)}"
        if self.narrowed:
            text += f"; stored in the lower precision: {', '.join(self.narrowed)}"
        if self.inputs:
            text += f"; also saved, at no cost: {len(self.inputs)} graph input(s) or views of them"
        for note in self.attention:
            text += f"; {note}"
        return text


_VIEWS = {"view", "_unsafe_view", "reshape", "t", "permute", "transpose", "expand", "slice", "select", "alias",
          "unsqueeze", "squeeze", "as_strided"}


def _is_input(node: torch.fx.Node) -> bool:
    """A graph input, or a view of one: saving it keeps nothing alive that was not already."""
    return _view_chain(node)[0].op == "placeholder"


def _saved(fw: torch.fx.GraphModule, num_fwd_outputs: int) -> list[torch.fx.Node]:
    (output,) = fw.graph.find_nodes(op="output")
    return [n for n in output.args[0][num_fwd_outputs:] if isinstance(n, torch.fx.Node)]


def _activations(fw: torch.fx.GraphModule, num_fwd_outputs: int) -> list[torch.fx.Node]:
    return [n for n in _saved(fw, num_fwd_outputs) if not _is_input(n)]


def _nbytes(node: torch.fx.Node) -> int:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return 0
    numel = val.numel()
    numel = numel.node.hint if isinstance(numel, torch.SymInt) and numel.node.hint is not None else numel
    try:
        return int(numel) * val.element_size()
    except TypeError:  # a size with no hint: count it as one element per symbol
        return val.element_size()


def partition(joint_module: torch.fx.GraphModule, joint_inputs, *, num_fwd_outputs: int,
              precision: str = "default", **kwargs) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """AOT autograd's ``partition_fn``: the min cut, never saving more than the default."""
    attention = recompute_attention(joint_module)
    # The default first: it only tags nodes, where the min cut rewrites the joint graph (its
    # CSE, DCE). (A deep copy is no way out: the graph's FakeTensor metadata cannot be copied.)
    dfw, dbw = default_partition(joint_module, joint_inputs, num_fwd_outputs=num_fwd_outputs, **kwargs)
    fw, bw = min_cut_rematerialization_partition(joint_module, joint_inputs, num_fwd_outputs=num_fwd_outputs,
                                                 **kwargs)
    saved, default_saved = _activations(fw, num_fwd_outputs), _activations(dfw, num_fwd_outputs)
    used = "min-cut"
    if sum(map(_nbytes, saved)) > sum(map(_nbytes, default_saved)):
        fw, bw, saved, used = dfw, dbw, default_saved, "default"
    shared = _share_saved_views(fw, bw, num_fwd_outputs)
    saved = [n for n in saved if n.name not in shared]
    kept = {n.name for n in saved}
    narrowed = _narrow_saved(fw, bw, num_fwd_outputs, LOW[precision]) if precision in LOW else []
    fw.meta["mlc_saved"] = SavedActivations(
        [n.name for n in saved], sum(map(_nbytes, _activations(fw, num_fwd_outputs))), sum(map(_nbytes, default_saved)),
        [n.name for n in _saved(fw, num_fwd_outputs) if _is_input(n)],
        [n.name for n in default_saved if n.name not in kept], narrowed, sorted(shared), used, attention)
    return fw, bw


def _view_chain(node: torch.fx.Node) -> tuple[torch.fx.Node, list[torch.fx.Node]]:
    """The tensor ``node`` views (through view ops), and the views from it to ``node`` in order."""
    chain = []
    while node.op == "call_function" and getattr(node.target, "__name__", "").split(".")[0] in _VIEWS:
        chain.append(node)
        node = node.args[0]
    return node, chain[::-1]


def _reads_values(node: torch.fx.Node) -> bool:
    """Does ``node`` take a graph value besides its first argument (a symbolic size, say)?"""
    found = []
    torch.fx.node.map_arg((node.args[1:], node.kwargs), found.append)
    return bool(found)


def _share_saved_views(fw: torch.fx.GraphModule, bw: torch.fx.GraphModule, num_fwd_outputs: int) -> set[str]:
    """Save one tensor where the forward saves several views of it; the backward takes the others'
    views of that one again. Returns the names no longer saved.

    In ATen's semantics two views of one buffer cost its memory once, but mlc's forward is free
    to lay its results out contiguously: a view its kernels could not express as strides (the
    ``[B*S, H*D]`` view of attention's ``[B, H, S, D]`` output, through a permute) is then a copy
    of its own, saved beside the tensor it views. Only a view whose chain has no graph values
    among its arguments (static shapes) is taken again; the one kept is a saved tensor that is
    the common base itself or an ``alias`` of it.
    """
    (output,) = fw.graph.find_nodes(op="output")
    outs = list(output.args[0])
    placeholders = {p.name: p for p in bw.graph.find_nodes(op="placeholder")}
    last = list(placeholders.values())[-1] if placeholders else None
    groups: dict[torch.fx.Node, list[tuple[int, list[torch.fx.Node]]]] = {}
    for k in range(num_fwd_outputs, len(outs)):
        node = outs[k]
        if isinstance(node, torch.fx.Node) and isinstance(node.meta.get("val"), torch.Tensor) \
                and node.name in placeholders and not _is_input(node):
            base, chain = _view_chain(node)
            groups.setdefault(base, []).append((k, chain))
    dropped: dict[int, str] = {}
    for base, members in groups.items():
        keep = next((k for k, chain in members if all(getattr(v.target, "__name__", "").startswith("alias")
                                                       for v in chain)), None)
        if keep is None:
            continue
        source = placeholders[outs[keep].name]
        for k, chain in members:
            if k == keep or any(_reads_values(v) for v in chain):
                continue
            placeholder = placeholders[outs[k].name]
            value = source
            for v in chain:  # after the placeholders, in order
                if getattr(v.target, "__name__", "").startswith("alias"):
                    continue
                with bw.graph.inserting_after(value if value is not source else last):
                    value = bw.graph.call_function(v.target, (value, *v.args[1:]), dict(v.kwargs))
                value.meta["val"] = v.meta.get("val")
            placeholder.replace_all_uses_with(value)
            bw.graph.erase_node(placeholder)
            dropped[k] = outs[k].name
    if not dropped:
        return set()
    output.args = (tuple(n for k, n in enumerate(outs) if k not in dropped),)
    fw.recompile()
    bw.graph.lint()
    bw.recompile()
    return set(dropped.values())


def _is_log_sum_exp(node: torch.fx.Node) -> bool:
    """An attention's saved log-sum-exp: the backward exponentiates scores minus it, so 8 bits of
    mantissa would be a 3% error in every probability at a log-sum-exp of 10."""
    if node.target is not operator.getitem or node.args[1] == 0:
        return False
    return "attention" in getattr(node.args[0].target, "__name__", "")


def _narrow_saved(fw: torch.fx.GraphModule, bw: torch.fx.GraphModule, num_fwd_outputs: int,
                  low: torch.dtype) -> list[str]:
    """Save the forward's fp32 activations in ``low``: cast in the forward before returning them,
    back to fp32 in the backward where it reads them. Returns the names of those narrowed."""
    (output,) = fw.graph.find_nodes(op="output")
    outs = list(output.args[0])
    user_outputs = {id(n) for n in outs[:num_fwd_outputs]}
    placeholders = bw.graph.find_nodes(op="placeholder")
    by_name = {p.name: p for p in placeholders}
    narrowed = []
    for k in range(num_fwd_outputs, len(outs)):
        node = outs[k]
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        # A saved tensor that is also a user output crosses once; it keeps the user's dtype.
        if not isinstance(val, torch.Tensor) or val.dtype != torch.float32 or id(node) in user_outputs \
                or _is_input(node) or _is_log_sum_exp(node):  # an input or its view is alive anyway
            continue
        placeholder = by_name.get(node.name)
        if placeholder is None:
            continue
        with fw.graph.inserting_before(output):
            cast = fw.graph.call_function(torch.ops.prims.convert_element_type.default, (node, low))
        cast.meta["val"] = val.to(low)
        outs[k] = cast
        with bw.graph.inserting_after(placeholders[-1]):
            back = bw.graph.call_function(torch.ops.prims.convert_element_type.default, (placeholder, torch.float32))
        back.meta["val"] = val
        placeholder.replace_all_uses_with(back, delete_user_cb=lambda user: user is not back)
        placeholder.meta["val"] = val.to(low)
        narrowed.append(node.name)
    output.args = (tuple(outs),)
    fw.recompile()
    bw.recompile()
    return narrowed
