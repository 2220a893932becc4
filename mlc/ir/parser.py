"""Reads the IR's text form (see ``printer``) back into a ``Graph``.

Errors raise ``ParseError`` with the line and column where the text stops making sense.
Result types written in the text are kept as they are; ``verify`` checks them.
"""

from __future__ import annotations

import json
import re

import sympy
import torch

from .graph import Graph, GraphBuilder, Node, Operand, Value
from .ops import OPS, complete_attrs
from .types import DTYPES_BY_NAME, SymType, TensorType

_NAME = r"[A-Za-z_][A-Za-z0-9_.]*|[0-9]+"
_INT = re.compile(r"-?[0-9]+\Z")
_FLOAT = re.compile(r"-?([0-9]+\.[0-9]*([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+|inf|nan)\Z")
_EXPR_OK = re.compile(r"[A-Za-z0-9_+\-*/() ,]+\Z")
_EXPR_FUNCS = {"floor": sympy.floor, "ceiling": sympy.ceiling, "Mod": sympy.Mod, "Max": sympy.Max, "Min": sympy.Min}


class ParseError(ValueError):
    """Malformed IR text; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int, source_line: str = ""):
        self.message, self.line, self.column = message, line, column
        text = f"line {line}, column {column}: {message}"
        if source_line:
            text += f"\n  {source_line}\n  {' ' * (column - 1)}^"
        super().__init__(text)


class _Cursor:
    """Reads one line left to right."""

    def __init__(self, text: str, lineno: int):
        self.text, self.lineno, self.pos = text, lineno, 0

    def error(self, message: str, pos: int | None = None) -> ParseError:
        return ParseError(message, self.lineno, (self.pos if pos is None else pos) + 1, self.text)

    def skip_ws(self):
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self, s: str) -> bool:
        self.skip_ws()
        return self.text.startswith(s, self.pos)

    def accept(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str, what: str | None = None):
        if not self.accept(s):
            found = self.text[self.pos:self.pos + 12] or "end of line"
            raise self.error(f"expected {what or repr(s)}, found {found!r}")

    def match(self, pattern: str, what: str) -> str:
        self.skip_ws()
        m = re.compile(pattern).match(self.text, self.pos)
        if not m:
            found = self.text[self.pos:self.pos + 12] or "end of line"
            raise self.error(f"expected {what}, found {found!r}")
        self.pos = m.end()
        return m.group(0)

    def until(self, stops: str) -> tuple[str, int]:
        """Raw text up to the first of ``stops`` outside parentheses, brackets and quotes."""
        self.skip_ws()
        start, depth = self.pos, 0
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == '"':
                end = _string_end(self.text, self.pos)
                if end < 0:
                    raise self.error("unterminated string")
                self.pos = end
                continue
            if depth == 0 and c in stops:
                break
            if c in "([":
                depth += 1
            elif c in ")]":
                depth -= 1
            self.pos += 1
        return self.text[start:self.pos].strip(), start

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)


def _string_end(text: str, pos: int) -> int:
    i = pos + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    return -1


def _parse_expr(text: str, cur: _Cursor, pos: int):
    if not text or not _EXPR_OK.match(text):
        raise cur.error(f"cannot read {text!r} as a value", pos)
    local = {}
    # Left to right, with each name's own position: the first unknown name is the one
    # reported, at its column (``text.index`` could find it inside an earlier name).
    for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", text):
        n = m.group(0)
        if n in _EXPR_FUNCS:
            local[n] = _EXPR_FUNCS[n]
        elif re.fullmatch(r"[a-z][0-9]+", n):
            local[n] = sympy.Symbol(n, integer=True, positive=True)
        else:
            raise cur.error(f"unknown name {n!r} in {text!r}", pos + m.start())
    try:
        expr = sympy.sympify(text, locals=local)
    except (sympy.SympifyError, SyntaxError, TypeError) as e:
        raise cur.error(f"cannot read {text!r} as a size expression", pos) from e
    return int(expr) if expr.is_Integer else expr


def _parse_dim(text: str, cur: _Cursor, pos: int):
    if _INT.match(text):
        return int(text)
    return _parse_expr(text, cur, pos)


def parse_attr_value(cur: _Cursor):
    cur.skip_ws()
    if cur.accept("["):
        items = []
        if not cur.accept("]"):
            while True:
                items.append(parse_attr_value(cur))
                if cur.accept("]"):
                    break
                cur.expect(",", "',' or ']'")
        return tuple(items)
    if cur.peek('"'):
        end = _string_end(cur.text, cur.pos)
        if end < 0:
            raise cur.error("unterminated string")
        text = cur.text[cur.pos:end]
        cur.pos = end
        return json.loads(text)
    text, pos = cur.until(",]}")
    if text in ("true", "false"):
        return text == "true"
    if text == "none":
        return None
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text in DTYPES_BY_NAME:
        return DTYPES_BY_NAME[text]
    if re.fullmatch(r"\$[0-9]+", text):
        return Operand(int(text[1:]))
    if text.startswith("torch."):
        v = getattr(torch, text[len("torch."):], None)
        if isinstance(v, (torch.layout, torch.memory_format)):
            return v
        raise cur.error(f"unknown torch constant {text!r}", pos)
    return _parse_expr(text, cur, pos)


def parse_type(cur: _Cursor):
    cur.skip_ws()
    start = cur.pos
    if cur.accept("sym("):
        text, pos = cur.until(")")
        cur.expect(")")
        return SymType(_parse_dim(text, cur, pos))
    name = cur.match(r"[a-z]+[0-9]*", "a type such as f32[4,8]")
    if name not in DTYPES_BY_NAME:
        raise cur.error(f"unknown dtype {name!r} (known: {', '.join(DTYPES_BY_NAME)})", start)
    cur.expect("[", "'[' after the dtype")

    def dims(close: str):
        out = []
        if cur.accept(close):
            return tuple(out)
        while True:
            text, pos = cur.until("," + close)
            out.append(_parse_dim(text, cur, pos))
            if cur.accept(close):
                return tuple(out)
            cur.expect(",", f"',' or '{close}'")

    shape = dims("]")
    strides = None
    if cur.text.startswith("{", cur.pos):
        strides_pos = cur.pos
        cur.pos += 1
        strides = dims("}")
        if len(strides) != len(shape):
            raise cur.error(f"{len(strides)} strides for {len(shape)} dims", strides_pos)
    device = "cpu"
    if cur.text.startswith("@", cur.pos):
        cur.pos += 1
        device = cur.match(r"[a-z]+(:[0-9]+)?", "a device such as cuda:0")
    return TensorType(shape, DTYPES_BY_NAME[name], device, strides)


def _parse_value_ref(cur: _Cursor, env: dict[str, Value]) -> Value:
    cur.skip_ws()
    pos = cur.pos
    cur.expect("%", "a value such as %0")
    name = cur.match(_NAME, "a value name")
    if name not in env:
        raise cur.error(f"use of undefined value %{name}", pos)
    return env[name]


def _parse_node_line(cur: _Cursor, b: GraphBuilder, env: dict[str, Value], lines: "_Lines"):
    results = []
    while True:
        cur.skip_ws()
        pos = cur.pos
        cur.expect("%", "a result such as %0")
        name = cur.match(_NAME, "a result name")
        if name in env or any(name == r for r, _ in results):  # twice on one line counts too
            raise cur.error(f"value %{name} is defined twice", pos)
        results.append((name, pos))
        if not cur.accept(","):
            break
    cur.expect("=", "'='")
    cur.skip_ws()  # so that op_pos is where the op name starts, however many spaces precede it
    op_pos = cur.pos
    op = cur.match(r"[A-Za-z_][A-Za-z0-9_]*", "an op name")
    if op not in OPS:
        raise cur.error(f"unknown op '{op}'", op_pos)
    if op == "kernel":
        return _parse_kernel(cur, b, env, results, lines)
    inputs = []
    if cur.accept("("):
        if not cur.accept(")"):
            while True:
                inputs.append(_parse_value_ref(cur, env))
                if cur.accept(")"):
                    break
                cur.expect(",", "',' or ')'")
    attrs = {}
    if cur.accept("{"):
        if not cur.accept("}"):
            while True:
                cur.skip_ws()
                key_pos = cur.pos
                key = cur.match(r"[A-Za-z_][A-Za-z0-9_]*", "an attribute name")
                if key in attrs:
                    raise cur.error(f"attribute '{key}' given twice", key_pos)
                cur.expect("=", "'=' after the attribute name")
                attrs[key] = parse_attr_value(cur)
                if cur.accept("}"):
                    break
                cur.expect(",", "',' or '}'")
    cur.expect(":", "':' and the result types")
    types = [parse_type(cur)]
    while cur.accept(","):
        types.append(parse_type(cur))
    if not cur.at_end():
        raise cur.error(f"unexpected text {cur.text[cur.pos:cur.pos + 12]!r}")
    if len(types) != len(results):
        raise cur.error(f"{len(results)} results but {len(types)} types", results[0][1])
    if op == "constant":
        if inputs or attrs or len(results) != 1:
            raise cur.error("a constant has no operands or attributes and one result", op_pos)
        v = b.constant(results[0][0], None, types[0])
        env[results[0][0]] = v
        return
    node = b.append(Node(op, inputs, complete_attrs(op, attrs), types))
    for (name, _), v in zip(results, node.results):
        env[name] = v


class _Lines:
    """The text's lines as cursors, skipping blank lines and whole-line ``//`` comments."""

    def __init__(self, text: str):
        self.raw = text.splitlines()
        self.lineno = 0

    def next(self) -> _Cursor | None:
        while self.lineno < len(self.raw):
            self.lineno += 1
            line = self.raw[self.lineno - 1]
            line = "" if line.lstrip().startswith("//") else line.rstrip()
            cur = _Cursor(line, self.lineno)
            if not cur.at_end():
                return cur
        return None


