import pathlib
import subprocess
import sys

import pytest

from mlc.__main__ import main, ops_markdown
from mlc.options import OPTIONS, options_markdown

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_docs_ops_md_is_generated_from_the_op_table():
    assert (ROOT / "docs" / "ops.md").read_text() == ops_markdown(), \
        "docs/ops.md is stale: run `python -m mlc ops --markdown > docs/ops.md`"


def test_readme_options_table_is_generated_from_the_declarations():
    assert options_markdown() in (ROOT / "README.md").read_text(), \
        "README.md's options table is stale: replace it with `python -m mlc options --markdown`"


def test_options_lists_every_option_with_its_values_default_and_environment(capsys):
    assert main(["options"]) == 0
    out = capsys.readouterr().out
    assert "precision: one of 'default', 'tf32', 'bf16', 'fp16'; default \"default\"; environment MLC_PRECISION" in out
    assert "fold_limit: a number >= 0; default 2.0; environment MLC_FOLD_LIMIT" in out
    assert all(f"{o.name}: " in out and o.env in out for o in OPTIONS)
    assert main(["options", "--markdown"]) == 0
    assert capsys.readouterr().out == options_markdown()


def test_ops_lists_every_op(capsys):
    from mlc.ir import OPS

    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} " in out for name in OPS)


def test_opt_runs_passes_and_prints_ir(tmp_path, capsys):
    f = tmp_path / "g.mlc"
    f.write_text("graph @g(%x: f32[4]) {\n  %0 = exp(%x) : f32[4]\n  %1 = neg(%x) : f32[4]\n  return %1\n}\n")
    assert main(["opt", str(f), "--passes", "eliminate_dead_code"]) == 0
    out = capsys.readouterr().out
    assert "neg(%x)" in out and "exp" not in out


MATMUL_IR = "graph @g(%x: f32[4,8], %w: f32[8,4]) {\n  %0 = mm(%x, %w) : f32[4,4]\n  return %0\n}\n"


def test_opt_passes_take_options(tmp_path, capsys):
    f = tmp_path / "g.mlc"
    f.write_text(MATMUL_IR)
    assert main(["opt", str(f), "--passes", "lower_precision{precision=bf16},fuse"]) == 0
    out = capsys.readouterr().out
    assert "convert(%x) {dtype=bf16}" in out and "kernel @fused_convert_mm(" in out
    # Quoted values, spaces, and an option at its default: nothing changes.
    assert main(["opt", str(f), "--passes", "lower_precision{ precision='default' }, fold_constants{fold_limit=0}"]) == 0
    assert capsys.readouterr().out.strip() == MATMUL_IR.strip()
    assert main(["opt", str(f), "--passes", "lower_precision"]) == 0  # the default: nothing to lower
    assert "convert" not in capsys.readouterr().out


