"""The ``mlc`` command line.

    mlc ops [--markdown]          the op table (mlc ops, and the ATen ops that lower to them)
    mlc opt FILE [--passes 'a{k=v},b']
                                  read IR text, run passes, print IR text (like mlir-opt)
    mlc options [--markdown]      the compile options, with values, defaults, environment variables
    mlc explain SCRIPT.py[:FUNCTION] [--html OUT.html] [--option KEY=VALUE ...]
                                  compile a script's function with mlc and report what mlc did
    mlc bisect SCRIPT.py[:FUNCTION] [--option KEY=VALUE ...] [--tol T]
                                  find the optimization decision after which the result is wrong
    mlc dump DIR                  summarize a directory written by MLC_DUMP_DIR
    mlc aot-check [--arch 80,90] [--models a,b] [--ir FILE] [--quick]
                                  compile the generated kernels for NVIDIA GPUs ahead of time
                                  (no GPU needed) and report registers, spills, shared memory,
                                  source lines and compile time; flag kernels over budget

A mistake in what the command is given (a missing file, bad IR, an unknown pass, option or
function) is one line on standard error, ``mlc <command>: ...``, and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback


def ops_markdown() -> str:
    """The supported-op reference, generated from the op table and ``ATEN_TO_MLC``."""
    from .frontend.lowerings import ATEN_TO_MLC
    from .ir.ops import OPS, REQUIRED, Category

    lines = ["# Supported ops", "",
             "Generated from mlc's op table by `python -m mlc ops --markdown`; do not edit by hand.", ""]
    lines += ["## mlc ops", "", "| op | category | attributes | what it does |", "|---|---|---|---|"]
    for cat in Category:
        for op in (o for o in OPS.values() if o.category is cat):
            attrs = ", ".join(k if d is REQUIRED else f"{k}={d!r}" for k, d in op.attrs.items())
            lines.append(f"| `{op.name}` | {cat.value} | {attrs} | {op.doc} |")
    by_op: dict[str, list[str]] = {}
    for overload in ATEN_TO_MLC:
        by_op.setdefault(str(overload).rsplit(".", 1)[0], []).append(str(overload).rsplit(".", 1)[1])
    lines += ["", f"## ATen ops mlc compiles ({len(ATEN_TO_MLC)} overloads)", "",
              "Any other ATen op runs through PyTorch as an `aten` fallback node, with a warning that names it.", ""]
    lines += [f"- `{name}`: {', '.join(sorted(ovs))}" for name, ovs in sorted(by_op.items())]
    return "\n".join(lines) + "\n"


class UsageError(Exception):
    """A mistake in what a command was given; ``main`` prints it as one line, exit code 2."""


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None


def _opt(args) -> int:
    from .ir import ParseError, VerifyError, parse_graphs, verify
    from .passes import PASSES, parse_pipeline, run_passes

    try:
        passes = parse_pipeline(args.passes or "", PASSES)
    except ValueError as e:
        raise UsageError(str(e)) from None
    text = sys.stdin.read() if args.file == "-" else _read(args.file)
    try:
        graphs = parse_graphs(text)
        out = [str(run_passes(verify(g), passes, verify_each=True)) for g in graphs]
    except (ParseError, VerifyError) as e:
        raise UsageError(f"{args.file}: {str(e).splitlines()[0]}") from None
    print("\n\n".join(out))
    return 0


# --- mlc explain ----------------------------------------------------------------------------

EXPLAIN_HELP = """\
Run a Python script, compile the function it names with mlc, call it once on its example
inputs (under torch.no_grad) and print mlc.explain's report: passes with times, fusion
decisions, kernels with grid, launch config and modeled cost, fallbacks, against eager.

The script: SCRIPT.py is run with runpy under the module name __mlc_explain__, so code under
`if __name__ == "__main__":` does not run; its directory comes first on sys.path (its own
imports work) and sys.argv is [SCRIPT.py]. Then FUNCTION (default: mlc_explain), a function
of the script taking no arguments, is called; it returns (fn, example_inputs): the callable
to compile (a function or an nn.Module) and a tuple of its inputs. For example:

    # model.py
    import torch
    def mlc_explain():
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
        return model, (torch.randn(8, 64),)

    mlc explain model.py --option interpret=true --html model.html

