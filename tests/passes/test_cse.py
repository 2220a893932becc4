"""Common subexpression elimination, as IR text in and out."""

import dataclasses
import textwrap

import torch

from mlc.ir import parse, verify
from mlc.passes import eliminate_common_subexpressions, eliminate_dead_code, run_passes
from tests.irtext import assert_ir, run_on_text


def cse(text: str) -> str:
    return run_on_text(text, eliminate_common_subexpressions, eliminate_dead_code)


def test_equal_nodes_merge_and_their_users_then_merge_too():
    got = cse("""
        graph @f(%x: f32[4,8], %w: f32[8]) {
          %a = view(%x) {shape=[32]} : f32[32]
          %b = view(%x) {shape=[32]} : f32[32]
          %c = exp(%a) : f32[32]
          %d = exp(%b) : f32[32]
          %e = add(%c, %d) : f32[32]
          return %e
        }""")
    assert_ir(got, """
        graph @f(%x: f32[4,8], %w: f32[8]) {
          %a = view(%x) {shape=[32]} : f32[32]
          %c = exp(%a) : f32[32]
          %e = add(%c, %c) : f32[32]
          return %e
        }""")


def test_different_attributes_or_operands_do_not_merge():
    text = """
        graph @f(%x: f32[4,8], %y: f32[4,8]) {
          %a = sum(%x) {dims=[0]} : f32[8]
          %b = sum(%x) {dims=[1]} : f32[4]
          %c = exp(%x) : f32[4,8]
          %d = exp(%y) : f32[4,8]
          %e = gelu(%x) : f32[4,8]
          %f = gelu(%x) {approximate="tanh"} : f32[4,8]
          return %a, %b, %c, %d, %e, %f
        }"""
    assert_ir(cse(text), text)


def test_equal_fulls_merge_but_zero_and_minus_zero_do_not():
    got = cse("""
        graph @f(%x: f32[4]) {
          %a = full {shape=[], value=0.0, dtype=f32} : f32[]
          %b = full {shape=[], value=0.0, dtype=f32} : f32[]
          %c = full {shape=[], value=-0.0, dtype=f32} : f32[]
          %d = add(%x, %a) : f32[4]
          %e = add(%x, %b) : f32[4]
          %f = add(%x, %c) : f32[4]
          return %d, %e, %f
        }""")
    assert_ir(got, """
        graph @f(%x: f32[4]) {
          %a = full {shape=[], value=0.0, dtype=f32} : f32[]
          %c = full {shape=[], value=-0.0, dtype=f32} : f32[]
          %d = add(%x, %a) : f32[4]
          %f = add(%x, %c) : f32[4]
          return %d, %d, %f
        }""")


def test_random_ops_never_merge():
    text = """
        graph @f(%x: f32[4,8]) {
          %a = aten(%x) {target="aten.bernoulli.p", args=[$0, 0.5]} : f32[4,8]
          %b = aten(%x) {target="aten.bernoulli.p", args=[$0, 0.5]} : f32[4,8]
          %c = aten(%x) {target="aten.cumsum.default", args=[$0, 1]} : f32[4,8]
          %d = aten(%x) {target="aten.cumsum.default", args=[$0, 1]} : f32[4,8]
          return %a, %b, %c, %d
        }"""
    got = cse(text)
    assert got.count("bernoulli") == 2 and got.count("cumsum") == 1


def test_constants_merge_by_tensor_identity():
    graph = parse(textwrap.dedent("""
        graph @f(%x: f32[4]) {
          %p = constant : f32[4]
          %q = constant : f32[4]
          %r = constant : f32[4]
          %a = add(%x, %p) : f32[4]
          %b = add(%x, %q) : f32[4]
          %c = add(%x, %r) : f32[4]
          return %a, %b, %c
        }"""))
    w = torch.ones(4)
    graph = verify(dataclasses.replace(graph, constants={"p": w, "q": w, "r": torch.ones(4)}))
    out = run_passes(graph, [eliminate_common_subexpressions, eliminate_dead_code], verify_each=True)
    assert out.count("constant") == 2 and out.count("add") == 2  # p and q are one tensor; r is another
    assert set(out.constants) == {"p", "r"}
