"""Optimization fuel: let only the first N optimization decisions happen.

Every decision a pass makes that changes what the graph computes or how (a fusion merge, a
simplify rule applied, a fold, a precision change) asks ``consume(what)`` first. Outside a
``budget`` it always may. Inside ``budget(n)`` only the first ``n`` decisions happen; the
rest are refused, so the passes leave those parts of the graph as they were. ``budget(None)``
refuses nothing and counts. Each budget keeps the description of every decision it allowed
(``log``), so that ``mlc bisect`` can name the one after which a result went wrong (as
LLVM's ``-opt-bisect-limit`` does for its passes). The option ``fuel`` (``MLC_FUEL``) sets a
budget for each compiled graph; an enclosing ``budget`` (the bisector's) wins over it.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class Fuel:
    limit: int | None  # decisions allowed; None: all
    used: int = 0
    refused: int = 0
    log: list[str] = field(default_factory=list)  # what each allowed decision was, in order


_current: contextvars.ContextVar[Fuel | None] = contextvars.ContextVar("mlc_fuel", default=None)


def consume(what: str | Callable[[], str]) -> bool:
    """May this decision happen? ``what`` describes it (a callable is called only when counted)."""
    fuel = _current.get()
    if fuel is None:
        return True
    if fuel.limit is not None and fuel.used >= fuel.limit:
        fuel.refused += 1
        return False
    fuel.used += 1
    fuel.log.append(what() if callable(what) else what)
    return True


def active() -> bool:
    """Is a budget counting decisions now (then compiles must not be served from a cache)?"""
    return _current.get() is not None


@contextlib.contextmanager
def budget(limit: int | None) -> Iterator[Fuel]:
    """Allow ``limit`` decisions (None: all, counted) inside the block; an outer budget wins."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    fuel = Fuel(limit)
    token = _current.set(fuel)
    try:
        yield fuel
    finally:
        _current.reset(token)
