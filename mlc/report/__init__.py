"""The report ``mlc.explain`` returns: its dataclasses and text form (``data.py``), and the
self-contained HTML page (``html.py``, written by ``Report.save_html``)."""

from .data import (Accuracy, GraphReport, KernelReport, Launch, Report, accuracy, format_config, format_grid,
                   format_table, fused_ops, graph_counts, pass_counts)

__all__ = ["Accuracy", "GraphReport", "KernelReport", "Launch", "Report", "accuracy", "format_config", "format_grid",
           "format_table", "fused_ops", "graph_counts", "pass_counts"]
