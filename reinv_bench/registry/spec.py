"""Component specs on the command line: ``name[key=value,...]`` joined by ``+``.

    re                      Random Erasing with its paper defaults
    re[scale=0.1-0.8]       a tuple parameter given as a range lo-hi
    re[value=0.4/0.4/0.4]   a tuple parameter given as a /-separated list
    re+bido                 a composition (defenses) or a wrapper (attacks: lomma+gmi)
    mid[beta=0.001|0.01]    a sweep: one component per value (several swept keys: their product)

Values stay text here; each plugin's declared Params parse and validate them. ``normalise``
gives the one text of a spec that ``run``'s labels and every filter compare by (``re[p=.5]``
and ``re[p=0.50]`` both read ``re[p=0.5]``).
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
        choices.append(
            [str(Component(c.name, dict(zip(keys, combo)))) for combo in itertools.product(*values)]
        )
    return [("+".join(parts), swept) for parts in itertools.product(*choices)]


_NUMBER = _re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_RANGE = _re.compile(r"^([^-/]+)-([^-/]+)$")  # lo-hi of two non-negative numbers


def _number(text: str) -> str:
    """A number as ``run`` labels write a parsed value (``.5`` -> ``0.5``, ``1e-3`` -> ``0.001``,
    ``2.0`` -> ``2``); any other text as it is."""
    if not _NUMBER.match(text):
        return text
    value = float(text)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _value(text: str) -> str:
    if "|" in text:  # a sweep: each alternative
        return "|".join(_value(v.strip()) for v in text.split("|"))
    if "/" in text:
        return "/".join(_number(v.strip()) for v in text.split("/"))
    if m := _RANGE.match(text):
        lo, hi = _number(m.group(1).strip()), _number(m.group(2).strip())
        if _NUMBER.match(m.group(1).strip()) and _NUMBER.match(m.group(2).strip()):
            return f"{lo}-{hi}"
    return _number(text)


def normalise(text: str) -> str:
    """The one text of a spec: components in order, the identity ``none`` dropped from a
    composition, parameters sorted by key, numbers written as parsed (``re[ p=.5 ]`` ->
    ``re[p=0.5]``). Shared by ``run`` (whose labels it leaves as they are) and every filter
    (``leaderboard -d``): two texts name the same spec when their normalised texts are equal.
    Text that is not a spec (a protocol name) is returned stripped."""
    try:
        comps = parse(text)
    except SpecError:
        return text.strip()
    if len(comps) > 1:  # none is the identity: none+re is re
        comps = [c for c in comps if c.name != "none" or c.params] or comps[:1]
    return "+".join(
        str(Component(c.name, {k: _value(v) for k, v in sorted(c.params.items())})) for c in comps
    )


def matches(label: str, wanted: tuple[str, ...] | list[str]) -> bool:
    """Whether a stored label is one of the ``wanted`` specs (compared normalised)."""
    return normalise(label) in {normalise(w) for w in wanted}
