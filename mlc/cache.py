"""The persistent cache under ``MLC_CACHE_DIR`` (default ``~/.cache/mlc``).

One file per entry, in a folder per kind: ``kernels/`` (generated Triton modules, by source
hash), ``ptxas/`` (what ``ptxas -v`` said about one kernel in one configuration), ``tuning/``
(the autotuner's choice per kernel and shape bucket) and ``graphs/`` (whole compiled graphs).
Keys are hashes of everything the entry depends on, the versions of mlc, torch and Triton
included (``versions()``), so an upgrade never reads a stale entry.

Every write goes to a temporary file in the same folder, then ``os.replace``: a reader sees
a whole entry or none, and two processes writing the same entry at once both write a whole,
equal file (the last rename wins, nothing is lost; entries are never read-modify-written, so
no lock is needed). An entry that cannot be read (truncated, garbage, from a foreign
format) is reported with a warning and treated as absent; the caller's next write replaces it.

With ``remote_cache`` set, whole graphs and tuning results missing here are looked up in Redis
(``mlc.remote``; a graph found there is a ``"hit (remote)"``) and copied into this directory,
and what is compiled is copied there too. ``save_artifacts``/``load_artifacts`` carry the whole
directory to another machine as one file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass, fields, replace
from importlib import metadata

import sympy
import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

from . import remote as remote_cache
from .codegen.compile import cache_dir
from .codegen.source import KernelSource
from .codegen.writer import kernel_symbols
from .ir.graph import Graph
from .ir.parser import parse
from .ir.printer import print_graph
from .passes import PassRecord


@functools.lru_cache(maxsize=None)
def versions() -> dict[str, str]:
    """The versions every cache key includes."""
    import triton

    try:
        mlc_version = metadata.version("mlc")
    except metadata.PackageNotFoundError:
        mlc_version = "unknown"
    # The package version does not change while mlc is developed (an editable install): the
    # hash of its sources does, so an edited pass never meets a graph the old one compiled.
    return {"mlc": f"{mlc_version}+{_source_hash()}", "torch": torch.__version__, "triton": triton.__version__}


def _source_hash() -> str:
    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(d, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:12]


def digest(*parts) -> str:
    """A hex key for ``parts`` (strings, bytes, or anything JSON can write)."""
    h = hashlib.sha256()
    for p in parts:
        data = p if isinstance(p, bytes) else p.encode() if isinstance(p, str) else \
            json.dumps(p, sort_keys=True, default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:32]


def tensor_digest(t: torch.Tensor) -> str:
    """A hash of a tensor's contents, dtype, shape and strides."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{t.dtype}|{tuple(t.shape)}|{t.stride()}|{t.storage_offset()}".encode())
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy().data if flat.dtype != torch.bool else flat.numpy().data)
    return h.hexdigest()


