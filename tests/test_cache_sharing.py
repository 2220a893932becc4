"""Sharing the cache beyond one directory: the remote tier on a real Redis (``remote_cache``),
and bundles (``mlc.cache.save_artifacts``/``load_artifacts``).

The Redis tests start a ``redis-server`` of their own on a free loopback port (``.ci/run``
installs it) and are skipped, saying so, where it is not installed.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings

import pytest
import torch

import mlc
from mlc import cache, remote
from mlc.backend import mlc_backend

HERE = os.path.dirname(os.path.abspath(__file__))


def make_model():
    torch.manual_seed(0)  # every process builds the same weights, so the same graph key
    return torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.GELU(), torch.nn.LayerNorm(24)).eval(), \
        torch.randn(5, 16)


def compile_once(**options) -> str:
    """Compile and run the model (inference), checked against eager; returns the cache verdict."""
    model, x = make_model()
    seen = []
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend=lambda gm, ex: mlc_backend(
            gm, ex, options={"interpret": True, **options}, _on_compile=lambda g, c: seen.append(c.cache)))
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))
    finally:
        torch._dynamo.reset()
    (verdict,) = seen
    return verdict


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A redis-server of this module's own on 127.0.0.1, stopped afterwards."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    import redis

    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path_factory.mktemp("redis"))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start: {proc.communicate()[0].decode()[-2000:]}")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


def in_fresh_dir(monkeypatch, tmp_path, name: str):
    """Point MLC_CACHE_DIR at a new, empty directory."""
    d = tmp_path / name
    monkeypatch.setenv("MLC_CACHE_DIR", str(d))
    return d


def test_a_graph_another_process_compiled_is_a_remote_hit(redis_client, redis_url, monkeypatch, tmp_path):
    # Another process, with a cache directory of its own, compiles the model.
    env = dict(os.environ, MLC_CACHE_DIR=str(tmp_path / "other"), MLC_REMOTE_CACHE=redis_url, MLC_INTERPRET="1")
    other = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {HERE!r}); "
                            "import test_cache_sharing as t; print(t.compile_once())"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr[-3000:]
    assert other.stdout.split("\n")[-2] == "miss: no entry (remote: no entry)"
    assert redis_client.keys("mlc:graphs:*")
    # This one starts with empty directories: the graph comes from Redis.
    in_fresh_dir(monkeypatch, tmp_path, "explain")
    model, x = make_model()
    report = mlc.explain(model, x, interpret=True, remote_cache=redis_url)
    assert [g.cache for g in report.graphs] == ["hit (remote)"]
    assert "cache: hit (remote)" in str(report)
    local = in_fresh_dir(monkeypatch, tmp_path, "compile")
    assert compile_once(remote_cache=redis_url) == "hit (remote)"
    # ... and is copied here: the next compile is a local hit.
    assert list(local.rglob("*.pt"))
    assert compile_once(remote_cache=redis_url) == "hit"
    # The option in MLC_REMOTE_CACHE does the same.
    in_fresh_dir(monkeypatch, tmp_path, "env")
    monkeypatch.setenv("MLC_REMOTE_CACHE", redis_url)
    assert compile_once() == "hit (remote)"


def rewrite_entry(client, edit):
    (key,) = client.keys("mlc:graphs:*")
    client.set(key, edit(client.get(key)))


def test_corrupted_and_foreign_remote_entries_are_misses(redis_client, redis_url, monkeypatch, tmp_path):
    in_fresh_dir(monkeypatch, tmp_path, "writer")
    assert compile_once(remote_cache=redis_url) == "miss: no entry (remote: no entry)"

    def flip_last_byte(value):
        return value[:-1] + bytes([value[-1] ^ 1])

    def header_of_other_torch(value):
        line, payload = value[len(remote.MAGIC):].split(b"\n", 1)
        header = json.loads(line)
        header["versions"]["torch"] = "0.0-other"
        return remote.MAGIC + json.dumps(header).encode() + b"\n" + payload

    cases = [(flip_last_byte, "miss: remote entry corrupted (checksum mismatch)"),
             (lambda value: b"PNG\x00 something else", "miss: remote foreign entry (not an mlc cache entry)"),
             (header_of_other_torch, f"miss: remote foreign entry (torch 0.0-other, here {torch.__version__})")]
    for k, (edit, verdict) in enumerate(cases):
        rewrite_entry(redis_client, edit)
        in_fresh_dir(monkeypatch, tmp_path, f"reader{k}")
        with pytest.warns(UserWarning, match="ignoring the remote cache entry"):
            assert compile_once(remote_cache=redis_url) == verdict
        # The local compile wrote the entry again: the next process with nothing hits.
        in_fresh_dir(monkeypatch, tmp_path, f"again{k}")
        assert compile_once(remote_cache=redis_url) == "hit (remote)"


def test_a_payload_that_passes_its_checksum_but_does_not_load_is_a_miss(redis_client, redis_url, monkeypatch,
                                                                         tmp_path):
    in_fresh_dir(monkeypatch, tmp_path, "writer")
    compile_once(remote_cache=redis_url)
    (key,) = redis_client.keys("mlc:graphs:*")
    kind, k = key.decode().split(":")[1:]
    redis_client.set(key, remote.pack(kind, k, b"not a torch.save file", cache.versions()))
    in_fresh_dir(monkeypatch, tmp_path, "reader")
    with pytest.warns(UserWarning, match="ignoring the remote cache entry"):
        verdict = compile_once(remote_cache=redis_url)
    assert verdict.startswith("miss: remote entry corrupted (")


def test_tuning_results_are_shared(redis_client, redis_url, monkeypatch, tmp_path):
    def tunings(**options):
        """(verdict, [whether each kernel's tuning came from a cache]) of one compile."""
        model, x = make_model()
        seen = []
        torch._dynamo.reset()
        try:
            compiled = torch.compile(model, backend=lambda gm, ex: mlc_backend(
                gm, ex, options={"interpret": True, "autotune": "default", **options},
                _on_compile=lambda g, c: seen.append(c)))
            with torch.no_grad():
                compiled(x)
        finally:
            torch._dynamo.reset()
        (cg,) = seen
        return cg.cache, [launch.tuning.from_cache for launch in cg.plan.launches if launch is not None]

    in_fresh_dir(monkeypatch, tmp_path, "writer")
    verdict, from_cache = tunings(remote_cache=redis_url)
    assert verdict.startswith("miss") and from_cache and not any(from_cache)
    assert redis_client.keys("mlc:tuning:*")
    local = in_fresh_dir(monkeypatch, tmp_path, "reader")
    assert tunings(remote_cache=redis_url) == ("hit (remote)", [True] * len(from_cache))
    assert list((local / "tuning").rglob("*.json"))  # copied here
    assert cache.load_json("tuning", "cd" * 16, remote=redis_url) == (None, "no entry (remote: no entry)")


def silent_server():
    """A socket that accepts connections and never answers: a Redis that hangs."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


@pytest.mark.parametrize("kind", ["nothing listening", "a server that never answers"])
def test_redis_down_is_one_warning_and_a_local_compile(kind, monkeypatch, tmp_path):
    server = silent_server() if kind != "nothing listening" else None
    port = server.getsockname()[1] if server else free_port()
    url, other_url = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            in_fresh_dir(monkeypatch, tmp_path, "a")
            assert compile_once(remote_cache=url) == "miss: no entry (remote: unreachable)"
            in_fresh_dir(monkeypatch, tmp_path, "b")
            assert compile_once(remote_cache=url) == "miss: no entry (remote: unreachable)"
            # Never a hang: one socket timeout at most, no retries, then the remote is left alone.
            start = time.monotonic()
            assert remote.get(other_url, "graphs", "ab" * 16, cache.versions()) == (None, "unreachable")
            assert time.monotonic() - start < remote.CONNECT_TIMEOUT_S + remote.TIMEOUT_S + 1
            start = time.monotonic()
            assert remote.get(other_url, "graphs", "cd" * 16, cache.versions()) == (None, "unreachable")
            assert time.monotonic() - start < 0.1
    finally:
        if server:
            server.close()
    messages = [str(w.message) for w in caught if "remote cache" in str(w.message)]
    # one per URL
    assert len(messages) == 2 and all("cannot be reached" in m for m in messages), messages


def test_not_a_redis_url_is_a_warning(monkeypatch, tmp_path):
    in_fresh_dir(monkeypatch, tmp_path, "a")
    with pytest.warns(UserWarning, match="not a Redis URL"):
        verdict = compile_once(remote_cache="http://example.invalid/")
    assert verdict.startswith("miss: no entry (remote: not used (not a Redis URL")


# --- bundles ---------------------------------------------------------------------------------


def test_a_bundle_primes_an_empty_directory(monkeypatch, tmp_path):
    in_fresh_dir(monkeypatch, tmp_path, "built")
    assert compile_once() == "miss: no entry"
    bundle = tmp_path / "mlc-cache.zip"
    saved = cache.save_artifacts(bundle)
    assert saved["graphs"] == 2 and saved["kernels"] >= 1  # the entry, and the record that explains misses
    empty = in_fresh_dir(monkeypatch, tmp_path, "primed")
    assert cache.load_artifacts(bundle) == saved
    assert compile_once() == "hit"
    assert sorted(p.name for p in empty.rglob("*.pt")) == sorted(p.name for p in (tmp_path / "built").rglob("*.pt"))


def test_a_file_that_is_not_a_bundle_is_an_error(tmp_path):
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not an mlc cache bundle"):
        cache.load_artifacts(path)
