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


def matmul_config(m: int, n: int, k: int, interpret: bool) -> dict:
    """Tile sizes for the matmul template. ``tl.dot`` needs every tile dim to be at least 16."""
    if interpret:  # few, large programs
        bm, bn, bk = (max(16, min(next_pow2(d), 128)) for d in (m, n, k))
        return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk, "GROUP_SIZE_M": 8,
                "num_warps": 4, "num_stages": 1}
    bm = 16 if m <= 16 else 64 if m <= 64 else 128  # M=1 (decode) still gets a 16-row tile
    bn = 64 if n <= 64 else 128
    return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8,
            "num_warps": 4 if bm * bn <= 64 * 128 else 8, "num_stages": 3}
