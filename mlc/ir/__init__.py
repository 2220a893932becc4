"""mlc's IR: types, nodes and graphs, the op table, text form, verifier."""

from .graph import Graph, GraphBuilder, Node, Operand, Value, rebuild
from .ops import OPS, POINTWISE, REDUCTIONS, VIEWS, Category, InferError, OpDef, infer_types
from .parser import ParseError, parse, parse_graphs
from .printer import print_graph
from .types import DTYPE_NAMES, DTYPES_BY_NAME, SymType, TensorType, Type
from .verifier import VerifyError, verify

__all__ = [
    "Graph", "GraphBuilder", "Node", "Operand", "Value", "rebuild", "OPS", "POINTWISE", "REDUCTIONS", "VIEWS",
    "Category", "InferError", "OpDef", "infer_types", "ParseError", "parse", "parse_graphs", "print_graph",
    "DTYPE_NAMES", "DTYPES_BY_NAME", "SymType", "TensorType", "Type", "VerifyError", "verify",
]
