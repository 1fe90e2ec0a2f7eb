"""Component specs on the command line: ``name[key=value,...]`` joined by ``+``.

    re                      Random Erasing with its paper defaults
    re[scale=0.1-0.8]       a tuple parameter given as a range lo-hi
    re[value=0.4/0.4/0.4]   a tuple parameter given as a /-separated list
    re+bido                 a composition (defenses) or a wrapper (attacks: lomma+gmi)

Values stay text here; each plugin's declared Params parse and validate them.
"""

from __future__ import annotations

import re as _re
from dataclasses import dataclass, field

_PART = _re.compile(r"^\s*([A-Za-z_][\w\-]*)\s*(?:\[(.*)\])?\s*$")


class SpecError(ValueError):
    """A component spec could not be parsed; the message shows the offending text."""


@dataclass(frozen=True)
class Component:
    name: str
    params: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.params.items())}]"


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse(text: str) -> list[Component]:
    """Parse ``a[k=v]+b`` into components, in order."""
    out = []
    for part in _split_top(text, "+"):
        m = _PART.match(part)
        if not m:
            raise SpecError(f"cannot parse {part!r} in {text!r}; expected NAME or NAME[key=value,...]")
        params: dict[str, str] = {}
        for item in _split_top(m.group(2) or "", ","):
            if not item.strip():
                continue
            if "=" not in item:
                raise SpecError(f"parameter {item.strip()!r} in {text!r} has no '=': write key=value")
            k, v = item.split("=", 1)
            if k.strip() in params:
                raise SpecError(f"parameter {k.strip()!r} is given twice in {text!r}; keep one")
            params[k.strip()] = v.strip()
        out.append(Component(m.group(1), params))
    return out