def _opt_error(args, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mlc", "opt", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def test_opt_errors_are_one_line_with_exit_code_2(tmp_path):
    assert "cannot read" in _opt_error(["missing.mlc"], tmp_path)
    bad = tmp_path / "bad.mlc"
    bad.write_text("graph @g(%x: f32[4]) {\n  %0 = frobnicate(%x) : f32[4]\n  return %0\n}\n")
    assert "line 2, column 8: unknown op 'frobnicate'" in _opt_error([str(bad)], tmp_path)
    good = tmp_path / "good.mlc"
    good.write_text("graph @g(%x: f32[4]) {\n  return %x\n}\n")
    assert "unknown pass nope" in _opt_error([str(good), "--passes", "nope"], tmp_path)


@pytest.mark.parametrize("passes, message", [
    ("lower_precision{precison=bf16}", "mlc opt: pass lower_precision has no option 'precison'; its options: "
                                       "precision (one of 'default', 'tf32', 'bf16', 'fp16')"),
    ("lower_precision{precision=int4}", "mlc opt: pass lower_precision: option precision must be one of "
                                        "'default', 'tf32', 'bf16', 'fp16', got 'int4'"),
    ("fold_constants{fold_limit=lots}", "mlc opt: pass fold_constants: option fold_limit must be a number >= 0, "
                                        "not 'lots'"),
    ("fold_constants{fold_limit=-1}", "mlc opt: pass fold_constants: option fold_limit must be a number >= 0, "
                                      "got -1.0"),
    ("quantize_weights{quantize=int4}", "must be one of None, 'int8-weight', got 'int4'"),
    ("simplify{depth=2}", "mlc opt: pass simplify has no option 'depth'; it takes none"),
    ("fuse{", "mlc opt: cannot read --passes 'fuse{' from character 1"),
    ("lower_precision{precision}", "expected key=value items separated by spaces"),
])
def test_opt_option_errors_are_one_line_with_exit_code_2(tmp_path, capsys, passes, message):
    f = tmp_path / "g.mlc"
    f.write_text(MATMUL_IR)
    assert message in _error(capsys, ["opt", str(f), "--passes", passes])


# --- mlc explain and mlc dump ---------------------------------------------------------------

SCRIPT = '''
import torch

def mlc_explain():
    return (lambda x: torch.exp(x).sum(-1) * 2), (torch.randn(4, 16),)

def with_matmul():
    def f(x, w):
        return torch.relu(x @ w + 1)
    return f, [torch.randn(8, 16), torch.randn(16, 32)]

def broken():
    return 3

if __name__ == "__main__":
    raise SystemExit("mlc explain must not run the script's main block")
'''


def _error(capsys, argv, code=2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_explain_runs_the_scripts_mlc_explain_function(tmp_path, capsys):
    script = tmp_path / "model.py"
    script.write_text(SCRIPT)
    assert main(["explain", str(script)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mlc: 1 graph(s), 1 generated kernel(s)")
    assert "fused: fused_exp_sum_mul: exp + sum + mul" in out


def test_explain_function_options_html_and_dump(tmp_path, capsys):
    script = tmp_path / "model.py"
    script.write_text(SCRIPT)
    dump, page = tmp_path / "dump", tmp_path / "out.html"
    argv = ["explain", f"{script}:with_matmul", "-o", f"dump_dir={dump}", "--option", "fold_limit=0",
            "--html", str(page)]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"wrote {page}: 1 graph(s), 1 kernel(s)")
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "fused_mm_add_relu" in text
    # dump_dir reached the compile: mlc dump reads what it wrote.
    assert main(["dump", str(dump)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("graph inference_") and out[1].split() == ["pass", "ms", "nodes", "kernels"]
    fuse = next(ln.split() for ln in out if ln.split()[1:2] == ["fuse"])
    assert fuse[-1] == "1"  # one kernel after fuse
    assert "    fused_mm_add_relu: mm + add + relu" in out


def test_explain_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    script = tmp_path / "model.py"
    script.write_text(SCRIPT)
    assert "cannot read nope.py: No such file or directory" in _error(capsys, ["explain", "nope.py"])
    assert f"{script} defines no function 'missing'" in _error(capsys, ["explain", f"{script}:missing"])
    assert "returned int; expected (fn, example_inputs)" in _error(capsys, ["explain", f"{script}:broken"])
    assert "unknown mlc option(s) 'nope'; valid options: dump_dir" in _error(
        capsys, ["explain", str(script), "-o", "nope=1"])
    assert "mlc option 'interpret' must be true or false" in _error(
        capsys, ["explain", str(script), "-o", "interpret=maybe"])
    assert "expected KEY=VALUE" in _error(capsys, ["explain", str(script), "-o", "interpret"])
    assert "'fold_limit' must be a number >= 0" in _error(capsys, ["explain", str(script), "-o", "fold_limit=-1"])
    no_hook = tmp_path / "plain.py"
    no_hook.write_text("x = 1\n")
    assert "name another with SCRIPT.py:FUNCTION" in _error(capsys, ["explain", str(no_hook)])


def test_explain_shows_the_traceback_of_a_failing_script_with_exit_code_1(tmp_path, capsys):
    script = tmp_path / "bad.py"
    script.write_text("raise RuntimeError('boom')\n")
    assert main(["explain", str(script)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == f"mlc explain: {script} failed: RuntimeError: boom"


def test_explain_help_documents_the_script_contract(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["explain", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "mlc_explain" in out and "(fn, example_inputs)" in out and "__main__" in out


def test_dump_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert "no such directory" in _error(capsys, ["dump", str(tmp_path / "nope")])
    assert "holds no MLC_DUMP_DIR files" in _error(capsys, ["dump", str(tmp_path)])
    bad = tmp_path / "g.00.import.mlc"
    bad.write_text("// after pass: import (0.000 ms)\ngraph @g(%x: f32[4]) {\n  %0 = frob(%x) : f32[4]\n"
                   "  return %0\n}\n")
    assert f"{bad}: line 3, column 8: unknown op 'frob'" in _error(capsys, ["dump", str(tmp_path)])
    bad.write_text("graph @g(%x: f32[4]) {\n  return %x\n}\n")
    assert f"{bad}: line 1: expected '// after pass: NAME (MS ms)'" in _error(capsys, ["dump", str(tmp_path)])


def test_dump_orders_graphs_and_passes_as_compiled(tmp_path, capsys):
    g = "graph @{name}(%x: f32[4]) {{\n  %0 = exp(%x) : f32[4]\n  return %0\n}}\n"
    for name, k, p in [("forward_2", 0, "import"), ("forward_2", 1, "fuse"), ("backward_10", 0, "import")]:
        text = g.format(name=name)
        if p == "fuse":
            text = "graph @forward_2(%x: f32[4]) {\n  %0 = kernel @fused_exp(%x) : f32[4] {\n" \
                   "    %1 = exp(%x) : f32[4]\n    yield %1\n  }\n  return %0\n}\n"
        (tmp_path / f"{name}.{k:02d}.{p}.mlc").write_text(f"// after pass: {p} (1.500 ms)\n{text}")
    assert main(["dump", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln for ln in out if ln.startswith("graph")] == ["graph forward_2: 2 passes, 3.0 ms",
                                                             "graph backward_10: 1 passes, 1.5 ms"]
    assert out[2].split() == ["00", "import", "1.500", "1", "0"]
    assert out[3].split() == ["01", "fuse", "1.500", "1", "1"]
    assert out[4:6] == ["  kernels after fuse: 1", "    fused_exp: exp"]
