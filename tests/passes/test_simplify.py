"""The simplification rules, one IR-text case each, run by the shared rewrite driver."""

import importlib
import inspect

import pytest

from mlc.passes import eliminate_dead_code, simplify
from mlc.passes.simplify import RULES_SIMPLIFY
from tests.irtext import assert_ir, run_on_text


def simplified(body: str, args: str = "%x: f32[4,8]") -> str:
    return run_on_text(f"graph @f({args}) {{\n{body}\n}}", simplify, eliminate_dead_code)


def expect(body: str, args: str = "%x: f32[4,8]") -> str:
    return f"graph @f({args}) {{\n{body}\n}}"


ONE = "%one = full {shape=[], value=1.0, dtype=f32} : f32[]"
ZERO = "%zero = full {shape=[], value=0.0, dtype=f32} : f32[]"
IDENTITY = "return %x"

# (rule, body before, body after): every rule in RULES_SIMPLIFY fires in at least one case.
CASES = [
    ("x*1 -> x", f"{ONE}\n%y = mul(%x, %one) : f32[4,8]\nreturn %y", IDENTITY),
    ("1*x -> x", f"{ONE}\n%y = mul(%one, %x) : f32[4,8]\nreturn %y", IDENTITY),
    ("x+0 -> x", f"{ZERO}\n%y = add(%x, %zero) : f32[4,8]\nreturn %y", IDENTITY),
    ("0+x -> x", f"{ZERO}\n%y = add(%zero, %x) : f32[4,8]\nreturn %y", IDENTITY),
    ("x-0 -> x", f"{ZERO}\n%y = sub(%x, %zero) : f32[4,8]\nreturn %y", IDENTITY),
    ("x/1 -> x", f"{ONE}\n%y = div(%x, %one) : f32[4,8]\nreturn %y", IDENTITY),
    ("x**1 -> x", f"{ONE}\n%y = pow(%x, %one) : f32[4,8]\nreturn %y", IDENTITY),
    ("--x -> x", "%a = neg(%x) : f32[4,8]\n%b = neg(%a) : f32[4,8]\nreturn %b", IDENTITY),
    ("relu(relu(x)) -> relu(x)", "%a = relu(%x) : f32[4,8]\n%b = relu(%a) : f32[4,8]\nreturn %b",
     "%a = relu(%x) : f32[4,8]\nreturn %a"),
    ("|(|x|)| -> |x|", "%a = abs(%x) : f32[4,8]\n%b = abs(%a) : f32[4,8]\nreturn %b", "%a = abs(%x) : f32[4,8]\nreturn %a"),
    ("permute(x, id) -> x", "%a = permute(%x) {dims=[0, 1]} : f32[4,8]\nreturn %a", IDENTITY),
    ("permute∘permute -> permute", "%a = permute(%x) {dims=[1, 0]} : f32[8,4]\n%b = permute(%a) {dims=[1, 0]} : f32[4,8]\n"
     "return %b", IDENTITY),
    ("view(x, x.shape) -> x", "%a = view(%x) {shape=[4, 8]} : f32[4,8]\nreturn %a", IDENTITY),
    ("view∘view -> view", "%a = view(%x) {shape=[32]} : f32[32]\n%b = view(%a) {shape=[2, 16]} : f32[2,16]\nreturn %b",
     "%b = view(%x) {shape=[2, 16]} : f32[2,16]\nreturn %b"),
    ("view∘view -> view (then x)", "%a = view(%x) {shape=[32]} : f32[32]\n%b = view(%a) {shape=[4, 8]} : f32[4,8]\n"
     "return %b", IDENTITY),
    ("expand(x, x.shape) -> x", "%a = expand(%x) {shape=[4, 8]} : f32[4,8]\nreturn %a", IDENTITY),
    ("expand(full) -> full", "%s = full {shape=[1, 1], value=2.0, dtype=f32} : f32[1,1]\n"
     "%a = expand(%s) {shape=[4, 8]} : f32[4,8]\n%b = mul(%x, %a) : f32[4,8]\nreturn %b",
     "%a = full {shape=[4, 8], value=2.0, dtype=f32} : f32[4,8]\n%b = mul(%x, %a) : f32[4,8]\nreturn %b"),
    ("x[0:len] -> x", "%a = slice(%x) {dim=1, start=0, end=8} : f32[4,8]\nreturn %a", IDENTITY),
    ("convert(x, x.dtype) -> x", "%a = convert(%x) {dtype=f32} : f32[4,8]\nreturn %a", IDENTITY),
    ("lossless cast∘cast -> cast (then x)", "%a = convert(%x) {dtype=f64} : f64[4,8]\n%b = convert(%a) {dtype=f32} : f32[4,8]\n"
     "return %b", IDENTITY),
    ("lossless cast∘cast -> cast", "%a = convert(%x) {dtype=f32} : f32[4,8]\n%b = convert(%a) {dtype=f64} : f64[4,8]\n"
     "return %b", "%b = convert(%x) {dtype=f64} : f64[4,8]\nreturn %b"),
    ("convert(full(v)) -> full(v)", "%s = full {shape=[], value=0.5, dtype=f32} : f32[]\n%a = convert(%s) {dtype=f16} : f16[]\n"
     "%b = mul(%x, %a) : f16[4,8]\nreturn %b",
     "%a = full {shape=[], value=0.5, dtype=f16} : f16[]\n%b = mul(%x, %a) : f16[4,8]\nreturn %b"),
    ("where(true, a, b) -> a", "%c = full {shape=[], value=true, dtype=b8} : b8[]\n%a = neg(%x) : f32[4,8]\n"
     "%w = where(%c, %x, %a) : f32[4,8]\nreturn %w", IDENTITY),
    ("where(true, a, b) -> a (false)", "%c = full {shape=[], value=false, dtype=b8} : b8[]\n%a = neg(%x) : f32[4,8]\n"
     "%w = where(%c, %a, %x) : f32[4,8]\nreturn %w", IDENTITY),
    ("!!x -> x", "%a = logical_not(%x) : b8[4,8]\n%b = logical_not(%a) : b8[4,8]\nreturn %b", IDENTITY),
    ("~~x -> x", "%a = bitwise_not(%x) : i32[4,8]\n%b = bitwise_not(%a) : i32[4,8]\nreturn %b", IDENTITY),
]
ARGS = {"convert(full(v)) -> full(v)": "%x: f16[4,8]", "!!x -> x": "%x: b8[4,8]", "~~x -> x": "%x: i32[4,8]",
        "lossless cast∘cast -> cast": "%x: f16[4,8]"}


