"""One test per kind of malformed IR text; each pins the line, the column and the message.

Expected columns are computed from the text (where ``token`` starts in that line), so each
test says *what* the error should point at rather than a number.
"""

from __future__ import annotations

import re

import pytest

from mlc.ir import ParseError, parse, parse_graphs, verify

HEAD = "graph @f(%x: f32[4,8]) {"


def text(*lines: str) -> str:
    return "\n".join(lines)


def column_of(line: str, token: str, occurrence: int = 1) -> int:
    pos = -1
    for _ in range(occurrence):
        pos = line.index(token, pos + 1)
    return pos + 1


def check_error(lines: list[str], lineno: int, token: str | None, message: str, occurrence: int = 1) -> ParseError:
    """``parse`` fails at line ``lineno``, at ``token`` (None: just past the end of the line)."""
    with pytest.raises(ParseError) as info:
        parse(text(*lines))
    err = info.value
    line = lines[lineno - 1] if lineno <= len(lines) else ""
    column = len(line) + 1 if token is None else column_of(line, token, occurrence)
    assert (err.line, err.column) == (lineno, column), f"{err}"
    assert re.search(message, err.message), f"{err.message!r} does not match {message!r}"
    assert str(err).startswith(f"line {lineno}, column {column}: ")
    return err


# --- ops, values, types -----------------------------------------------------------------


def test_unknown_op_name():
    check_error([HEAD, "  %0 = frobnicate(%x) : f32[4,8]", "  return %0", "}"], 2, "frobnicate",
                re.escape("unknown op 'frobnicate'"))
    # The column is the op's, however much space precedes it.
    check_error([HEAD, "  %0 =    frobnicate(%x) : f32[4,8]", "  return %0", "}"], 2, "frobnicate",
                re.escape("unknown op 'frobnicate'"))


def test_missing_op_name():
    check_error([HEAD, "  %0 = (%x) : f32[4,8]", "  return %0", "}"], 2, "(", re.escape("expected an op name, found '(%x)"))


def test_unknown_dtype():
    err = check_error([HEAD, "  %0 = exp(%x) : f33[4,8]", "  return %0", "}"], 2, "f33",
                      re.escape("unknown dtype 'f33' (known: f64, f32, f16, bf16,"))
    assert "b8" in err.message  # the message lists what is known
    check_error(["graph @f(%x: float32[4]) {", "  return %x", "}"], 1, "float32", re.escape("unknown dtype 'float32'"))


def test_type_that_is_not_a_type():
    check_error([HEAD, "  %0 = exp(%x) : [4,8]", "  return %0", "}"], 2, "[",
                re.escape("expected a type such as f32[4,8], found '[4,8]'"))
    check_error([HEAD, "  %0 = exp(%x) : f32", "  return %0", "}"], 2, None,
                re.escape("expected '[' after the dtype, found 'end of line'"))


def test_undefined_value():
    check_error([HEAD, "  %0 = add(%x, %y) : f32[4,8]", "  return %0", "}"], 2, "%y", re.escape("use of undefined value %y"))
    check_error([HEAD, "  %0 = exp(%x) : f32[4,8]", "  return %0, %1", "}"], 3, "%1", re.escape("use of undefined value %1"))


def test_value_used_before_its_definition_is_undefined():
    check_error([HEAD, "  %0 = exp(%1) : f32[4,8]", "  %1 = neg(%x) : f32[4,8]", "  return %0", "}"], 2, "%1",
                re.escape("use of undefined value %1"))


def test_value_defined_twice():
    check_error([HEAD, "  %0 = exp(%x) : f32[4,8]", "  %0 = neg(%x) : f32[4,8]", "  return %0", "}"], 3, "%0",
                re.escape("value %0 is defined twice"))
    # A result may not reuse an input's name either.
    check_error([HEAD, "  %x = exp(%x) : f32[4,8]", "  return %x", "}"], 2, "%x", re.escape("value %x is defined twice"))
    check_error(["graph @f(%x: f32[4], %x: f32[4]) {", "  return %x", "}"], 1, "%x", re.escape("input %x is defined twice"),
                occurrence=2)
    check_error([HEAD, "  %a, %a = aten(%x) {target=\"aten.sort.default\", args=[$0]} : f32[4,8], i64[4,8]",
                 "  return %a", "}"], 2, "%a", re.escape("value %a is defined twice"), occurrence=2)


def test_missing_equals():
    check_error([HEAD, "  %0 exp(%x) : f32[4,8]", "  return %0", "}"], 2, "exp",
                re.escape("expected '=', found 'exp(%x) : f3'"))


def test_missing_colon_and_types():
    check_error([HEAD, "  %0 = exp(%x)", "  return %0", "}"], 2, None,
                re.escape("expected ':' and the result types, found 'end of line'"))
    check_error([HEAD, "  %0 = exp(%x) f32[4,8]", "  return %0", "}"], 2, "f32",
                re.escape("expected ':' and the result types, found 'f32[4,8]'"))
    check_error([HEAD, "  %0 = exp(%x) :", "  return %0", "}"], 2, None,
                re.escape("expected a type such as f32[4,8], found 'end of line'"))


