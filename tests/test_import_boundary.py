"""The plugin import boundary (issue 17, item 5): a built-in plugin is written exactly as a third
party would write it. Every module under plugins/ imports of reinv-bench only the facade
(``reinv_bench.api``, and ``hookimpl`` from ``reinv_bench``); of the plugin packages only its own
package's helper modules (underscore modules, the package's ``__init__``), never another plugin
package and never an entry-point module (another plugin). Imports are read with ``ast``: those
inside functions and under ``if TYPE_CHECKING`` count too."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
FACADE = "reinv_bench.api"


def entry_point_modules() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {v.split(":")[0] for v in data["project"]["entry-points"]["reinv_bench"].values()}


def plugin_packages() -> set[str]:
    return {p.name for p in PLUGINS.iterdir() if (p / "__init__.py").exists()}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PLUGINS).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, source: str | None = None) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names imported from it) of every import in the file."""
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the module's package
                up = package.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join([*up, *([base] if base else [])])
            names = [a.name for a in node.names]
            if node.module is None:  # from . import x: x is a module of the package
                out += [(node.lineno, f"{base}.{n}", []) for n in names]
            else:
                out.append((node.lineno, base, names))
    return out


def violations(
    path: Path, entry_points: set[str], packages: set[str], source: str | None = None
) -> list[str]:
    me = module_name(path)
    own = me.split(".")[0]
    bad = []
    for line, mod, names in imports(path, source):
        top = mod.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line}"
        if top == "reinv_bench":
            if mod == FACADE or (mod == "reinv_bench" and names == ["hookimpl"]):
                continue
            what = f"from {mod} import {', '.join(names)}" if names else f"import {mod}"
            bad.append(f"{where}: {what} (a plugin imports only {FACADE} and reinv_bench.hookimpl)")
        elif top in packages and top != own:
            bad.append(f"{where}: {mod} is another plugin package")
        elif top == own:
            # 'from reinv_x import name' may name a module of the package as well as an attribute
            for target in [mod, *(f"{mod}.{n}" for n in names)]:
                if target in entry_points and target != me:
                    bad.append(
                        f"{where}: {target} is another plugin (an entry-point module); share "
                        f"code through an underscore module of the package"
                    )
    return bad


def plugin_files() -> list[Path]:
    return sorted(PLUGINS.rglob("*.py"))


def test_every_plugin_module_imports_only_the_facade_and_its_own_helpers():
    entry_points, packages = entry_point_modules(), plugin_packages()
    assert len(plugin_files()) > 20 and {"reinv_attacks", "reinv_metrics", "reinv_executors"} <= packages
    bad = [v for path in plugin_files() for v in violations(path, entry_points, packages)]
    assert not bad, "plugins importing past the facade:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("from reinv_bench.engine.train import predict\n", "from reinv_bench.engine.train import predict"),
        ("import reinv_bench.contract.weights\n", "import reinv_bench.contract.weights"),
        ("from reinv_bench import steps\n", "from reinv_bench import steps"),
        (
            "def f():\n    from reinv_bench.engine.plan import Cell\n",
            "from reinv_bench.engine.plan import Cell",
        ),
        ("from .ppa import StyleGANAttack\n", "reinv_attacks.ppa is another plugin"),
        ("from reinv_attacks import ppa\n", "reinv_attacks.ppa is another plugin"),
        (
            "from reinv_architectures.small_cnns import CNN\n",
            "reinv_architectures.small_cnns is another plugin package",
        ),
    ],
)
def test_the_walk_catches_each_kind_of_crossing(source, complaint):
    fake = PLUGINS / "reinv_attacks" / "zz_probe.py"  # never written: only its name places it
    bad = violations(fake, entry_point_modules(), plugin_packages(), source)
    assert len(bad) == 1 and complaint in bad[0], bad


@pytest.mark.parametrize(
    "source",
    [
        "from reinv_bench.api import Attack, predict\n",
        "from reinv_bench import hookimpl\n",
        "from ._stylegan import StyleGANAttack\n",
        "from reinv_attacks._gan import frozen\n",
        "import torch\nfrom torch import nn\n",
    ],
)
def test_the_facade_and_own_helpers_pass(source):
    fake = PLUGINS / "reinv_attacks" / "zz_probe.py"
    assert violations(fake, entry_point_modules(), plugin_packages(), source) == []


def test_the_facade_lists_what_it_exports():
    import reinv_bench.api as api

    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing and len(set(api.__all__)) == len(api.__all__)
    # what plugins take from it resolves, with no import cycle at import time
    assert (
        api.predict.__module__ == "reinv_bench.engine.train"
        and api.Cell.__module__ == "reinv_bench.engine.plan"
    )


def test_what_plugins_take_from_the_facade_is_in_its_all():
    import reinv_bench.api as api

    taken = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in plugin_files()
        for _, mod, names in imports(path)
        if mod == FACADE
        for name in names
    }
    missing = sorted(t for t in taken if t[1] not in api.__all__)
    assert not missing, f"imported from the facade but not in reinv_bench.api.__all__: {missing}"
