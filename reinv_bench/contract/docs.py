"""A plugin's own words: its class docstring, else its module's (where a plugin's paper, code and
deliberate differences are written), and a metric's exact definition. Read by the protocol cards,
``reinv-bench plugins NAME`` and a judge's default protocol note."""

from __future__ import annotations

import inspect
import sys
from typing import Any


def cls_of(obj: Any) -> type:
    """The class of a registered object (plugins register classes or instances)."""
    return obj if isinstance(obj, type) else type(obj)


def docstring(obj: Any) -> str:
    """The object's own class docstring, else its module's (a plugin's paper, code and
    deliberate differences live in one of the two)."""
    cls = cls_of(obj)
    doc = cls.__dict__.get("__doc__") or getattr(sys.modules.get(cls.__module__), "__doc__", None) or ""
    return inspect.cleandoc(doc)


def definition(metric: Any) -> str:
    """A metric's exact definition: its ``definition`` attribute, else its docstring (paragraphs
    separated by blank lines)."""
    text = getattr(metric, "definition", "") or docstring(metric)
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n") if p.strip())
