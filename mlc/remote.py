"""The cache's remote tier: entries shared through Redis by every process of a fleet.

``remote_cache="redis://HOST:PORT/DB"`` (``MLC_REMOTE_CACHE``) makes ``mlc.cache`` look up
whole compiled graphs and tuning results there when the local directory has none, and copy
what it compiles there. This file is the transport: one Redis key per entry,
``mlc:<kind>:<key>``, whose value is a header line then the entry's bytes, exactly those of
the local file::

    mlc-cache-entry {"format": 1, "kind": "graphs", "key": "...", "sha256": "...", "versions": {...}}\\n<bytes>

The header names what the value must be (kind, key, the versions of mlc, torch and Triton) and
the payload's checksum, so a value that is not an mlc entry, was written for another key or
by other versions (foreign), or does not match its checksum (corrupted), is a miss with that
reason, never a wrong graph.

A Redis that is down, unreachable or too slow costs one warning and a local compile: sockets
time out after ``CONNECT_TIMEOUT_S``/``TIMEOUT_S``, nothing is retried, and the remote is not
tried again for ``RETRY_AFTER_S``. The ``redis`` client package is an optional extra
(``pip install 'mlc[remote]'``), imported on first use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings

MAGIC = b"mlc-cache-entry "
FORMAT = 1
CONNECT_TIMEOUT_S = 0.5
TIMEOUT_S = 2.0
RETRY_AFTER_S = 60.0
SCHEMES = ("redis://", "rediss://", "unix://")


class _Remote:
    """One Redis server (by URL): a client made on first use, and whether it is down."""

    def __init__(self, url: str):
        self.url = url
        self.client = None
        self.down_until = 0.0  # time.monotonic() before which it is not tried
        self.disabled = ""  # why it can never be used in this process (bad URL, no client package)
        self.warned = False

    def _warn_once(self, message: str):
        if not self.warned:
            self.warned = True
            warnings.warn(message, stacklevel=4)

    def _connect(self):
        if self.client is None and not self.disabled:
            if not self.url.startswith(SCHEMES):
                self.disabled = f"not a Redis URL (expected {', '.join(SCHEMES)})"
            else:
                try:
                    import redis
                    from redis.backoff import NoBackoff
                    from redis.retry import Retry
                except ImportError:
                    self.disabled = "the redis package is not installed (pip install 'mlc[remote]')"
                else:
                    try:
                        self.client = redis.Redis.from_url(
                            self.url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=TIMEOUT_S,
                            retry=Retry(NoBackoff(), 0))
                    except ValueError as e:  # a malformed URL
                        self.disabled = f"{type(e).__name__}: {e}"
            if self.disabled:
                self._warn_once(f"mlc: remote_cache={self.url!r} is not used: {self.disabled}; "
                                "the local cache only")
        return self.client

    def _call(self, method: str, *args) -> tuple[object, str]:
        """(the reply, "") or (None, why the remote could not answer)."""
        if self.disabled or time.monotonic() < self.down_until:
            return None, "unreachable" if not self.disabled else f"not used ({self.disabled})"
        client = self._connect()
        if client is None:
            return None, f"not used ({self.disabled})"
        try:
            return getattr(client, method)(*args), ""
        except Exception as e:  # noqa: BLE001 - redis' errors, OSError, whatever: a local compile instead
            self.down_until = time.monotonic() + RETRY_AFTER_S
            why = describe(e)
            self._warn_once(f"mlc: the remote cache {self.url} cannot be reached ({why}); compiling "
                            f"with the local cache only, and not trying it again for {RETRY_AFTER_S:.0f} s")
            return None, "unreachable"


def describe(error: Exception) -> str:
    """An error in one line: its type and the first line of its message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


@functools.lru_cache(maxsize=None)
def _remote(url: str) -> _Remote:
    return _Remote(url)


def redis_key(kind: str, key: str) -> str:
    return f"mlc:{kind}:{key}"


def pack(kind: str, key: str, payload: bytes, versions: dict) -> bytes:
    header = {"format": FORMAT, "kind": kind, "key": key, "sha256": hashlib.sha256(payload).hexdigest(),
              "versions": versions}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def unpack(kind: str, key: str, value: bytes, versions: dict) -> tuple[bytes | None, str]:
    """(the payload, "") or (None, "foreign entry (...)" or "entry corrupted (...)")."""
    if not value.startswith(MAGIC) or b"\n" not in value:
        return None, "foreign entry (not an mlc cache entry)"
    line, payload = value[len(MAGIC):].split(b"\n", 1)
    try:
        header = json.loads(line)
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"entry corrupted (header: {type(e).__name__})"
    if header.get("format") != FORMAT:
        return None, f"foreign entry (format {header.get('format')}, expected {FORMAT})"
    if (header.get("kind"), header.get("key")) != (kind, key):
        return None, f"foreign entry (written as {header.get('kind')}/{header.get('key')})"
    theirs = header.get("versions") or {}
    changed = [f"{k} {theirs.get(k)}, here {v}" for k, v in versions.items() if theirs.get(k) != v]
    if changed:
        return None, f"foreign entry ({'; '.join(changed)})"
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        return None, "entry corrupted (checksum mismatch)"
    return payload, ""


def get(url: str, kind: str, key: str, versions: dict) -> tuple[bytes | None, str]:
    """An entry's bytes from the remote, or (None, why not): "no entry", "unreachable", or
    what is wrong with the value there ("foreign entry (...)", "entry corrupted (...)")."""
    value, why = _remote(url)._call("get", redis_key(kind, key))
    if why:
        return None, why
    if value is None:
        return None, "no entry"
    return unpack(kind, key, value, versions)


def put(url: str, kind: str, key: str, payload: bytes, versions: dict) -> None:
    """Store an entry; a remote that cannot be reached was warned about, and is skipped."""
    _remote(url)._call("set", redis_key(kind, key), pack(kind, key, payload, versions))


def warn_bad_entry(url: str, kind: str, key: str, why: str) -> None:
    warnings.warn(f"mlc: ignoring the remote cache entry {redis_key(kind, key)} in {url} ({why}); "
                  "it will be rewritten", stacklevel=3)
