"""mlc: a graph compiler for PyTorch. ``torch.compile(model, backend="mlc")``."""

from .api import capture
from .backend import mlc_backend, register
from .explain import Report, explain
from .ir import Graph, ParseError, VerifyError, parse, verify

__version__ = "0.1.0"
__all__ = ["capture", "explain", "Report", "mlc_backend", "Graph", "ParseError", "VerifyError", "parse", "verify", "__version__"]

register()
