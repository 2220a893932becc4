"""``KernelSource``: what a template generates for one region, and all the runtime needs;
``CodegenError``: why a region cannot be one kernel.

It is plain data (the cache writes it as JSON): the module's source, its runtime arguments,
the template that wrote it (by name; ``mlc.codegen.templates.TEMPLATES`` maps the name to
the template object), the launch sizes as expressions of the size symbols, and whatever
else the template needs to launch it again (``params``, JSON values only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy


class CodegenError(Exception):
    """The region cannot be written as one kernel (the fusion pass then splits it)."""


@dataclass
class KernelSource:
    """Everything needed to compile and launch one generated kernel."""

    name: str
    kind: str  # the template's name: a key of TEMPLATES ("pointwise", "reduction", "matmul")
    source: str  # a whole Python module
    arg_names: list[str]  # runtime arguments in order (constexprs excluded)
    signature: dict[str, str]  # Triton types of the runtime arguments, for ahead-of-time compiles
    symbols: list[sympy.Symbol]  # size symbols passed as arguments
    launch: tuple  # launch sizes (ints or expressions of ``symbols``); what each is, the template says
    params: dict = field(default_factory=dict)  # template-specific facts (JSON values), e.g. "persistent"
    input_strided: list[list[int]] = field(default_factory=list)  # dims whose stride each input passes
    layout: list[str] = field(default_factory=list)  # layout decisions: operands read or results written transposed
