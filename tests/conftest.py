"""Test-session settings: kernels run in Triton's interpreter, every pass is verified, and the
safety net is off (strict), so that a kernel bug fails the test that meets it."""

import os

import pytest
import tempfile

# Before mlc reads them; a developer's own environment may override.
os.environ.setdefault("MLC_INTERPRET", "1")
os.environ.setdefault("MLC_VERIFY", "1")
os.environ.setdefault("MLC_STRICT", "1")  # the safety net off: a codegen bug fails its test
os.environ.setdefault("MLC_CACHE_DIR", tempfile.mkdtemp(prefix="mlc-test-cache-"))


@pytest.fixture
def compiled_graphs(monkeypatch):
    """The CompiledGraphs (``mlc.backend.CompiledGraph``) torch.compile builds during the test."""
    import mlc.backend as backend
    import torch

    seen = []
    original = backend.compile_graph

    def spy(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(backend, "compile_graph", spy)
    torch._dynamo.reset()
    yield seen
    torch._dynamo.reset()