Errors in what the command is given (no such script, no such function, a function that does
not return (fn, example_inputs), an unknown or bad option) are one line, exit code 2. An
exception raised by the script or the compile prints its traceback, exit code 1.
"""


def _option(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` from the command line as an mlc option; values are read as the option's type."""
    from .options import OPTIONS

    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise UsageError(f"--option {item!r}: expected KEY=VALUE")
    opt = {o.name: o for o in OPTIONS}.get(key)
    if opt is None:
        return key, raw  # make_options names the valid options
    try:
        return key, opt.parse(raw)
    except ValueError as e:
        raise UsageError(f"--option {item}: mlc option '{key}' {e}") from None


def _options(args) -> int:
    from .options import options_markdown, options_text

    print(options_markdown() if args.markdown else options_text(), end="")
    return 0


def load_explain_target(target: str) -> tuple[object, tuple]:
    """Run ``SCRIPT.py[:FUNCTION]`` (see ``EXPLAIN_HELP``) and return ``(fn, example_inputs)``."""
    import runpy

    import torch

    path, sep, function = target.rpartition(":")
    if not sep or not function.isidentifier():
        path, function = target, "mlc_explain"
    if not os.path.isfile(path):
        raise UsageError(f"cannot read {path}: " + ("it is a directory" if os.path.isdir(path)
                                                      else "No such file or directory"))
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = [path], [os.path.dirname(os.path.abspath(path))]
    try:
        namespace = runpy.run_path(path, run_name="__mlc_explain__")
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    factory = namespace.get(function)
    if factory is None:
        hint = "" if sep else "; name another with SCRIPT.py:FUNCTION"
        raise UsageError(f"{path} defines no function '{function}' returning (fn, example_inputs){hint}")
    if not callable(factory):
        raise UsageError(f"{path}: '{function}' is a {type(factory).__name__}, not a function")
    result = factory()
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and callable(result[0])):
        raise UsageError(f"{path}:{function}() returned {type(result).__name__}; expected (fn, example_inputs)")
    fn, inputs = result
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    if not isinstance(inputs, (tuple, list)):
        raise UsageError(f"{path}:{function}() returned example_inputs of type {type(inputs).__name__}; "
                         f"expected a tuple of inputs")
    return fn, tuple(inputs)


def _script_options(args, mode: str | None = None) -> dict:
    """The ``-o KEY=VALUE`` options of a script command, validated as torch.compile's are."""
    from .options import make_options

    options = dict(_option(item) for item in args.option)
    try:
        make_options(mode, options)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return options