def entry_path(kind: str, key: str, ext: str) -> str:
    return os.path.join(cache_dir(), kind, key[:2], f"{key}.{ext}")


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees part of it."""
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def warn_corrupted(path: str, error: Exception) -> str:
    """Warn about an unreadable entry; returns the miss reason to record."""
    why = remote_cache.describe(error)
    warnings.warn(f"mlc: ignoring the unreadable cache entry {path} ({why}); it will be rewritten", stacklevel=3)
    return f"entry corrupted ({why})"


def load_json(kind: str, key: str, remote: str | None = None) -> tuple[object | None, str]:
    """(the entry, "") or (None, why there is none: "no entry" or "entry corrupted (...)").

    ``remote`` (a ``remote_cache`` URL) is asked when this directory has no readable entry.
    """
    path = entry_path(kind, key, "json")
    data = read_bytes(path)
    why = "no entry"
    if data is not None:
        try:
            return json.loads(data), ""
        except (ValueError, UnicodeDecodeError) as e:
            why = warn_corrupted(path, e)
    if remote:
        value, remote_why = _from_remote(remote, kind, key, "json", json.loads)
        if remote_why == "":
            return value, ""
        why += f" (remote: {remote_why})"
    return None, why


def store_json(kind: str, key: str, value, remote: str | None = None) -> None:
    """Write an entry (here, and to ``remote``); a failure (read-only or full disk, Redis down) is
    a warning, never an error."""
    data = json.dumps(value, sort_keys=True).encode()
    try:
        write_atomic(entry_path(kind, key, "json"), data)
    except OSError as e:
        warnings.warn(f"mlc: cannot write to the cache in {cache_dir()}: {e}", stacklevel=2)
    if remote:
        remote_cache.put(remote, kind, key, data, versions())


def _from_remote(url: str, kind: str, key: str, ext: str, decode) -> tuple[object | None, str]:
    """(``decode(bytes)``, "") for the remote's entry, copied into this directory, or (None, why
    not: "no entry", "unreachable", "foreign entry (...)", "entry corrupted (...)")."""
    payload, why = remote_cache.get(url, kind, key, versions())
    if payload is None:
        if why.startswith(("foreign", "entry corrupted")):
            remote_cache.warn_bad_entry(url, kind, key, why)
        return None, why
    try:
        value = decode(payload)
    except Exception as e:  # noqa: BLE001 - whatever is wrong with it, it is not used
        why = f"entry corrupted ({remote_cache.describe(e)})"
        remote_cache.warn_bad_entry(url, kind, key, why)
        return None, why
    try:
        write_atomic(entry_path(kind, key, ext), payload)
    except OSError as e:
        warnings.warn(f"mlc: cannot write to the cache in {cache_dir()}: {e}", stacklevel=3)
    return value, ""


# --- whole compiled graphs ---------------------------------------------------------------------

# Options that do not change what a graph compiles to: they are not part of its key.
# (The tuning level is not either: tuning results have their own entries, per kernel.)
OPTIONS_NOT_IN_KEY = ("dump_dir", "verify", "autotune", "strict", "cache", "remote_cache")
GRAPH_FORMAT = 1


@dataclass
class CachedGraph:
    """A compiled graph as the cache holds it: the graph after its passes (with constants),
    how its outputs map to the FX graph's, the pass log, and the generated kernels in order."""

    graph: Graph
    output_spec: tuple
    passes: list
    sources: list[KernelSource]


def graph_keys(graph: Graph, output_spec: tuple, opts) -> tuple[str, str, dict]:
    """(entry key, graph key, the options in the key) for an imported graph.

    The graph key hashes its IR text (under a fixed name: the name counts compiles in a
    process) and its constants' contents; the entry key adds options and versions.
    """
    text = print_graph(replace(graph, name="graph"))
    with unset_fake_temporarily():  # AOT autograd compiles under a FakeTensorMode; constants are real
        consts = {name: tensor_digest(t) for name, t in sorted(graph.constants.items())}
    graph_key = digest("graph", text, consts, repr(output_spec))
    options = {f.name: repr(getattr(opts, f.name)) for f in fields(opts) if f.name not in OPTIONS_NOT_IN_KEY}
    return digest(graph_key, options, versions()), graph_key, options


def _why_missing(graph_key: str, options: dict) -> str:
    """Why there is no entry: compare with what the last compile of this graph recorded in this
    directory. (The remote is not asked: its record, written by other versions, would be foreign.)"""
    seen, _ = load_json("graphs", graph_key)
    if not isinstance(seen, dict):
        return "no entry"
    old_versions, now = seen.get("versions", {}), versions()
    changed = [f"{k} version changed ({old_versions.get(k)} -> {now[k]})" for k in now if old_versions.get(k) != now[k]]
    if changed:
        return "; ".join(changed)
    old_options = seen.get("options", {})
    diff = [f"{k}: {old_options.get(k)} -> {v}" for k, v in options.items() if old_options.get(k) != v]
    return f"options changed ({', '.join(diff)})" if diff else "no entry"


