"""The ``mlc`` command line.

    mlc ops [--markdown]          the op table (mlc ops, and the ATen ops that lower to them)
    mlc opt FILE [--passes a,b]   read IR text, run passes, print IR text (like mlir-opt)
    mlc aot-check [--arch 80,90] [--models a,b] [--ir FILE] [--quick]
                                  compile the generated kernels for NVIDIA GPUs ahead of time
                                  (no GPU needed) and report registers, spills, shared memory
"""

from __future__ import annotations

import argparse
import sys


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


def _opt(args) -> int:
    from .ir import ParseError, VerifyError, parse_graphs, verify
    from .passes import PASSES, run_passes

    names = [p for p in (args.passes or "").split(",") if p]
    unknown = [p for p in names if p not in PASSES]
    if unknown:
        print(f"mlc opt: unknown pass {', '.join(unknown)}; known passes: {', '.join(PASSES)}", file=sys.stderr)
        return 2
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file).read()
    except OSError as e:
        print(f"mlc opt: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        graphs = parse_graphs(text)
        out = [str(run_passes(verify(g), [PASSES[p] for p in names], verify_each=True)) for g in graphs]
    except (ParseError, VerifyError) as e:
        print(f"mlc opt: {args.file}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print("\n\n".join(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlc", description="mlc, a graph compiler for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    ops = sub.add_parser("ops", help="list the supported ops")
    ops.add_argument("--markdown", action="store_true", help="print the docs/ops.md reference")
    opt = sub.add_parser("opt", help="run passes over IR text and print the result")
    opt.add_argument("file", help="IR text file, or - for standard input")
    opt.add_argument("--passes", help="comma-separated pass names, in order")
    aot = sub.add_parser("aot-check", help="compile the zoo's kernels for NVIDIA GPUs ahead of time (no GPU needed)",
                         description="Compile every kernel mlc generates for the model zoo (inference and "
                                     "training) with Triton for the given GPUs, then report ptxas's registers, "
                                     "spills and shared memory per kernel. Exit code 1 if a kernel fails to compile.")
    aot.add_argument("--arch", default="80,90", help="comma-separated compute capabilities (default: 80,90)")
    aot.add_argument("--models", help="comma-separated zoo models (default: all, or none with --ir)")
    aot.add_argument("--ir", action="append", default=[], metavar="FILE",
                     help="IR text file whose graphs are kernel bodies to compile as they are (repeatable)")
    aot.add_argument("--quick", action="store_true", help="fewer variants: small sizes, fp32 and bf16")
    aot.add_argument("--jobs", type=int, default=0, help="parallel compiles (default: the number of CPUs, at most 8)")
    aot.add_argument("-v", "--verbose", action="store_true", help="progress, and full compiler errors")
    args = parser.parse_args(argv)
    if args.command == "aot-check":
        from .codegen.aot import main as aot_check

        return aot_check(args)
    if args.command == "ops":
        if args.markdown:
            print(ops_markdown(), end="")
        else:
            from .ir.ops import OPS

            for op in OPS.values():
                print(f"{op.name:14} {op.category.value:10} {op.doc}")
        return 0
    return _opt(args)


def _run() -> int:
    try:
        return main()
    except BrokenPipeError:  # `mlc opt g.mlc | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(_run())