def _on_script(command: str, target: str, run):
    """``run(fn, inputs)`` on the script's function; None when the script or the compile raised
    (its traceback printed, then one line): the command then exits with code 1."""
    try:
        fn, inputs = load_explain_target(target)
        return run(fn, inputs)
    except UsageError:
        raise
    except Exception as e:  # the user's script or the compile failed: its traceback is what helps
        traceback.print_exc()
        print(f"mlc {command}: {target} failed: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return None


def _explain(args) -> int:
    from .explain import explain

    options = _script_options(args, args.mode)
    if args.html and not os.path.isdir(os.path.dirname(os.path.abspath(args.html))):
        raise UsageError(f"cannot write {args.html}: no such directory")
    report = _on_script("explain", args.target, lambda fn, inputs: explain(
        fn, *inputs, mode=args.mode, dynamic=args.dynamic or None, **options))
    if report is None:
        return 1
    if args.html:
        try:
            report.save_html(args.html, gpu=args.gpu)
        except OSError as e:
            raise UsageError(f"cannot write {args.html}: {e.strerror}") from None
        print(f"wrote {args.html}: {len(report.graphs)} graph(s), {len(report.kernels)} kernel(s)")
    else:
        print(report.text(args.gpu))
    return 0


def _bisect(args) -> int:
    from .cli.bisect import bisect

    options = _script_options(args)
    result = _on_script("bisect", args.target, lambda fn, inputs: bisect(
        fn, *inputs, tolerance=args.tol, dynamic=args.dynamic or None, **options))
    if result is None:
        return 1
    print(result.text())
    return 1 if result.full.error > result.tolerance else 0


# --- mlc dump -------------------------------------------------------------------------------

_DUMP_FILE = re.compile(r"(?P<graph>.+)\.(?P<index>\d+)\.(?P<pass>[A-Za-z_][A-Za-z0-9_]*)\.mlc\Z")
_DUMP_HEADER = re.compile(r"// after pass: (?P<pass>\S+) \((?P<ms>[0-9.]+) ms\)\Z")


def _compile_order(graph: str) -> tuple:
    """``forward_0`` before ``backward_1`` before ``inference_10``: graph names end in a global counter."""
    m = re.search(r"(\d+)\Z", graph)
    return (int(m[1]) if m else float("inf"), graph)


def read_dump(directory: str) -> dict[str, list[tuple[str, float, list]]]:
    """The files ``MLC_DUMP_DIR`` wrote: per graph, in pass order, (pass, ms, parsed graphs)."""
    from .ir import ParseError, parse_graphs

    if not os.path.isdir(directory):
        raise UsageError(f"no such directory: {directory}")
    found: dict[str, list[tuple[int, str]]] = {}
    for name in os.listdir(directory):
        m = _DUMP_FILE.match(name)
        if m:
            found.setdefault(m["graph"], []).append((int(m["index"]), name))
    if not found:
        raise UsageError(f"{directory} holds no MLC_DUMP_DIR files (GRAPH.NN.PASS.mlc)")
    out: dict[str, list[tuple[str, float, list]]] = {}
    for graph in sorted(found, key=_compile_order):
        out[graph] = []
        for _, name in sorted(found[graph]):
            path = os.path.join(directory, name)
            text = _read(path)
            header = _DUMP_HEADER.match(text.split("\n", 1)[0])
            if header is None:
                raise UsageError(f"{path}: line 1: expected '// after pass: NAME (MS ms)', as MLC_DUMP_DIR writes")
            try:
                graphs = parse_graphs(text)
            except ParseError as e:
                raise UsageError(f"{path}: {str(e).splitlines()[0]}") from None
            out[graph].append((header["pass"], float(header["ms"]), graphs))
    return out


def dump_summary(directory: str) -> str:
    """Per graph: each pass with its time and the nodes and kernels after it; the final kernels."""
    from .ir.fallback import fallback_kind
    from .report import format_table, fused_ops, graph_counts

    lines = []
    for name, passes in read_dump(directory).items():
        rows = []
        for k, (pass_name, ms, graphs) in enumerate(passes):
            counts = [graph_counts(g) for g in graphs]
            rows.append([f"{k:02d} {pass_name}", f"{ms:.3f}", sum(c[0] for c in counts), sum(c[1] for c in counts)])
        total = sum(ms for _, ms, _ in passes)
        lines += [f"graph {name}: {len(passes)} passes, {total:.1f} ms", *("  " + ln for ln in format_table(
            ["pass", "ms", "nodes", "kernels"], rows))]
        final = passes[-1][2]
        kernels = [n.attrs["body"] for g in final for n in g.nodes if n.op == "kernel"]
        lines.append(f"  kernels after {passes[-1][0]}: {len(kernels)}")
        lines += [f"    {body.name}: {' + '.join(fused_ops(body))}" for body in kernels]
        fallbacks = sorted({n.attrs["target"] for g in final for n in g.nodes if n.op == "aten"})
        for kind, heading in (("ATen op", "runs through ATen"), ("custom op", "custom ops (torch.library)")):
            named = [f for f in fallbacks if fallback_kind(f) == kind]
            if named:
                lines.append(f"  {heading}: " + ", ".join(named))
        lines.append("")
    return "\n".join(lines).rstrip()


def _dump(args) -> int:
    print(dump_summary(args.dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .cost import GPUS

    parser = argparse.ArgumentParser(prog="mlc", description="mlc, a graph compiler for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    ops = sub.add_parser("ops", help="list the supported ops")
    ops.add_argument("--markdown", action="store_true", help="print the docs/ops.md reference")
    opt = sub.add_parser("opt", help="run passes over IR text and print the result")
    opt.add_argument("file", help="IR text file, or - for standard input")
    opt.add_argument("--passes", metavar="PASSES",
                     help="comma-separated passes of PIPELINE, in order, each with its options in mlir-opt's "
                          "syntax: 'lower_precision{precision=bf16},fuse' (see mlc options)")
    options = sub.add_parser("options", help="list the compile options: values, default, environment variable")
    options.add_argument("--markdown", action="store_true", help="print the README's options table")
    exp = sub.add_parser("explain", help="compile a script's function with mlc and report what mlc did",
                         description=EXPLAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    exp.add_argument("target", metavar="SCRIPT.py[:FUNCTION]",
                     help="the script, and the function in it that returns (fn, example_inputs) "
                          "(default: mlc_explain)")
    exp.add_argument("--html", metavar="OUT.html", help="write the report as one self-contained HTML page instead")
    exp.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                     help="an mlc option, as in torch.compile(options=...) (repeatable); e.g. interpret=true, "
                          "fold_limit=0; values are read as the option's type (true/false, numbers, none)")
    exp.add_argument("--mode", help="torch.compile mode (default, reduce-overhead, max-autotune, ...)")
    exp.add_argument("--dynamic", action="store_true", help="compile with dynamic=True (symbolic sizes)")
    exp.add_argument("--gpu", choices=list(GPUS), default="H100",
                     help="the GPU whose modeled time and roof each launch shows (default: H100)")
    bis = sub.add_parser("bisect", help="find the optimization decision after which mlc's result is wrong",
                         description="Compile a script's function (as mlc explain does) with every optimization "
                                     "decision, compare with eager, and if the outputs differ binary-search the "
                                     "number of decisions allowed (mlc option fuel) for the one after which they "
                                     "differ; print it and the IR before and after it. Exit code 1 when the "
                                     "outputs differ, 0 when they match.")
    bis.add_argument("target", metavar="SCRIPT.py[:FUNCTION]",
                     help="the script, and the function in it that returns (fn, example_inputs) (default: mlc_explain)")
    bis.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                     help="an mlc option (repeatable), as for mlc explain")
    bis.add_argument("--tol", type=float, help="largest max |mlc - eager| / max |eager| that is right (default: "
                                              "1e-4 for fp32 outputs, 1e-2 fp16, 5e-2 bf16)")
    bis.add_argument("--dynamic", action="store_true", help="compile with dynamic=True (symbolic sizes)")
    dump = sub.add_parser("dump", help="summarize a directory written by MLC_DUMP_DIR",
                          description="Summarize the IR files MLC_DUMP_DIR (or options={'dump_dir': ...}) "
                                      "wrote: per graph, each pass with its time and the number of nodes and "
                                      "kernels after it, then the kernels of the final IR with the ops each "
                                      "fused, and the ops that run through ATen.")
    dump.add_argument("dir", help="the dump directory")
    aot = sub.add_parser("aot-check", help="compile the zoo's kernels for NVIDIA GPUs ahead of time (no GPU needed)",
                         description="Compile every kernel mlc generates for the model zoo (inference and "
                                     "training) with Triton for the given GPUs, then report ptxas's registers, "
                                     "spills and shared memory, and the source lines and compile time, per kernel; "
                                     "kernels over the budgets of mlc.cli.aot_check (source lines, compile "
                                     "seconds) are flagged OVER BUDGET. "
                                     "Exit code 1 if a kernel fails to compile.")
    aot.add_argument("--arch", default="80,90", help="comma-separated compute capabilities (default: 80,90)")
    aot.add_argument("--models", help="comma-separated zoo models (default: all, or none with --ir)")
    aot.add_argument("--ir", action="append", default=[], metavar="FILE",
                     help="IR text file whose graphs are kernel bodies to compile as they are (repeatable)")
    aot.add_argument("--quick", action="store_true", help="fewer variants: small sizes, fp32 and bf16")
    aot.add_argument("--jobs", type=int, default=0, help="parallel compiles (default: the number of CPUs, at most 8)")
    aot.add_argument("-v", "--verbose", action="store_true", help="progress, and full compiler errors")
    args = parser.parse_args(argv)
    if args.command == "aot-check":
        from .cli.aot_check import main as aot_check

        return aot_check(args)
    if args.command == "ops":
        if args.markdown:
            print(ops_markdown(), end="")
        else:
            from .ir.ops import OPS

            for op in OPS.values():
                print(f"{op.name:14} {op.category.value:10} {op.doc}")
        return 0
    try:
        return {"opt": _opt, "options": _options, "explain": _explain, "bisect": _bisect,
                "dump": _dump}[args.command](args)
    except UsageError as e:
        print(f"mlc {args.command}: {e}", file=sys.stderr)
        return 2


def _run() -> int:
    try:
        return main()
    except BrokenPipeError:  # `mlc opt g.mlc | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(_run())
