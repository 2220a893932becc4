"""Size budgets for one kernel, checked while the writer writes it.

The writer computes a value once per index it is read at (and per ``cat`` branch it is read
in): a value read at two offsets by a reader that is itself read at two offsets is written
four times, so chains of slices and ``cat``s can make a kernel quadratic or exponential in
the size of its region. Inside ``limit(budget)`` every ``KernelWriter`` counts what it
writes and raises ``OverBudget`` (a ``CodegenError``) as soon as a value has been written
more than ``copies_per_use`` times per use in the region, an expression nests more than
``depth`` values deep (the writer recurses once per operand: a chain of hundreds of ops
would exhaust Python's stack), or the kernel has more than ``lines`` lines. The fusion
pass generates each candidate region under its budget and leaves a region over it
unmerged, so the value becomes a kernel input: it is computed once, by its own kernel, and
read from memory. Outside ``limit`` nothing is counted: a region that fusion kept is always
generated whole.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

from ..ir.graph import Graph, Value
from ..ir.ops import OPS, Category
from .source import CodegenError


@dataclass(frozen=True)
class Budget:
    copies_per_use: int  # times a value may be written per read of it in the region
    depth: int  # values nested in one expression (a chain of ops, each reading the last)
    lines: int  # lines of the whole kernel module


class OverBudget(CodegenError):
    """The region's kernel would be over the budget: too many copies of a value, or too long."""


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("mlc_kernel_budget", default=None)


@contextlib.contextmanager
def limit(budget: Budget) -> Iterator[None]:
    """Kernels written inside the block are held to ``budget``."""
    token = _current.set(budget)
    try:
        yield
    finally:
        _current.reset(token)


class Tally:
    """What one writer has written so far, against the budget in force when it was made."""

    def __init__(self, body: Graph):
        self.budget = _current.get()
        self.copies: Counter[Value] = Counter()
        self.depth = 0  # values being written now, each an operand of the one before
        if self.budget is not None:
            self.uses = Counter(v for n in body.nodes for v in n.inputs) + Counter(body.outputs)
            self.inputs = {n.out: k for k, n in enumerate(body.inputs)}

    def enter(self, value: Value):
        """``value`` is written (again): at an index, or in a branch, it was not written at before.
        The writer lowers ``depth`` again when it is done."""
        self.depth += 1
        if self.budget is not None and self.depth > self.budget.depth:
            raise OverBudget(f"an expression would nest more than {self.budget.depth} values deep (budget)")
        if self.budget is None or value.node.op == "full" or \
                value not in self.inputs and OPS[value.node.op].category is Category.VIEW:
            return  # a literal, or index arithmetic: no code of its own
        self.copies[value] += 1
        n, uses = self.copies[value], max(self.uses[value], 1)
        if n > self.budget.copies_per_use * uses:
            what = f"input in{self.inputs[value]}" if value in self.inputs else value.node.op
            raise OverBudget(f"{what} {value.type} would be computed more than {n - 1} times for its {uses} "
                             f"use(s) (budget: {self.budget.copies_per_use} per use)")

    def line(self, count: int):
        if self.budget is not None and count > self.budget.lines:
            raise OverBudget(f"the kernel would have more than {self.budget.lines} lines (budget)")
