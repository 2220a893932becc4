"""The pass manager: pass options, binding them, running the pipeline (verify, time, dump).

A pass that takes options declares them where it is defined, with ``@pass_options``: each is
a keyword parameter of the pass function, of the same name and default, and is the compile
option of that name too (``mlc.options`` builds its options from these declarations)::

    FOLD_LIMIT = PassOption("fold_limit", float, 2.0, "fold only what grows at most this much", minimum=0)

    @pass_options(FOLD_LIMIT)
    def fold_constants(graph: Graph, fold_limit: float = FOLD_LIMIT.default) -> Graph: ...

``bind(pass, fold_limit=0)`` sets options (checked against the declarations), and
``parse_pipeline("fold_constants{fold_limit=0},fuse", PASSES)`` reads mlir-opt's syntax.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from ..ir.graph import Graph
from ..ir.verifier import verify

Pass = Callable[[Graph], Graph]
logger = logging.getLogger(__name__)  # "log" is run_passes' list of records

_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@dataclass(frozen=True)
class PassOption:
    """An option: its name, the type(s) a value may have, its default, a one-line doc, and,
    where it has them, the values it may take (``choices``) or its smallest value (``minimum``).

    ``float`` admits ints too; ``bool`` admits only ``True`` and ``False``.
    """

    name: str
    type: type | tuple[type, ...]
    default: object
    doc: str
    choices: tuple | None = None
    minimum: float | None = None

    @property
    def types(self) -> tuple[type, ...]:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return (*types, int) if float in types and int not in types else types

    def describe(self) -> str:
        """What a value may be, in words: ``one of 'a', 'b'``, ``a number >= 0``, ``True or False``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.types == (bool,):
            return "True or False"
        if float in self.types:
            return "a number" + (f" >= {self.minimum:g}" if self.minimum is not None else "")
        names = ["None" if t is type(None) else t.__name__ for t in self.types]
        return "a " + (" or ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " or " + names[-1])

    def problem(self, value) -> str | None:
        """What is wrong with ``value`` for this option (``must be ...``), or None."""
        ok = isinstance(value, self.types) and (bool in self.types or not isinstance(value, bool))
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok and self.minimum is not None:
            ok = value >= self.minimum  # False for NaN too
        return None if ok else "must be " + self.describe()

    def parse(self, text: str):
        """A value from text, read as this option's type: ``true``/``false``, ``none``, numbers;
        anything else, or anything in quotes, is a string. A ValueError says what was expected."""
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        word = text.lower()
        if bool in self.types:
            if word not in _WORDS:
                raise ValueError("must be true or false")
            return _WORDS[word]
        if word == "none" and type(None) in self.types:
            return None
        if float in self.types:
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"must be {self.describe()}, not {text!r}") from None
        return text


def pass_options(*options: PassOption) -> Callable[[Pass], Pass]:
    """Declare the options a pass takes: keyword parameters of its function, same names and defaults."""

    def declare(p):
        params = inspect.signature(p).parameters
        for o in options:
            assert o.name in params and params[o.name].default == o.default, \
                f"{p.__name__} declares option {o.name}={o.default!r} but has no such parameter with that default"
        p.options = options
        return p

    return declare


def options_of(p: Pass) -> tuple[PassOption, ...]:
    """The options ``p`` declares (a bound pass keeps its function's)."""
    return getattr(p, "options", ())


def bind(p: Pass, **values) -> Pass:
    """``p`` with options set; a ValueError names a wrong one and says what is valid."""
    declared = {o.name: o for o in options_of(p)}
    for name, value in values.items():
        if name not in declared:
            raise ValueError(_no_option(p, name))
        problem = declared[name].problem(value)
        if problem:
            raise ValueError(f"pass {p.__name__}: option {name} {problem}, got {value!r}")
    return functools.update_wrapper(functools.partial(p, **values), p) if values else p


def _no_option(p: Pass, name: str) -> str:
    valid = ", ".join(f"{o.name} ({o.describe()})" for o in options_of(p))
    return f"pass {p.__name__} has no option '{name}'; " + (f"its options: {valid}" if valid else "it takes none")


_PASS = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\{((?:[^{}'\"]|'[^']*'|\"[^\"]*\")*)\}\s*)?(?:,|\Z)")
_ITEM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('[^']*'|\"[^\"]*\"|[^\s'\"{}=]+)\s*")


def parse_pipeline(text: str, passes: Mapping[str, Pass]) -> list[Pass]:
    """``name{key=value key2=value2},name2`` (mlir-opt's syntax) as a list of bound passes.

    Values are read as the option's type (``PassOption.parse``). A ValueError is one line that
    says what is wrong and what is valid: the known passes, a pass's options, an option's values.
    """
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip(" ,") == "" or text[pos] == ",":  # empty items, as in "a,,b" or "a,"
            pos += 1
            continue
        m = _PASS.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read --passes {text!r} from character {pos + 1}: expected "
                             f"name or name{{key=value ...}}, separated by commas")
        name, body, pos = m[1], m[2] or "", m.end()
        if name not in passes:
            raise ValueError(f"unknown pass {name}; known passes: {', '.join(passes)}")
        declared, values, at = {o.name: o for o in options_of(passes[name])}, {}, 0
        while body[at:].strip():
            item = _ITEM.match(body, at)
            if item is None:
                raise ValueError(f"cannot read {name}{{{body}}}: expected key=value items separated by spaces")
            key, raw, at = item[1], item[2], item.end()
            if key not in declared:
                raise ValueError(_no_option(passes[name], key))
            try:
                values[key] = declared[key].parse(raw)
            except ValueError as e:
                raise ValueError(f"pass {name}: option {key} {e}") from None
        out.append(bind(passes[name], **values))
    return out


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
        # Notes are the compile's log of decisions, kept here: a pass puts the notes of its own
        # decisions on the graph it returns and never carries those of the graph it was given
        # (one that returns its input unchanged returns them; they are not repeated).
        graph = replace(graph, notes=notes + tuple(n for n in graph.notes if n not in notes))
        if verify_each:
            verify(graph)
        records.append(PassRecord(p.__name__, ms, str(graph)))
        logger.debug("graph %s: pass %s: %.1f ms, %d nodes, %d kernels", graph.name, p.__name__, ms, len(graph.nodes),
                  graph.count("kernel"))
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