def test_wrong_number_of_types_for_results():
    check_error([HEAD, "  %0, %1 = exp(%x) : f32[4,8]", "  return %0", "}"], 2, "%0", re.escape("2 results but 1 types"))
    check_error([HEAD, "  %0 = exp(%x) : f32[4,8], f32[4,8]", "  return %0", "}"], 2, "%0",
                re.escape("1 results but 2 types"))


def test_unexpected_text_after_the_types():
    check_error([HEAD, "  %0 = exp(%x) : f32[4,8] junk", "  return %0", "}"], 2, "junk", re.escape("unexpected text 'junk'"))


def test_bad_operand_list():
    check_error([HEAD, "  %0 = add(%x %x) : f32[4,8]", "  return %0", "}"], 2, "%x", re.escape("expected ',' or ')'"),
                occurrence=2)
    check_error([HEAD, "  %0 = add(x) : f32[4,8]", "  return %0", "}"], 2, "x)", re.escape("expected a value such as %0"))


# --- attributes -------------------------------------------------------------------------


def test_bad_attribute_syntax():
    check_error([HEAD, "  %0 = sum(%x) {dims=[1} : f32[4]", "  return %0", "}"], 2, "}",
                re.escape("expected ',' or ']', found '} : f32[4]'"))
    check_error([HEAD, "  %0 = sum(%x) {dims [1]} : f32[4]", "  return %0", "}"], 2, "[",
                re.escape("expected '=' after the attribute name, found '[1]} : f32[4'"))
    check_error([HEAD, "  %0 = sum(%x) {=[1]} : f32[4]", "  return %0", "}"], 2, "=", re.escape("expected an attribute name"),
                occurrence=2)
    check_error([HEAD, "  %0 = sum(%x) {dims=[1] keepdim=true} : f32[4]", "  return %0", "}"], 2, "keepdim",
                re.escape("expected ',' or '}', found 'keepdim=true'"))
    check_error([HEAD, "  %0 = sum(%x) {dims=[1],   dims=[0]} : f32[4]", "  return %0", "}"], 2, "dims",
                re.escape("attribute 'dims' given twice"), occurrence=2)


def test_attribute_value_that_is_not_a_value():
    # A bare word is neither a string (those are quoted) nor a size symbol.
    check_error([HEAD, "  %0 = gelu(%x) {approximate=tanh} : f32[4,8]", "  return %0", "}"], 2, "tanh",
                re.escape("unknown name 'tanh' in 'tanh'"))
    check_error([HEAD, "  %0 = aten(%x) {target=\"aten.clone.default\", args=[$0, torch.nope]} : f32[4,8]",
                 "  return %0", "}"], 2, "torch.nope", re.escape("unknown torch constant 'torch.nope'"))
    check_error([HEAD, "  %0 = clamp(%x) {min=1.2.3} : f32[4,8]", "  return %0", "}"], 2, "1.2.3",
                re.escape("cannot read '1.2.3' as a value"))


def test_unterminated_string():
    check_error([HEAD, '  %0 = gelu(%x) {approximate="tanh} : f32[4,8]', "  return %0", "}"], 2, '"',
                re.escape("unterminated string"))
    check_error([HEAD, '  %0 = gelu(%x) {approximate="tan\\"h} : f32[4,8]', "  return %0", "}"], 2, '"',
                re.escape("unterminated string"))


# --- sizes and strides ------------------------------------------------------------------


def test_unknown_name_in_a_size_expression():
    check_error(["graph @f(%x: f32[n,8]) {", "  return %x", "}"], 1, "n,", re.escape("unknown name 'n' in 'n'"))
    # The first unknown name is reported, at its own position (not inside an earlier name).
    check_error(["graph @f(%x: f32[s0, 2*ab+b]) {", "  return %x", "}"], 1, "ab", re.escape("unknown name 'ab' in '2*ab+b'"))
    check_error([HEAD, "  %0 = view(%x) {shape=[s0*foo]} : f32[32]", "  return %0", "}"], 2, "foo",
                re.escape("unknown name 'foo' in 's0*foo'"))


def test_size_expression_that_does_not_parse():
    check_error(["graph @f(%x: f32[2*]) {", "  return %x", "}"], 1, "2*", re.escape("cannot read '2*' as a size expression"))
    check_error(["graph @f(%x: f32[s0.5]) {", "  return %x", "}"], 1, "s0.5", re.escape("cannot read 's0.5' as a value"))


def test_bad_strides_count():
    check_error([HEAD, "  %0 = exp(%x) : f32[4,8]{1}", "  return %0", "}"], 2, "{1}", re.escape("1 strides for 2 dims"))
    check_error(["graph @f(%x: f32[4]{1,1,1}) {", "  return %x", "}"], 1, "{1,1,1}", re.escape("3 strides for 1 dims"))


