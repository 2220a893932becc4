"""Test-session settings: kernels run in Triton's interpreter, every pass is verified."""

import os
import tempfile

# Before mlc reads them; a developer's own environment may override.
os.environ.setdefault("MLC_INTERPRET", "1")
os.environ.setdefault("MLC_VERIFY", "1")
os.environ.setdefault("MLC_CACHE_DIR", tempfile.mkdtemp(prefix="mlc-test-cache-"))
