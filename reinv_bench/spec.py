"""Component specs on the command line: ``name[key=value,...]`` joined by ``+``.

    re                      Random Erasing with its paper defaults
    re[scale=0.1-0.8]       a tuple parameter given as a range lo-hi
    re[value=0.4/0.4/0.4]   a tuple parameter given as a /-separated list
    re+bido                 a composition (defenses) or a wrapper (attacks: lomma+gmi)
    mid[beta=0.001|0.01]    a sweep: one component per value (several swept keys: their product)

Values stay text here; each plugin's declared Params parse and validate them.
"""

from __future__ import annotations

import itertools
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


def sweep(text: str) -> list[tuple[str, frozenset[str]]]:
    """Expand ``|``-separated values: ``mid[beta=0.001|0.01]`` -> ``mid[beta=0.001]``,
    ``mid[beta=0.01]``; several swept keys (in any component) give their product. Returns
    (spec, keys that were swept), so labels can keep the swept value even where it is the default."""
    comps = parse(text)
    swept = frozenset(k for c in comps for k, v in c.params.items() if "|" in v)
    choices = []
    for c in comps:
        keys = list(c.params)
        values = [[v.strip() for v in c.params[k].split("|")] for k in keys]
        if any(not v for vs in values for v in vs):
            raise SpecError(f"empty value in sweep {text!r}: write e.g. beta=0.001|0.01")
        choices.append([str(Component(c.name, dict(zip(keys, combo)))) for combo in itertools.product(*values)])
    return [("+".join(parts), swept) for parts in itertools.product(*choices)]
