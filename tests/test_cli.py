import pathlib
import subprocess
import sys

from mlc.__main__ import main, ops_markdown

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_docs_ops_md_is_generated_from_the_op_table():
    assert (ROOT / "docs" / "ops.md").read_text() == ops_markdown(), \
        "docs/ops.md is stale: run `python -m mlc ops --markdown > docs/ops.md`"


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
