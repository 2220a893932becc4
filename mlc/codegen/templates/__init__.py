"""The kernel templates and their registry.

``TEMPLATES`` lists every template, in the order they are offered a region: the first whose
``takes`` says yes writes it (or says, with ``CodegenError``, why it cannot). A new template
is a module here implementing ``Template`` (``base.py``) and one line in ``TEMPLATES``;
the runtime, the autotuner, the cache and ``explain`` find it through ``template_of``.
"""

from __future__ import annotations

from ...ir.graph import Graph
from ..source import KernelSource
from ..writer import CodegenError
from .attention import ATTENTION
from .base import ATEN, INTERPRET_MAX_BLOCK, Template, is_aten
from .matmul import MATMUL
from .pointwise import POINTWISE
from .reduction import PERSISTENT_LIMIT, REDUCTION
from .scatter import SCATTER

TEMPLATES: dict[str, Template] = {t.name: t for t in (SCATTER, ATTENTION, MATMUL, REDUCTION, POINTWISE)}


def template_of(ks: KernelSource) -> Template:
    """The template that wrote ``ks``."""
    try:
        return TEMPLATES[ks.kind]
    except KeyError:
        raise ValueError(f"kernel {ks.name} names an unknown template {ks.kind!r}; "
                         f"templates: {', '.join(TEMPLATES)}") from None


def generate(body: Graph, persistent_limit: int = PERSISTENT_LIMIT, interpret: bool = False) -> KernelSource:
    """Triton source for a region, by the first template that takes it; raises ``CodegenError``
    if it is not one kernel.

    ``interpret``: the kernel is for Triton's CPU interpreter, whose bf16 ``tl.dot`` is wrong
    (triton 3.9), so bf16 matmul tiles are multiplied in fp32 there.
    """
    template = next(t for t in TEMPLATES.values() if t.takes(body))
    ks = template.generate(body, persistent_limit=persistent_limit, interpret=interpret)
    ks.layout = read_layouts(body) + ks.layout
    return ks


def read_layouts(body: Graph) -> list[str]:
    """The inputs a kernel reads through a permute: transposes that no copy kernel materializes."""
    users = body.users()
    return [f"in{k} {node.types[0]} read through permute {list(u.attrs['dims'])} (no copy)"
            for k, node in enumerate(body.inputs) for u in users[node] if u.op == "permute"]


__all__ = ["ATEN", "INTERPRET_MAX_BLOCK", "PERSISTENT_LIMIT", "TEMPLATES", "CodegenError", "KernelSource", "Template",
           "generate", "is_aten", "read_layouts", "template_of"]
