"""mlc's logging, the ``torch.compile`` way: ``TORCH_LOGS`` and ``TORCH_TRACE``/tlparse.

Every module logs through ``logging.getLogger(__name__)``, so all of mlc's records are under
the ``mlc`` logger, which is registered with ``torch._logging`` as the log ``mlc``:
``TORCH_LOGS="mlc"`` shows what mlc decides per graph (INFO), ``TORCH_LOGS="+mlc"`` adds every
pass, fusion decision and tuning choice (DEBUG). Two artifacts print each generated kernel's
Triton source: torch's own ``output_code`` (``TORCH_LOGS="output_code"`` shows Inductor's and
mlc's code alike) and ``mlc_output_code``. Warnings are kept for what a user must act on.

``trace`` writes one structured-trace artifact (``torch._logging.trace_structured``), which
``TORCH_TRACE=<dir>`` records and ``tlparse`` shows under the frame being compiled.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch._logging
from torch._logging import _internal

LOG = "mlc"  # the TORCH_LOGS name of the log, and the logger it covers
OUTPUT_CODE = "mlc_output_code"  # the artifact that prints each generated kernel

_registered = False


def register() -> None:
    """Register ``mlc`` and ``mlc_output_code`` with ``torch._logging`` (``import mlc`` does it).

    ``TORCH_LOGS`` is read when torch is imported, before mlc can register anything: ``mlc``
    is found then as a module (so ``TORCH_LOGS="+mlc"`` works from the first import), but an
    artifact name of mlc's is not, so after registering, the settings are read again when
    ``TORCH_LOGS`` is set (it has precedence over ``set_logs``, as torch documents).
    """
    global _registered
    if _registered:
        return
    _registered = True
    _internal.register_log(LOG, [LOG])
    _internal.register_artifact(
        OUTPUT_CODE, "Prints the Triton code mlc generates, one kernel at a time (output_code prints it too)",
        off_by_default=True, visible=True)
    # LOG_TRACE_HANDLER is set at the end of torch's first _init_logs: before that (mlc imported
    # while torch reads TORCH_LOGS="+mlc"), torch finishes reading the settings itself.
    if os.environ.get(_internal.LOG_ENV_VAR) and _internal.LOG_TRACE_HANDLER is not None:
        _internal._parse_log_settings.cache_clear()
        _internal._init_logs()


def output_code_loggers(module: str) -> tuple[logging.Logger, logging.Logger]:
    """The artifact loggers that print generated kernels: mlc's own, and torch's ``output_code``."""
    return (torch._logging.getArtifactLogger(module, OUTPUT_CODE),
            torch._logging.getArtifactLogger(module, "output_code"))


def trace(name: str, payload: Callable[[], str]) -> None:
    """One ``TORCH_TRACE`` artifact named ``name`` (an ``mlc_...`` name); ``payload`` is called
    only when a trace is being written."""
    torch._logging.trace_structured(
        "artifact", metadata_fn=lambda: {"name": name, "encoding": "string"}, payload_fn=payload)


def tracing() -> bool:
    """Whether ``TORCH_TRACE`` artifacts are being written (to skip building their payloads)."""
    return bool(_internal.trace_log.handlers)


register()  # before any module asks for an artifact logger (getArtifactLogger needs the name)