@pytest.mark.parametrize("rule,before,after", CASES, ids=[c[0] for c in CASES])
def test_rule(rule, before, after):
    args = ARGS.get(rule, "%x: f32[4,8]")
    assert_ir(simplified(before, args), expect(after, args))


def test_every_rule_has_a_case():
    # A case is named by its rule's identity comment (plus a remark in parentheses).
    source = inspect.getsource(importlib.import_module("mlc.passes.simplify"))
    comments = [line.split("# ")[-1].strip() for line in source.splitlines() if line.strip().startswith('("')]
    assert len(comments) == len(RULES_SIMPLIFY)
    assert set(comments) == {c[0].split(" (")[0] for c in CASES}


# --- rules that must not fire: the replacement would not have the node's type ------------------

NOT_SIMPLIFIED = [
    # x*1 where the 1 broadcasts x to a bigger shape is not x
    ("%one = full {shape=[2, 4, 8], value=1.0, dtype=f32} : f32[2,4,8]\n%y = mul(%x, %one) : f32[2,4,8]\nreturn %y",
     "%x: f32[4,8]"),
    # an f16 x plus an f32 0 of the same rank is f32: promotion, not x
    ("%zero = full {shape=[1, 1], value=0.0, dtype=f32} : f32[1,1]\n%y = add(%x, %zero) : f32[4,8]\nreturn %y",
     "%x: f16[4,8]"),
    # i64 x / 1 is a float division
    ("%one = full {shape=[], value=1, dtype=i64} : i64[]\n%y = div(%x, %one) : f32[4,8]\nreturn %y", "%x: i64[4,8]"),
    # floor division by 1 of a float floors it
    ("%one = full {shape=[], value=1.0, dtype=f32} : f32[]\n%y = div(%x, %one) {rounding_mode=\"floor\"} : f32[4,8]\n"
     "return %y", "%x: f32[4,8]"),
    # f32 -> f16 -> f32 rounds: not lossless
    ("%a = convert(%x) {dtype=f16} : f16[4,8]\n%b = convert(%a) {dtype=f32} : f32[4,8]\nreturn %b", "%x: f32[4,8]"),
    # a slice that drops an element is no identity
    ("%a = slice(%x) {dim=1, start=1} : f32[4,7]\nreturn %a", "%x: f32[4,8]"),
    # x*2 is not x
    ("%two = full {shape=[], value=2.0, dtype=f32} : f32[]\n%y = mul(%x, %two) : f32[4,8]\nreturn %y", "%x: f32[4,8]"),
]


@pytest.mark.parametrize("body,args", NOT_SIMPLIFIED)
def test_rule_does_not_fire(body, args):
    assert_ir(simplified(body, args), expect(body, args))


def test_rules_apply_to_a_fixed_point():
    # --(--x) and transpose(transpose(view(view(x)))) need rules to fire on what rules made.
    got = simplified("%a = neg(%x) : f32[4,8]\n%b = neg(%a) : f32[4,8]\n%c = neg(%b) : f32[4,8]\n"
                     "%d = neg(%c) : f32[4,8]\n%e = view(%d) {shape=[32]} : f32[32]\n"
                     "%f = view(%e) {shape=[8, 4]} : f32[8,4]\n%g = permute(%f) {dims=[1, 0]} : f32[4,8]\n"
                     "%h = permute(%g) {dims=[1, 0]} : f32[8,4]\nreturn %h")
    assert_ir(got, expect("%f = view(%x) {shape=[8, 4]} : f32[8,4]\nreturn %f"))


def test_three_permutes_compose():
    got = simplified("%a = permute(%x) {dims=[1, 2, 0]} : f32[3,4,2]\n%b = permute(%a) {dims=[1, 2, 0]} : f32[4,2,3]\n"
                     "return %b", "%x: f32[2,3,4]")
    assert_ir(got, expect("%b = permute(%x) {dims=[2, 0, 1]} : f32[4,2,3]\nreturn %b", "%x: f32[2,3,4]"))
