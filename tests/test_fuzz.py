"""The random-program fuzzer in CI: a few hundred programs, strict, against eager and float64.

``python bench/fuzz.py --n 10000`` runs many more; a failure here prints the program (and the
seed that rebuilds it: ``mlc.testing.fuzz.generate(seed)``).
"""

import pytest
import torch

from mlc.testing import fuzz

SEEDS_PER_TEST = 25
CI_PROGRAMS = 200


@pytest.mark.parametrize("first", range(0, CI_PROGRAMS, SEEDS_PER_TEST))
def test_random_programs_match_eager(first):
    failures = []
    for seed in range(first, first + SEEDS_PER_TEST):
        result = fuzz.run(fuzz.generate(seed))
        assert result.outcome in fuzz.OUTCOMES
        if result.outcome in ("wrong", "crash"):
            failures.append(f"{result.outcome}: {result.detail}\n{result.program.describe()}")
    assert not failures, "\n\n".join(failures)


def test_generated_programs_cover_the_op_families_and_edge_shapes():
    programs = [fuzz.generate(seed) for seed in range(CI_PROGRAMS)]
    text = "\n".join(p.source() for p in programs)
    for needle in ("@", "softmax", "layer_norm", "torch.cat", ".sum(", "[..., ::2]", "bfloat16", "transpose"):
        assert needle in text, needle
    shapes = [i.shape for p in programs for i in p.inputs]
    assert any(1 in s for s in shapes) and any(0 in s for s in shapes) and any(len(s) == 4 for s in shapes)
    assert {i.layout for p in programs for i in p.inputs} == {"contiguous", "transposed", "sliced", "expanded"}
    assert any(p.train for p in programs) and any(p.dynamic for p in programs)
    assert {p.dtype for p in programs} == {torch.float32, torch.float16, torch.bfloat16}


def test_shrink_keeps_the_failure_and_drops_the_rest(monkeypatch):
    # A planted bug: every program that uses tanh "crashes". Shrinking keeps a tanh and drops
    # what the failure does not need.
    original = fuzz.run

    def run(program, options=None):
        if any("torch.tanh" in line for line in program.lines):
            return fuzz.Result(program, "crash", "RuntimeError: planted tanh bug")
        return original(program, options)

    monkeypatch.setattr(fuzz, "run", run)
    seed = next(s for s in range(500) if any("torch.tanh" in line for line in fuzz.generate(s).lines)
                and len(fuzz.generate(s).lines) >= 5)
    small = fuzz.shrink(run(fuzz.generate(seed)))
    assert small.outcome == "crash" and len(small.program.lines) < len(fuzz.generate(seed).lines)
    assert any("torch.tanh" in line for line in small.program.lines)