def _parse_kernel(cur: _Cursor, b: GraphBuilder, env: dict[str, Value], results, lines: _Lines):
    """``%r = kernel @name(%a, %b) : T {`` then the body's nodes, ``yield ...`` and ``}``."""
    cur.expect("@", "'@' and the kernel's name")
    name = cur.match(r"[A-Za-z_][A-Za-z0-9_]*", "a kernel name")
    cur.expect("(", "'(' and the kernel's operands")
    inputs, operand_names = [], []
    if not cur.accept(")"):
        while True:
            cur.skip_ws()
            pos = cur.pos
            v = _parse_value_ref(cur, env)
            if v in inputs:
                raise cur.error("a value is passed to a kernel twice", pos)
            inputs.append(v)
            operand_names.append(cur.text[pos + 1:cur.pos])
            if cur.accept(")"):
                break
            cur.expect(",", "',' or ')'")
    cur.expect(":", "':' and the result types")
    types = [parse_type(cur)]
    while cur.accept(","):
        types.append(parse_type(cur))
    cur.expect("{", "'{' opening the kernel's body")
    if not cur.at_end():
        raise cur.error("unexpected text after '{'")
    if len(types) != len(results):
        raise cur.error(f"{len(results)} results but {len(types)} types", results[0][1])
    body_b = GraphBuilder(name)
    # The body's inputs are in0, in1, ... as the fusion pass names them; in the text they
    # appear under the names of the kernel's operands.
    body_env = {n: body_b.input(f"in{k}", v.type) for k, (n, v) in enumerate(zip(operand_names, inputs))}
    start = cur
    while True:
        line = lines.next()
        if line is None:
            raise ParseError("unexpected end of text: expected 'yield' closing the kernel", lines.lineno + 1, 1)
        if line.accept("yield"):
            outputs = []
            if not line.at_end():
                while True:
                    outputs.append(_parse_value_ref(line, body_env))
                    if line.at_end():
                        break
                    line.expect(",", "',' between yielded values")
            break
        if line.peek("}"):
            raise line.error("missing 'yield' before the '}' closing the kernel")
        _parse_node_line(line, body_b, body_env, lines)
    close = lines.next()
    if close is None:
        raise ParseError("unexpected end of text: expected '}' closing the kernel", lines.lineno + 1, 1)
    close.expect("}", "'}' closing the kernel")
    if not close.at_end():
        raise close.error("unexpected text after '}'")
    if len(outputs) != len(types):
        raise start.error(f"the kernel yields {len(outputs)} values but declares {len(types)} types", results[0][1])
    node = b.append(Node("kernel", inputs, {"body": body_b.build(outputs)}, types))
    for (res, _), v in zip(results, node.results):
        env[res] = v


