"""The pass manager: pass options (declared, bound, parsed from text), the bound pipeline, notes."""

import dataclasses
import textwrap

import pytest

from mlc.ir import parse
from mlc.options import OPTIONS, make_options
from mlc.passes import (PASS_OPTIONS, PASSES, PIPELINE, PassOption, bind, build_pipeline, fold_constants,
                        lower_precision, options_of, parse_pipeline, pass_options, run_passes)
from mlc.passes.fold_constants import FOLD_LIMIT
from mlc.passes.lower_precision import PRECISION


def test_passes_declare_the_options_they_take():
    assert options_of(fold_constants) == (FOLD_LIMIT,) and options_of(lower_precision) == (PRECISION,)
    assert options_of(PASSES["narrow_storage"]) == (PRECISION,)  # one option, two passes
    assert sorted(PASS_OPTIONS) == ["fold_limit", "precision", "quantize", "strict"]  # strict: fuse's


def test_compile_options_are_the_pass_declarations():
    by_name = {o.name: o for o in OPTIONS}
    for name, declared in PASS_OPTIONS.items():
        opt = by_name[name]
        assert (opt.type, opt.default, opt.doc, opt.choices, opt.minimum) == \
            (declared.type, declared.default, declared.doc, declared.choices, declared.minimum)


def test_build_pipeline_binds_each_pass_from_the_compile_options():
    opts = make_options(options={"precision": "bf16", "fold_limit": 0, "quantize": "int8-weight"})
    passes = build_pipeline(opts)
    assert [p.__name__ for p in passes] == [p.__name__ for p in PIPELINE]
    bound = {p.__name__: p.keywords for p in passes if hasattr(p, "keywords")}
    assert bound == {"lower_precision": {"precision": "bf16"}, "fold_constants": {"fold_limit": 0},
                     "quantize_weights": {"quantize": "int8-weight"}, "narrow_storage": {"precision": "bf16"},
                     "fuse": {"strict": opts.strict}}
    assert options_of(passes[PIPELINE.index(fold_constants)]) == (FOLD_LIMIT,)  # a bound pass keeps them


def test_parse_pipeline_reads_values_as_the_options_type():
    (p,) = parse_pipeline("fold_constants{fold_limit=16}", PASSES)
    assert p.keywords == {"fold_limit": 16.0}
    (q,) = parse_pipeline('quantize_weights{quantize=none}', PASSES)
    assert q.keywords == {"quantize": None}
    (q,) = parse_pipeline('quantize_weights{quantize="int8-weight"}', PASSES)
    assert q.keywords == {"quantize": "int8-weight"}
    assert [p.__name__ for p in parse_pipeline(" fuse , eliminate_dead_code,", PASSES)] == ["fuse", "eliminate_dead_code"]
    assert parse_pipeline("", PASSES) == []


def test_bind_checks_values_and_names():
    with pytest.raises(ValueError, match=r"option precision must be one of 'default', 'tf32', 'bf16', 'fp16'"):
        bind(lower_precision, precision="int4")
    with pytest.raises(ValueError, match=r"no option 'limit'; its options: fold_limit \(a number >= 0\)"):
        bind(fold_constants, limit=1)
    with pytest.raises(ValueError, match="must be a number >= 0"):
        bind(fold_constants, fold_limit=True)


def test_option_parse_and_problem():
    flag = PassOption("flag", bool, False, "a flag")
    assert flag.parse("yes") is True and flag.parse("Off") is False and flag.problem(1) == "must be True or False"
    with pytest.raises(ValueError, match="true or false"):
        flag.parse("maybe")
    name = PassOption("name", (str, type(None)), None, "a name")
    assert name.parse("none") is None and name.parse("'none'") == "none" and name.parse("x y") == "x y"
    assert FOLD_LIMIT.problem(float("nan")) == "must be a number >= 0" and FOLD_LIMIT.problem(3) is None


def test_a_declared_option_must_be_a_parameter_with_its_default():
    with pytest.raises(AssertionError, match="declares option"):
        pass_options(PassOption("depth", int, 2, "how deep"))(lambda graph, depth=3: graph)


def test_notes_are_what_each_pass_adds_once():
    graph = parse(textwrap.dedent("""
        graph @f(%x: f32[4,8], %w: f32[8,4]) {
          %y = mm(%x, %w) : f32[4,4]
          return %y
        }"""))

    def note(g):
        return dataclasses.replace(g, notes=("looked",))

    out = run_passes(graph, [bind(lower_precision, precision="tf32"), note, lambda g: g, note])
    assert out.notes == ("precision tf32: mm f32[4,8] x f32[8,4] multiplies as tf32", "looked")
