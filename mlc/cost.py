"""The cost model: bytes through global memory, FLOPs and launches, for mlc and for eager.

A kernel reads each of its inputs once and writes each output once (an ideal cache: a
broadcast bias is read once, not once per row; an input that is gathered from is counted
at most at the size of what is gathered). Ops that run through torch (matmuls, fallbacks,
anything not in a kernel) are one launch each, reading their inputs and writing their
outputs; views cost nothing. Eager PyTorch is counted the same way, one launch per non-view
ATen op, by running the model under a ``TorchDispatchMode``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .ir.graph import Graph, Node
from .ir.ops import OPS, Category
from .ir.types import TensorType

_TRANSCENDENTAL = {"exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "sin", "cos", "tanh",
                   "sigmoid", "erf", "erfc", "gelu", "silu"}


@dataclass(frozen=True)
class GPU:
    name: str
    bandwidth: float  # bytes / s
    flops: float  # dense fp16/bf16 tensor-core FLOP / s
    launch: float  # seconds of overhead per kernel launch
    # For the per-config model (``config_time``) and the autotuner's static checks:
    arch: int = 90  # compute capability, as mlc aot-check compiles for it
    sms: int = 132
    fp32_flops: float = 67e12  # FMA units, no tensor cores (fp32 matmuls at input_precision="ieee")
    max_shared: int = 227 * 1024  # bytes of shared memory one block may use
    regs_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    latency: float = 7e-7  # seconds from a global load's issue to its data (for Little's law)


GPUS = {
    "H100": GPU("H100 SXM", 3.35e12, 989e12, 4e-6),
    "A100": GPU("A100 SXM 80GB", 2.04e12, 312e12, 4e-6, arch=80, sms=108, fp32_flops=19.5e12,
                max_shared=163 * 1024),
}


@dataclass
class Cost:
    launches: int = 0
    bytes: int = 0
    flops: int = 0
    items: list[tuple[str, int, int]] = field(default_factory=list)  # (name, bytes, flops)

    def add(self, name: str, nbytes: int, flops: int):
        self.launches += 1
        self.bytes += nbytes
        self.flops += flops
        self.items.append((name, nbytes, flops))

    def time(self, gpu: str = "H100") -> float:
        """Modeled seconds on ``gpu``: each launch bound by bytes or FLOPs, plus launch overhead."""
        return sum(launch_time(b, f, gpu) for _, b, f in self.items)


def gpu_spec(name: str) -> GPU:
    """The GPU called ``name`` in ``GPUS``; a ``ValueError`` naming the known ones otherwise."""
    if name not in GPUS:
        raise ValueError(f"unknown GPU '{name}'; known GPUs: {', '.join(GPUS)}")
    return GPUS[name]


def launch_time(nbytes: int, flops: int, gpu_name: str = "H100") -> float:
    """Modeled seconds of one launch on a GPU: the higher of its two roofs, plus launch overhead."""
    g = gpu_spec(gpu_name)
    return max(nbytes / g.bandwidth, flops / g.flops) + g.launch


def bound(nbytes: int, flops: int, gpu_name: str = "H100") -> str:
    """Which roof bounds one launch on a GPU: ``"memory"`` (bytes / bandwidth is the larger time)
    or ``"compute"`` (FLOPs / peak FLOP rate is). A tie (an empty launch) counts as memory."""
    g = gpu_spec(gpu_name)
    return "compute" if flops / g.flops > nbytes / g.bandwidth else "memory"


def _n(d, env) -> int:
    return int(d.xreplace(env)) if isinstance(d, sympy.Expr) else int(d)


def _numel(t: TensorType, env) -> int:
    out = 1
    for d in t.shape:
        out *= _n(d, env)
    return out


def _bytes(t, env) -> int:
    return _numel(t, env) * t.itemsize if isinstance(t, TensorType) else 0


def attention_flops(op: str, b: int, h: int, sq: int, sk: int, d: int, dv: int, causal: bool) -> int:
    """FLOPs of one attention op: 2 per multiply-add of its block products, over the (query, key)
    pairs it visits (causal: ``j <= i`` only). Forward: ``q @ kᵀ`` and ``p @ v``, 4·B·H·Sq·Sk·D
    for ``Dv = D``. The backward recomputes ``q @ kᵀ`` and ``do @ vᵀ`` in both its kernels, as
    tutorial 06 does: dk/dv add ``pᵀ @ do`` and ``dsᵀ @ q``, dq adds ``ds @ k``, 3.5x the forward
    in all (the minimum, one kernel keeping ``ds``, would be 2.5x)."""
    short = min(sq, sk)  # causal: query i sees min(i + 1, Sk) keys
    pairs = short * (short + 1) // 2 + (sq - short) * sk if causal else sq * sk
    per_pair = {"attention": d + dv, "attention_split": d + dv, "attention_grad_kv": 2 * (d + dv),
                "attention_grad_q": 2 * d + dv}[op]
    return 2 * b * h * pairs * per_pair


def node_flops(node: Node, env) -> int:
    cat = OPS[node.op].category
    if node.op in ("attention_scores", "attention_probs_grad"):  # blocks of their attention kernel: counted by it
        return 0
    if cat is Category.ATTENTION:
        forward = node.op in ("attention", "attention_split")
        q, k, v = (x.type for x in (node.inputs[:3] if forward else node.inputs[1:4]))
        b, h, sq, d = (_n(x, env) for x in q.shape)
        return attention_flops(node.op, b, h, sq, _n(k.shape[2], env), d, _n(v.shape[3], env), node.attrs["is_causal"])
    if cat is Category.MATMUL:
        a, b = (v.type for v in node.inputs)
        k = _n(a.shape[-1], env)
        return 2 * _numel(node.types[0], env) * k
    if cat is Category.POINTWISE:
        return _numel(node.types[0], env) * (4 if node.op in _TRANSCENDENTAL else 1)
    if cat is Category.REDUCTION:
        return _numel(node.inputs[0].type, env) * (2 if node.op == "var" else 1)
    return 0


def kernel_cost(node: Node, env) -> tuple[int, int]:
    """(bytes, flops) of one ``kernel`` node."""
    return region_cost(node.attrs["body"], env)


def region_cost(body: Graph, env) -> tuple[int, int]:
    """(bytes, flops) of a kernel's region (its body: inputs typed as the kernel's operands)."""
    scatters = [v.node for v in body.outputs if v.node.op == "index_copy"]
    if scatters:  # templates/scatter.py: the sources' slices written in place, the rest untouched
        dsts = {n.inputs[0] for n in scatters}
        space = max(_numel(n.inputs[2].type, env) for n in scatters)
        read = sum(min(_numel(n.types[0], env), space) * n.types[0].itemsize for n in body.inputs if n.out not in dsts)
        written = sum(_bytes(n.inputs[2].type, env) for n in scatters)
        return read + written, sum(node_flops(n, env) for n in body.nodes)
    space = max(_numel(v.type, env) for v in body.outputs)
    for n in body.nodes:
        if OPS[n.op].category in (Category.REDUCTION, Category.MATMUL, Category.ATTENTION):
            space = max([space] + [_numel(v.type, env) for v in n.inputs])
    read = sum(min(_numel(n.types[0], env), space) * n.types[0].itemsize for n in body.inputs)
    written = sum(_bytes(v.type, env) for v in body.outputs)
    return read + written, sum(node_flops(n, env) for n in body.nodes)


def graph_cost(graph: Graph, env: dict) -> Cost:
    """The modeled cost of one call of a (fused) graph, with size symbols bound by ``env``."""
    cost = Cost()
    for node in graph.nodes:
        cat = OPS[node.op].category
        if node.op == "kernel":
            nbytes, flops = kernel_cost(node, env)
            cost.add(node.attrs["body"].name, nbytes, flops)
        elif cat in (Category.VIEW, Category.SOURCE, Category.SYM):
            continue
        else:
            nbytes = sum(_bytes(v.type, env) for v in node.inputs) + sum(_bytes(t, env) for t in node.types)
            cost.add(node.op if node.op != "aten" else node.attrs["target"], nbytes, node_flops(node, env))
    return cost


_VIEW_OPS = {"view", "_unsafe_view", "reshape", "permute", "expand", "slice", "select", "t", "transpose",
             "unsqueeze", "squeeze", "alias", "as_strided", "split", "split_with_sizes", "unbind", "detach",
             "_reshape_alias", "view_as", "expand_as", "narrow", "chunk", "flatten", "unflatten", "movedim",
             "lift_fresh", "_to_copy_view", "diagonal", "unfold", "real", "imag", "view_as_real"}
_FREE_OPS = {"sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "_local_scalar_dense",
             "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "set_", "resize_",
             "_has_compatible_shallow_copy_type"}


class EagerCounter(TorchDispatchMode):
    """Counts launches, bytes and FLOPs of eager PyTorch: one launch per non-view ATen op."""

    def __init__(self):
        super().__init__()
        self.cost = Cost()

    @classmethod
    def is_infra_mode(cls) -> bool:
        return True  # or Dynamo would run compiled functions eagerly while the mode is active

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in _VIEW_OPS or name in _FREE_OPS or func.is_view:
            return out
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        outs = [o for o in torch.utils._pytree.tree_leaves(out) if isinstance(o, torch.Tensor)]
        nbytes = sum(t.numel() * t.element_size() for t in tensors + outs)
        flops = 0
        if name in ("mm", "bmm", "addmm", "baddbmm", "matmul", "linear"):
            k = tensors[-1].shape[-2] if name in ("mm", "bmm", "addmm", "baddbmm") else tensors[0].shape[-1]
            flops = 2 * outs[0].numel() * int(k)
        elif name.startswith("_scaled_dot_product") and len(tensors) >= 3:
            flops = _eager_attention_flops(name, args, kwargs or {})
        elif outs:
            flops = max(o.numel() for o in outs)
        self.cost.add(str(func), nbytes, flops)
        return out


def _eager_attention_flops(name: str, args, kwargs) -> int:
    """FLOPs of an eager SDPA kernel, counted as mlc's attention kernels are (``attention_flops``)."""
    backward = name.endswith("_backward")
    q, k, v = args[1:4] if backward else args[:3]
    causal = kwargs.get("is_causal", args[7 if backward else 4] if len(args) > (7 if backward else 4) else False)
    b, h, sq, d = q.shape
    ops = ("attention_grad_kv", "attention_grad_q") if backward else ("attention",)
    return sum(attention_flops(op, b, h, sq, k.shape[2], d, v.shape[3], bool(causal)) for op in ops)


