"""The documentation against the code: docs/plugins.md gives every hook and every protocol method
with its exact signature, its two complete third-party plugins (a defense, an attack) run as
written, and the README's layout names every core module."""

from __future__ import annotations

import inspect
import json
import re
import types
from pathlib import Path

import pytest

from reinv_bench import hookspecs
from reinv_bench.api import Architecture, Attack, Defense, Executor, Metric, Scenario

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"


# --------------------------------------------------------------------------------------------
# hooks


def _hooks():
    return {n: f for n, f in vars(hookspecs).items() if hasattr(f, "reinv_bench_spec")}


def _signature(fn) -> str:
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {fn.__name__}({params}) -> {sig.return_annotation}"


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_every_hookspec_is_documented_with_its_exact_signature(name):
    text = DOCS.read_text()
    assert f"`{_signature(_hooks()[name])}`" in text, f"docs/plugins.md lacks {_signature(_hooks()[name])}"


def test_docs_name_no_hook_that_does_not_exist():
    documented = set(re.findall(r"^### `def (\w+)\(", DOCS.read_text(), flags=re.MULTILINE))
    assert documented == set(_hooks())


# --------------------------------------------------------------------------------------------
# every protocol class's methods, as the code has them


PROTOCOLS = (Attack, Defense, Architecture, Scenario, Metric, Executor)
INTERNAL = {"overridden"}  # the harness's helpers, not for plugins to implement


def _methods():
    for cls in PROTOCOLS:
        for name, fn in vars(cls).items():
            fn = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
            if not name.startswith("_") and inspect.isfunction(fn) and name not in INTERNAL:
                yield cls, name, fn


def _params(fn) -> str:
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", "cls"):
            continue
        out.append({p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name)
    return ", ".join(out)


@pytest.mark.parametrize("cls, name, fn", list(_methods()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_docs_give_every_protocol_method_with_its_signature(cls, name, fn):
    text = DOCS.read_text()
    # `Cls.name(...)` documents Cls's method (two classes may share a name); `name(...)` any
    documented = [
        args
        for owner, args in re.findall(rf"`(?:([\w.]+)\.)?{name}\(([^)`]*)\)", text)
        if not owner or owner.split(".")[-1] == cls.__name__
    ]
    expected = _params(fn)
    assert documented, f"docs/plugins.md does not document {cls.__name__}.{name}({expected})"
    assert all(d == expected for d in documented), (
        f"docs/plugins.md writes {cls.__name__}.{name}({', '.join(sorted(set(documented) - {expected}))}); "
        f"the code has {name}({expected})"
    )


# --------------------------------------------------------------------------------------------
# the complete third-party plugins, run as written


def _examples() -> dict[str, types.ModuleType]:
    """Each ```python block of the docs that starts with ``# MODULE.py``, imported as MODULE."""
    modules = {}
    for code in re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S):
        first = code.splitlines()[0]
        if m := re.fullmatch(r"# (\w+)\.py", first.strip()):
            module = types.ModuleType(m.group(1))
            exec(compile(code, f"docs/plugins.md:{m.group(1)}", "exec"), module.__dict__)
            modules[m.group(1)] = module
    return modules


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_the_documented_defense_and_attack_plugins_run_as_written(invoke, tmp_path):
    """docs/plugins.md's defense (blur) and attack (publicpick): registered through their hooks
    like an installed plugin, then run against each other on the smoke budget."""
    import sys

    from reinv_bench.registry.lookup import load

    modules = _examples()
    assert set(modules) >= {"reinv_bench_blur", "reinv_bench_pick"}
    registry = load(extra=(sys.modules["conftest"], modules["reinv_bench_blur"], modules["reinv_bench_pick"]))
    assert "blur" in registry.names("defense") and "publicpick" in registry.names("attack")
    wd = tmp_path / "w"
    invoke(
        "run",
        "-a",
        "publicpick",
        "-d",
        "blur[sigma=2]",
        "--arch",
        "tiny",
        "--eval-arch",
        "tiny",
        "--budget",
        "smoke",
        "--metric",
        "attack_acc",
        "--metric",
        "natural_acc",
        "--quiet",
        "--workdir",
        wd,
        registry=registry,
        ok=True,
    )
    entries = json.loads(
        invoke("leaderboard", "--workdir", wd, "--format", "json", registry=registry, ok=True).output
    )
    assert {(e["attack"], e["defense"]) for e in entries} == {
        ("publicpick", "none"),
        ("publicpick", "blur[sigma=2.0]"),  # the label writes the parsed float
    }
    assert all(e["attack_acc"] is not None for e in entries)


# --------------------------------------------------------------------------------------------
# README


def test_readme_layout_names_every_core_module():
    """Every module of the core is named in README's layout, inside its package's block."""
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("\n## ", 4)] if "\n## " in layout[4:] else layout
    lines = layout.splitlines()

    def block(package: str) -> str:  # the lines under ``package/``, more indented than it
        i = next(k for k, line in enumerate(lines) if re.match(rf"^\s+{package}/\s", line))
        indent = len(lines[i]) - len(lines[i].lstrip())
        rest = [line for line in lines[i + 1 :]]
        end = next((k for k, line in enumerate(rest) if len(line) - len(line.lstrip()) <= indent), len(rest))
        return "\n".join([lines[i], *rest[:end]])

    missing = []
    for path in sorted((ROOT / "reinv_bench").rglob("*.py")):
        rel = path.relative_to(ROOT / "reinv_bench")
        if path.name == "__init__.py" or "__pycache__" in rel.parts:
            continue
        where = block(rel.parts[0]) if len(rel.parts) > 1 else layout
        if not re.search(rf"\b{path.stem}\b", where):
            missing.append(rel.as_posix())
    assert not missing, f"README's layout section does not name {', '.join(missing)}"
