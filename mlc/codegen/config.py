"""Launch configurations: block sizes and warps per kernel, before any autotuning.

Two targets with opposite needs. On a GPU, blocks sized for occupancy (1024 elements, a few
rows per program). In Triton's CPU interpreter every program instance costs about a
millisecond of Python, so blocks there are as large as memory allows.
"""

from __future__ import annotations

from .compile import next_pow2
from .kernel import KernelSource

INTERPRET_MAX_BLOCK = 1 << 16  # elements per program in the interpreter
PERSISTENT_LIMIT = 4096  # a row of at most this many elements stays in registers


def launch_config(ks: KernelSource, numel: int, rnumel: int | None, interpret: bool) -> dict:
    """Constexpr block sizes and ``num_warps`` for one launch."""
    if ks.kind == "pointwise":
        block = min(next_pow2(numel), INTERPRET_MAX_BLOCK) if interpret else 1024
        return {"BLOCK_SIZE": max(block, 16), "num_warps": 4}
    if ks.persistent:
        rblock = next_pow2(rnumel)  # the whole row: the kernel has no loop
    else:
        rblock = min(next_pow2(rnumel), 4096 if interpret else 1024)
    budget = INTERPRET_MAX_BLOCK if interpret else 4096
    xblock = max(1, min(next_pow2(numel), budget // rblock))
    if not interpret:
        xblock = min(xblock, 8)
    return {"XBLOCK": xblock, "RBLOCK": rblock, "num_warps": 4 if rblock * xblock <= 2048 else 8}


def matmul_config(m: int, n: int, k: int, interpret: bool, itemsize: int = 2) -> dict:
    """Tile sizes for the matmul template. ``tl.dot`` needs every tile dim to be at least 16.

    fp32 operands (``itemsize`` 4, multiplied in full precision) get 64x64x16 tiles in two
    stages over 8 warps: larger tiles or fewer warps spill registers on sm_80 and sm_90
    (``ptxas -v``, via mlc aot-check).
    """
    if interpret:  # few, large programs
        bm, bn, bk = (max(16, min(next_pow2(d), 128)) for d in (m, n, k))
        return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk, "GROUP_SIZE_M": 8,
                "num_warps": 4, "num_stages": 1}
    big = 64 if itemsize >= 4 else 128
    bm = 16 if m <= 16 else 64 if m <= 64 else big  # M=1 (decode) still gets a 16-row tile
    bn = 64 if n <= 64 else big
    if itemsize >= 4:  # fp32 FMA tiles: a 16-deep K step in 2 stages over 8 warps keeps them out of local memory
        return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": 16, "GROUP_SIZE_M": 8,
                "num_warps": 8, "num_stages": 2}
    bn = min(bn, 64) if bm == 128 else bn  # 128x128 tiles with an epilogue spilled (aot-check)
    return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8,
            "num_warps": 4 if bm * bn < 128 * 64 else 8, "num_stages": 3}


_PTR_BYTES = {"fp64": 8, "i64": 8, "fp32": 4, "i32": 4, "fp16": 2, "bf16": 2, "i16": 2, "i8": 1, "u8": 1, "i1": 1}


def operand_itemsize(ks: KernelSource) -> int:
    """The widest input element of a kernel, read from its signature (``*fp32`` -> 4)."""
    sizes = [_PTR_BYTES[t[1:]] for a, t in ks.signature.items() if a.startswith("in") and a.endswith("_ptr")]
    return max(sizes, default=4)
