"""Running IR graphs."""

from ..ir.reference import bind_symbols, run_reference

__all__ = ["bind_symbols", "run_reference"]
