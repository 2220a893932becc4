"""The pass manager: runs the pipeline, verifies, times and dumps each pass."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ..ir.graph import Graph
from ..ir.verifier import verify

Pass = Callable[[Graph], Graph]


@dataclass(frozen=True)
class PassRecord:
    name: str
    ms: float
    ir: str


def run_passes(graph: Graph, passes: Sequence[Pass], *, verify_each: bool = False,
               dump_dir: str | None = None, log: list[PassRecord] | None = None) -> Graph:
    """Apply ``passes`` in order. The imported graph is recorded as pass ``import``."""
    records = log if log is not None else []
    if verify_each:
        verify(graph)
    records.append(PassRecord("import", 0.0, str(graph)))
    _dump(dump_dir, graph, records)
    for p in passes:
        start = time.perf_counter()
        notes = graph.notes
        graph = p(graph)
        ms = (time.perf_counter() - start) * 1e3
        # Notes are the compile's log of decisions: a pass adds to them, none has to carry them.
        graph = replace(graph, notes=notes + tuple(n for n in graph.notes if n not in notes))
        if verify_each:
            verify(graph)
        records.append(PassRecord(p.__name__, ms, str(graph)))
        _dump(dump_dir, graph, records)
    return graph


def _dump(dump_dir: str | None, graph: Graph, records: list[PassRecord]):
    if not dump_dir:
        return
    os.makedirs(dump_dir, exist_ok=True)
    rec = records[-1]
    path = os.path.join(dump_dir, f"{graph.name}.{len(records) - 1:02d}.{rec.name}.mlc")
    with open(path, "w") as f:
        f.write(f"// after pass: {rec.name} ({rec.ms:.3f} ms)\n{rec.ir}\n")