def test_bad_device():
    check_error(["graph @f(%x: f32[4]@) {", "  return %x", "}"], 1, ")", re.escape("expected a device such as cuda:0"))


# --- graph structure --------------------------------------------------------------------


def test_missing_return():
    check_error([HEAD, "  %0 = exp(%x) : f32[4,8]", "}"], 3, "}", re.escape("missing 'return' before the '}' closing the graph"))
    # At the end of the text, the error is just past the last line.
    check_error([HEAD, "  %0 = exp(%x) : f32[4,8]"], 3, None, re.escape("unexpected end of text: expected 'return'"))


def test_missing_closing_brace():
    check_error([HEAD, "  return %x"], 3, None, re.escape("unexpected end of text: expected '}'"))
    check_error([HEAD, "  return %x", "graph @g(%y: f32[4]) {", "  return %y", "}"], 3, "graph",
                re.escape("expected '}' closing the graph, found 'graph @g(%y:'"))


def test_garbage_after_closing_brace():
    check_error([HEAD, "  return %x", "} extra"], 3, "extra", re.escape("unexpected text after '}'"))
    check_error([HEAD, "  return %x", "}", "extra"], 4, "extra", re.escape("expected 'graph @name(...) {', found 'extra'"))


def test_bad_graph_header():
    check_error(["graph f(%x: f32[4]) {", "  return %x", "}"], 1, "f(", re.escape("expected '@' and the graph's name"))
    check_error(["graph @f(%x f32[4]) {", "  return %x", "}"], 1, "f32", re.escape("expected ':' and the input's type"))
    check_error(["graph @f(%x: f32[4]) { %0", "  return %x", "}"], 1, "%0", re.escape("unexpected text after '{'"))
    check_error(["graph @f(%x: f32[4])", "  return %x", "}"], 1, None, re.escape("expected '{', found 'end of line'"))


def test_bad_return():
    check_error([HEAD, "  return %x %x", "}"], 2, "%x", re.escape("expected ',' between returned values"), occurrence=2)
    check_error([HEAD, "  return x", "}"], 2, "x", re.escape("expected a value such as %0, found 'x'"))


def test_constant_with_operands():
    check_error([HEAD, "  %c = constant(%x) : f32[4,8]", "  return %c", "}"], 2, "constant",
                re.escape("a constant has no operands or attributes and one result"))


def test_error_text_shows_the_line_and_a_caret():
    err = check_error([HEAD, "  %0 = frobnicate(%x) : f32[4,8]", "  return %0", "}"], 2, "frobnicate", "unknown op")
    shown = str(err).splitlines()
    assert shown[1] == "    %0 = frobnicate(%x) : f32[4,8]"
    assert shown[2] == "  " + " " * (err.column - 1) + "^"


# --- comments and several graphs ---------------------------------------------------------

TWO = text(
    "// two graphs",
    "graph @f(%x: f32[4]) {",
    "  // a comment inside a graph",
    "  %0 = exp(%x) : f32[4]",
    "    // an indented comment, then a blank line",
    "",
    "  return %0",
    "}",
    "",
    "// between graphs",
    "graph @g(%y: f32[s0]) {",
    "  return %y",
    "}",
    "// at the end",
)


def test_comments_are_ignored():
    f, g = parse_graphs(TWO)
    assert str(f) == text("graph @f(%x: f32[4]) {", "  %0 = exp(%x) : f32[4]", "  return %0", "}")
    assert str(g) == text("graph @g(%y: f32[s0]) {", "  return %y", "}")
    verify(f), verify(g)


def test_parse_graphs_returns_every_graph_and_parse_refuses_two():
    assert [g.name for g in parse_graphs(TWO)] == ["f", "g"]
    err = check_error(TWO.splitlines(), 11, "graph", re.escape("expected one graph, found 2; use parse_graphs to read several"))
    assert err.line == 11
    assert parse_graphs("") == [] and parse_graphs("// nothing\n\n") == []
    with pytest.raises(ParseError, match=re.escape("line 1, column 1: expected one graph, found 0")):
        parse("// nothing here")


def test_printed_text_parses_to_the_same_text():
    src = text(
        "graph @f(%x: f32[s0,8], %w: f32[8,8]{1,8}, %n: sym(s1)) {",
        "  %0 = mm(%x, %w) : f32[s0,8]",
        '  %1 = gelu(%0) {approximate="tanh"} : f32[s0,8]',
        "  %2 = sum(%1) {dims=[1]} : f32[s0]",
        "  %3, %4 = aten(%1) {target=\"aten.sort.default\", args=[$0, -1]} : f32[s0,8], i64[s0,8]",
        "  %5 = symint {expr=2*s1} : sym(2*s1)",
        "  return %1, %2, %4, %5",
        "}",
    )
    assert str(verify(parse(src))) == src