def load_graph(key: str, graph_key: str, options: dict, name: str,
               remote: str | None = None) -> tuple[CachedGraph | None, str]:
    """(the cached graph, renamed ``name``, and "hit" or "hit (remote)") or (None, "miss: <why>").

    ``remote`` (a ``remote_cache`` URL) is asked when this directory has no readable entry;
    what it has is copied here.
    """
    path = entry_path("graphs", key, "pt")
    data = read_bytes(path)
    why = None
    if data is not None:
        try:
            return _decode_graph(data, name), "hit"
        except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, it is not used
            why = warn_corrupted(path, e)
    if not remote:
        return None, f"miss: {why or _why_missing(graph_key, options)}"
    hit, remote_why = _from_remote(remote, "graphs", key, "pt", lambda b: _decode_graph(b, name))
    if hit is not None:
        return hit, "hit (remote)"
    if remote_why.startswith(("foreign", "entry corrupted")):
        return None, f"miss: remote {remote_why}"
    return None, f"miss: {why or _why_missing(graph_key, options)} (remote: {remote_why})"


def _decode_graph(data: bytes, name: str) -> CachedGraph:
    """A graph entry's bytes as a CachedGraph; raises whatever is wrong with them."""
    # AOT autograd compiles under a FakeTensorMode, and torch.load gives meta tensors when
    # the tracing context has one: load outside both.
    with torch._guards.tracing(None), unset_fake_temporarily():
        entry = torch.load(io.BytesIO(data), weights_only=True)
    meta = json.loads(entry["meta"])
    if meta.get("format") != GRAPH_FORMAT:
        raise ValueError(f"format {meta.get('format')}, expected {GRAPH_FORMAT}")
    graph = parse(meta["ir"], entry["constants"])
    graph = replace(graph, name=name, notes=tuple(meta["notes"]))
    bodies = [n.attrs["body"] for n in graph.nodes if n.op == "kernel"]
    if meta["kernels"] and len(bodies) != len(meta["kernels"]):  # none: no plan was built
        raise ValueError(f"{len(meta['kernels'])} kernel sources for {len(bodies)} kernels")
    sources = [_source_from_json(d, body) for d, body in zip(meta["kernels"], bodies)]
    spec = tuple(x if isinstance(x, int) else tuple(x) for x in meta["output_spec"])
    passes = [PassRecord(**p) for p in meta["passes"]]
    return CachedGraph(graph, spec, passes, sources)


def store_graph(key: str, graph_key: str, options: dict, entry: CachedGraph,
                remote: str | None = None) -> str | None:
    """Write a compiled graph (here, and to ``remote``); returns why it cannot be cached (None: written)."""
    g = entry.graph
    for name, t in g.constants.items():
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            return f"constant {name} is a {type(t).__name__}"
    text = print_graph(g)
    try:
        if print_graph(parse(text, dict(g.constants))) != text:
            return "its IR text does not parse back to the same graph"
        meta = json.dumps({"format": GRAPH_FORMAT, "ir": text, "notes": list(g.notes),
                           "output_spec": list(entry.output_spec), "passes": [asdict(p) for p in entry.passes],
                           "kernels": [_source_to_json(ks) for ks in entry.sources]})
    except (TypeError, ValueError) as e:  # a ParseError, or something JSON cannot write
        return f"{type(e).__name__}: {e}"
    buf = io.BytesIO()
    with unset_fake_temporarily():  # as in graph_keys: constants are real tensors
        torch.save({"meta": meta, "constants": {k: v.detach() for k, v in g.constants.items()}}, buf)
    if remote:
        remote_cache.put(remote, "graphs", key, buf.getvalue(), versions())
    try:
        write_atomic(entry_path("graphs", key, "pt"), buf.getvalue())
    except OSError as e:
        warnings.warn(f"mlc: cannot write to the cache in {cache_dir()}: {e}", stacklevel=2)
        return f"cannot write: {e}"
    store_json("graphs", graph_key, {"options": options, "versions": versions()})
    return None


def _expr_json(e):
    return None if e is None else int(e) if isinstance(e, int) or getattr(e, "is_Integer", False) else str(e)