def parse_graphs(text: str, constants: dict[str, torch.Tensor] | None = None) -> list[Graph]:
    """Parse every graph in ``text``. ``constants`` supplies tensors for constant nodes by name."""
    graphs: list[Graph] = []
    b: GraphBuilder | None = None
    env: dict[str, Value] = {}
    outputs = None
    lines = _Lines(text)
    while (cur := lines.next()) is not None:
        if b is None:
            cur.expect("graph", "'graph @name(...) {'")
            cur.expect("@", "'@' and the graph's name")
            name = cur.match(r"[A-Za-z_][A-Za-z0-9_]*", "a graph name")
            b, env, outputs = GraphBuilder(name), {}, None
            cur.expect("(")
            if not cur.accept(")"):
                while True:
                    cur.skip_ws()
                    pos = cur.pos
                    cur.expect("%", "an input such as %x")
                    arg = cur.match(r"[A-Za-z_][A-Za-z0-9_.]*", "an input name")
                    if arg in env:
                        raise cur.error(f"input %{arg} is defined twice", pos)
                    cur.expect(":", "':' and the input's type")
                    env[arg] = b.input(arg, parse_type(cur))
                    if cur.accept(")"):
                        break
                    cur.expect(",", "',' or ')'")
            cur.expect("{")
            if not cur.at_end():
                raise cur.error("unexpected text after '{'")
        elif outputs is None:
            if cur.peek("}"):
                raise cur.error("missing 'return' before the '}' closing the graph")
            if cur.accept("return"):
                outputs = []
                if not cur.at_end():
                    while True:
                        outputs.append(_parse_value_ref(cur, env))
                        if cur.at_end():
                            break
                        cur.expect(",", "',' between returned values")
            else:
                _parse_node_line(cur, b, env, lines)
        else:
            cur.expect("}", "'}' closing the graph")
            if not cur.at_end():
                raise cur.error("unexpected text after '}'")
            g = b.build(outputs)
            if constants:
                g = Graph(g.name, g.inputs, g.nodes, g.outputs,
                          {n.name: constants[n.name] for n in g.nodes if n.op == "constant" and n.name in constants})
            graphs.append(g)
            b = None
    if b is not None:
        what = "'return'" if outputs is None else "'}'"
        raise ParseError(f"unexpected end of text: expected {what}", lines.lineno + 1, 1)
    return graphs


def parse(text: str, constants: dict[str, torch.Tensor] | None = None) -> Graph:
    """Parse exactly one graph."""
    graphs = parse_graphs(text, constants)
    if len(graphs) != 1:
        # Point at the second graph's header (at top level only headers start with 'graph').
        headers = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.lstrip().startswith("graph")]
        lineno, line = headers[1] if len(graphs) > 1 else (1, "")
        hint = "; use parse_graphs to read several" if len(graphs) > 1 else ""
        raise ParseError(f"expected one graph, found {len(graphs)}{hint}", lineno,
                         len(line) - len(line.lstrip()) + 1, line)
    return graphs[0]