def count_eager(fn, *args, backward: bool = False) -> Cost:
    """What ``fn(*args)`` costs run by PyTorch; with ``backward``, a training step: the forward,
    then the backward of ``training_loss`` of its outputs."""
    with torch.enable_grad() if backward else torch.no_grad(), EagerCounter() as counter:
        out = fn(*args)
        if backward:
            training_loss(out).backward()
    return counter.cost


def training_loss(outputs) -> torch.Tensor:
    """The loss ``mlc.explain(..., backward=True)`` runs the backward of: every floating output
    that requires grad, summed."""
    flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    terms = [o.float().sum() for o in flat if isinstance(o, torch.Tensor) and o.requires_grad]
    if not terms:
        raise ValueError("backward=True: no output of the function requires grad")
    return sum(terms)


# --- one launch configuration ---------------------------------------------------------------


def blocks_per_sm(gpu: GPU, num_warps: int, registers: int = 0, shared: int = 0) -> int:
    """How many programs of one config an SM holds at once (occupancy), from its threads,
    its registers per thread (``ptxas -v``; 0: unknown) and its shared memory in bytes."""
    threads = 32 * num_warps
    n = min(gpu.max_blocks_per_sm, gpu.max_threads_per_sm // threads)
    if registers:
        n = min(n, gpu.regs_per_sm // (registers * threads))
    if shared:
        n = min(n, gpu.max_shared // shared)
    return max(n, 0)


def config_time(gpu: GPU, *, programs: int, resident: int, nbytes: float, flops: float, in_flight: float,
                tensor_cores: bool = False, compute_efficiency: float = 1.0, overlap: bool = True) -> float:
    """Modeled seconds of one launch of one configuration (the autotuner ranks by it without a GPU).

    ``resident`` programs fit on an SM at once (``blocks_per_sm``); ``in_flight`` is the bytes one
    program has requested and not yet received (a block of loads, or a matmul's pipeline stages).
    Two effects that ``launch_time`` ignores:

    - wave quantization: programs run in waves of ``sms * resident``; the last, partial wave
      leaves SMs idle, so compute runs at ``programs / (waves * slots)`` of peak;
    - latency hiding (Little's law): global memory delivers its bandwidth only with
      ``bandwidth * latency`` bytes in flight; fewer (small blocks, low occupancy, a grid
      smaller than the GPU) give proportionally less.

    ``overlap`` is False when loads and math do not overlap (a matmul with one pipeline stage).
    """
    if resident <= 0 or programs <= 0:
        return math.inf if resident <= 0 else gpu.launch
    slots = gpu.sms * resident
    waves = math.ceil(programs / slots)
    busy = programs / (waves * slots)
    achieved = min(gpu.bandwidth, min(programs, slots) * in_flight / gpu.latency)
    t_mem = nbytes / achieved
    peak = gpu.flops if tensor_cores else gpu.fp32_flops
    t_math = flops / (peak * busy * compute_efficiency)
    return (max(t_mem, t_math) if overlap else t_mem + t_math) + gpu.launch
