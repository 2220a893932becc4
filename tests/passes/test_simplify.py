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
    # Reductions of one element (x: f32[4,1] below): a copy of x reshaped, never x itself.
    ("sum of one element -> copy of x", "%y = sum(%x) {dims=[1]} : f32[4]\nreturn %y",
     "%v = view(%x) {shape=[4]} : f32[4]\n%y = copy(%v) : f32[4]\nreturn %y"),
    ("sum of one element -> copy of x (keepdim: no view)", "%y = sum(%x) {dims=[-1], keepdim=true} : f32[4,1]\nreturn %y",
     "%y = copy(%x) : f32[4,1]\nreturn %y"),
    ("sum of one element -> copy of x (i32 sums to i64)", "%y = sum(%x) {dims=[1]} : i64[4]\nreturn %y",
     "%v = view(%x) {shape=[4]} : i32[4]\n%y = convert(%v) {dtype=i64} : i64[4]\nreturn %y"),
    ("sum of one element -> copy of x (a 0-d tensor)", "%y = sum(%x) : f32[]\nreturn %y", "%y = copy(%x) : f32[]\nreturn %y"),
    ("mean of one element -> copy of x", "%y = mean(%x) {dims=[1], keepdim=true} : f32[4,1]\nreturn %y",
     "%y = copy(%x) : f32[4,1]\nreturn %y"),
    ("prod of one element -> copy of x", "%y = prod(%x) {dims=[1], keepdim=true} : f32[4,1]\nreturn %y",
     "%y = copy(%x) : f32[4,1]\nreturn %y"),
    ("amax of one element -> copy of x", "%y = amax(%x) {dims=[0, 1], keepdim=true} : f32[1,1]\nreturn %y",
     "%y = copy(%x) : f32[1,1]\nreturn %y"),
    ("amin of one element -> copy of x", "%y = amin(%x) : f32[]\nreturn %y",
     "%v = view(%x) {shape=[]} : f32[]\n%y = copy(%v) : f32[]\nreturn %y"),
    ("any of one element -> x != 0", "%y = any(%x) {dims=[1]} : b8[4]\nreturn %y",
     "%v = view(%x) {shape=[4]} : f32[4]\n%y = convert(%v) {dtype=b8} : b8[4]\nreturn %y"),
    ("all of one element -> x != 0", "%y = all(%x) {dims=[1], keepdim=true} : b8[4,1]\nreturn %y",
     "%y = convert(%x) {dtype=b8} : b8[4,1]\nreturn %y"),
    ("var of one element -> x - x, or nan", "%y = var(%x) {dims=[1], correction=0} : f32[4]\nreturn %y",
     "%d = sub(%x, %x) : f32[4,1]\n%y = view(%d) {shape=[4]} : f32[4]\nreturn %y"),
    ("var of one element -> x - x, or nan (correction 1: 0 / 0)", "%y = var(%x) {dims=[1]} : f32[4]\nreturn %y",
     "%y = full {shape=[4], value=nan, dtype=f32} : f32[4]\nreturn %y"),
    ("argmax of one element -> 0", "%y = argmax(%x) {dim=1} : i64[4]\nreturn %y",
     "%y = full {shape=[4], value=0, dtype=i64} : i64[4]\nreturn %y"),
    ("argmin of one element -> 0", "%y = argmin(%x) {dim=-1, keepdim=true} : i64[4,1]\nreturn %y",
     "%y = full {shape=[4, 1], value=0, dtype=i64} : i64[4,1]\nreturn %y"),
]
ARGS = {"convert(full(v)) -> full(v)": "%x: f16[4,8]", "!!x -> x": "%x: b8[4,8]", "~~x -> x": "%x: i32[4,8]",
        "lossless cast∘cast -> cast": "%x: f16[4,8]",
        **{c[0]: "%x: f32[4,1]" for c in CASES if " of one element " in c[0]},
        "sum of one element -> copy of x (i32 sums to i64)": "%x: i32[4,1]",
        "sum of one element -> copy of x (a 0-d tensor)": "%x: f32[]",
        "amax of one element -> copy of x": "%x: f32[1,1]", "amin of one element -> copy of x": "%x: f32[1,1]"}


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
    # a sum over a dim of 8, of no elements (a size-0 dim: zeros), over a symbolic size: reductions
    ("%y = sum(%x) {dims=[1], keepdim=true} : f32[4,1]\nreturn %y", "%x: f32[4,8]"),
    ("%y = sum(%x) {dims=[1]} : f32[4]\nreturn %y", "%x: f32[4,0]"),
    ("%y = amax(%x) {dims=[1]} : f32[4]\nreturn %y", "%x: f32[4,s0]"),
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


@pytest.mark.filterwarnings("ignore:var.*degrees of freedom")
def test_reductions_of_one_element_give_what_torch_gives():
    import torch

    from mlc.ir import parse
    from mlc.ir.reference import run_reference

    x = torch.tensor([[3.0], [-2.0], [float("inf")], [float("nan")]])
    cases = [c for c in CASES if " of one element " in c[0] and ARGS[c[0]] == "%x: f32[4,1]"]
    for rule, before, _ in cases:
        graph = parse(expect(before, "%x: f32[4,1]"))
        got, = run_reference(simplify(graph), [x])
        want, = run_reference(graph, [x])  # torch's own reduction
        torch.testing.assert_close(got, want, equal_nan=True, msg=rule)
        assert got.data_ptr() != x.data_ptr(), rule  # a new tensor, as in eager


def test_a_reduction_of_one_element_fuses_like_a_copy():
    from mlc.passes import fuse

    got = run_on_text("""
        graph @router(%top: f32[8,1]) {
          %s = sum(%top) {dims=[-1], keepdim=true} : f32[8,1]
          %w = div(%top, %s) : f32[8,1]
          return %w
        }""", simplify, fuse, eliminate_dead_code)
    assert_ir(got, """
        graph @router(%top: f32[8,1]) {
          %0 = kernel @fused_div(%top) : f32[8,1] {
            %s = copy(%top) : f32[8,1]
            %w = div(%top, %s) : f32[8,1]
            yield %w
          }
          return %0
        }""")
