"""Test-session settings: kernels run in Triton's interpreter, every pass is verified, and the
safety net is off (strict), so that a kernel bug fails the test that meets it."""

import os
import tempfile

# Before mlc reads them; a developer's own environment may override.
os.environ.setdefault("MLC_INTERPRET", "1")
os.environ.setdefault("MLC_VERIFY", "1")
os.environ.setdefault("MLC_STRICT", "1")  # the safety net off: a codegen bug fails its test
os.environ.setdefault("MLC_CACHE_DIR", tempfile.mkdtemp(prefix="mlc-test-cache-"))