def _source_to_json(ks: KernelSource) -> dict:
    return {"name": ks.name, "kind": ks.kind, "source": ks.source, "arg_names": ks.arg_names,
            "signature": ks.signature, "symbols": [str(s) for s in ks.symbols],
            "launch": [_expr_json(d) for d in ks.launch], "params": ks.params, "input_strided": ks.input_strided,
            "layout": ks.layout}


def _source_from_json(d: dict, body: Graph) -> KernelSource:
    symbols = {str(s): s for s in kernel_symbols(body)}

    def expr(x):
        return x if isinstance(x, int) else sympy.sympify(x, locals=symbols)

    return KernelSource(d["name"], d["kind"], d["source"], list(d["arg_names"]), dict(d["signature"]),
                        [symbols[s] for s in d["symbols"]], tuple(expr(x) for x in d["launch"]), dict(d["params"]),
                        [list(x) for x in d["input_strided"]], list(d["layout"]))


# --- bundles: the whole cache as one file ------------------------------------------------------

BUNDLE_KINDS = ("graphs", "kernels", "tuning", "ptxas")
BUNDLE_FORMAT = 1
_MANIFEST = "manifest.json"


def save_artifacts(path: str | os.PathLike) -> dict[str, int]:
    """Write everything in the cache directory a warm start needs (whole graphs, kernel modules,
    tuning results, ptxas verdicts) to ``path``, one zip file, to prime another machine or a
    container with ``load_artifacts``. Returns how many entries of each kind it holds.
    """
    root = cache_dir()
    entries = {}
    for kind in BUNDLE_KINDS:
        for d, dirs, files in os.walk(os.path.join(root, kind)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for name in sorted(files):
                if not (name.startswith(".") or name.endswith(".tmp")):  # a write in progress
                    full = os.path.join(d, name)
                    entries[os.path.relpath(full, root).replace(os.sep, "/")] = full
    buf = io.BytesIO()
    manifest = {"format": BUNDLE_FORMAT, "versions": versions(), "entries": {}}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, full in entries.items():
            data = read_bytes(full)
            if data is not None:  # removed since the walk
                z.writestr(rel, data)
                manifest["entries"][rel] = hashlib.sha256(data).hexdigest()
        z.writestr(_MANIFEST, json.dumps(manifest, sort_keys=True, indent=1))
    write_atomic(os.fspath(path), buf.getvalue())
    return _count(manifest["entries"])


def load_artifacts(path: str | os.PathLike) -> dict[str, int]:
    """Copy the entries of a ``save_artifacts`` bundle into the cache directory; returns how many
    of each kind were copied. An entry whose checksum does not match is skipped with a warning;
    a bundle of other mlc/torch/Triton versions loads, with a warning, but none of its entries
    will hit. A file that is not a bundle is a ``ValueError``.
    """
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read(_MANIFEST))
            if manifest.get("format") != BUNDLE_FORMAT:
                raise ValueError(f"bundle format {manifest.get('format')}, expected {BUNDLE_FORMAT}")
            theirs, now = manifest.get("versions", {}), versions()
            changed = [f"{k} {theirs.get(k)} (here {v})" for k, v in now.items() if theirs.get(k) != v]
            if changed:
                warnings.warn(f"mlc: the cache bundle {path} was written by {', '.join(changed)}: its "
                              "entries will not hit here", stacklevel=2)
            loaded = {}
            for rel, checksum in manifest["entries"].items():
                parts = rel.split("/")
                if parts[0] not in BUNDLE_KINDS or any(p in ("", ".", "..") for p in parts) or len(parts) > 3:
                    raise ValueError(f"bundle entry {rel!r} is outside the cache's folders")
                data = z.read(rel)
                if hashlib.sha256(data).hexdigest() != checksum:
                    warnings.warn(f"mlc: skipping the corrupted entry {rel} of the cache bundle {path}", stacklevel=2)
                    continue
                write_atomic(os.path.join(cache_dir(), *parts), data)
                loaded[rel] = checksum
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not an mlc cache bundle ({type(e).__name__}: {e})") from None
    return _count(loaded)


def _count(entries) -> dict[str, int]:
    return {kind: sum(rel.startswith(kind + "/") for rel in entries) for kind in BUNDLE_KINDS}
