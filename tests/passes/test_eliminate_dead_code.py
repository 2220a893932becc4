from mlc.passes import eliminate_dead_code

from tests.irtext import assert_ir, run_on_text


def test_drops_unused_chain_and_keeps_used():
    got = run_on_text("""
        graph @f(%x: f32[4,8]) {
          %a = exp(%x) : f32[4,8]
          %dead = neg(%a) : f32[4,8]
          %dead2 = sum(%dead) {dims=[1]} : f32[4]
          %b = relu(%a) : f32[4,8]
          return %b
        }""", eliminate_dead_code)
    assert_ir(got, """
        graph @f(%x: f32[4,8]) {
          %a = exp(%x) : f32[4,8]
          %b = relu(%a) : f32[4,8]
          return %b
        }""")


def test_keeps_inputs_and_multi_result_nodes_with_one_used_result():
    got = run_on_text("""
        graph @f(%x: f32[4,8], %unused: f32[2]) {
          %v, %i = aten(%x) {target="aten.sort.default", args=[$0, 1], pick=[0, 1]} : f32[4,8], i64[4,8]
          return %i
        }""", eliminate_dead_code)
    assert "aten.sort.default" in got and "%unused: f32[2]" in got


def test_drops_unused_constants():
    got = run_on_text("""
        graph @f(%x: f32[4]) {
          %w = constant : f32[4]
          %y = neg(%x) : f32[4]
          return %y
        }""", eliminate_dead_code)
    assert "constant" not in got
