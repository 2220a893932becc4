"""Helpers for pass tests written as IR text: run passes on text, compare text."""

import textwrap

from mlc.ir import parse, verify
from mlc.passes import run_passes


def run_on_text(text: str, *passes) -> str:
    """Parse, verify, run ``passes`` (verifying after each), print."""
    graph = verify(parse(textwrap.dedent(text)))
    return str(run_passes(graph, passes, verify_each=True))


def normalize(text: str) -> str:
    """The canonical print of IR text, so expectations may use any value names."""
    return str(parse(textwrap.dedent(text)))


def assert_ir(got: str, expected: str):
    assert got == normalize(expected), f"got:\n{got}\n\nexpected:\n{normalize(expected)}"
