"""The plugin import boundary (issue 17, item 5): a built-in plugin is written exactly as a third
party would write it. Every module under plugins/ imports of reinv-bench only the facade
(``reinv_bench.api``, and ``hookimpl`` from ``reinv_bench``); of the plugin packages only its own
package's helper modules (underscore modules, the package's ``__init__``), never another plugin
package and never an entry-point module (another plugin). Imports are read with ``ast``: those
inside functions and under ``if TYPE_CHECKING`` count too.

The second half holds the core's own layer rules (issue 28): the floors of reinv_bench
(contract, registry, engine, results, views, cli) import only downward, nothing imports the
facade, no import cycle, function-level imports only of heavy or optional packages, and the
sizes of modules and functions. Each rule is one test whose failure lists every offender as
``file:line: the import (importer -> imported): the rule``."""

from __future__ import annotations

import ast
import sys
import tomllib
from dataclasses import dataclass
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


# ---- the core's layer rules (issue 28, items 4 and 6) ---------------------------------------------
#
# Every module of reinv_bench is parsed with ``ast``: imports at the top and inside functions,
# ``import a.b``, ``from a import b`` (b resolved to the submodule a.b where there is one),
# relative imports and ``importlib.import_module("...")`` with a literal name. Imports under
# ``if TYPE_CHECKING`` count for the layer rules (a type named across a floor is a dependency
# too) but not for cycles or the function-level rule: they never run.

CORE = ROOT / "reinv_bench"
LAYERS = ("contract", "registry", "engine", "results", "views", "cli")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 60

# The only packages a function may import (lazily), each for a reason: heavy libraries that the
# commands which do not compute (``--help``, ``plugins``, ``protocol``) must not pay for at start-up,
# and optional extras that may be absent. Anything else (the standard library, click, rich,
# tabulate: light and always installed) and any reinv_bench module is imported at the top.
LAZY_ALLOWED = {
    "torch": "required but heavy (seconds to import): the light commands start without it",
    "torchvision": "required but heavy, imports torch",
    "matplotlib": "required but heavy (~0.3-1 s): only plot, show, report and site draw",
    "ray": "optional extra [ray] (--executor ray)",
    "submitit": "optional extra [slurm] (--executor submitit)",
    "mlflow": "optional extra [mlflow] (run --log mlflow)",
    "wandb": "optional extra [wandb] (run --log wandb)",
    "opacus": "optional extra [dp] (DP-SGD)",
    "torchattacks": "optional extra [robust] (--metric robust_acc)",
    "kornia": "optional (trapmid's reference augmentation)",
    "selenium": "optional (the human judging page in a headless browser)",
}


@dataclass(frozen=True)
class Imp:
    """One import: the importing module, where it is, the module it names, how it is written,
    whether it is inside a function, and whether only type checkers see it."""

    module: str
    path: Path
    line: int
    target: str
    text: str
    nested: bool = False
    typing_only: bool = False

    @property
    def where(self) -> str:
        try:
            return f"{self.path.relative_to(ROOT)}:{self.line}"
        except ValueError:
            return f"{self.path}:{self.line}"


def core_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def core_modules() -> set[str]:
    return {core_name(p) for p in core_files()}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_import_module(call: ast.Call) -> bool:
    f = call.func
    named = (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("import_module", "__import__")
    )
    arg = call.args[0] if call.args else None
    return named and isinstance(arg, ast.Constant) and isinstance(arg.value, str)


def core_imports(path: Path, source: str | None = None, modules: set[str] | None = None) -> list[Imp]:
    """Every import of the core module at ``path`` (``source``: its text instead of the file's)."""
    modules = core_modules() if modules is None else modules
    me = core_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    out: list[Imp] = []

    def resolve(base: str | None, level: int) -> str:
        if not level:
            return base or ""
        up = package.split(".")
        up = up[: len(up) - (level - 1)]
        return ".".join([*up, *([base] if base else [])])

    def visit(node: ast.AST, nested: bool, typing_only: bool) -> None:
        here = dict(module=me, path=path, nested=nested, typing_only=typing_only)
        if isinstance(node, ast.Import):
            out.extend(
                Imp(line=node.lineno, target=a.name, text=f"import {a.name}", **here) for a in node.names
            )
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.module, node.level)
            text = (
                f"from {'.' * node.level}{node.module or ''} import {', '.join(a.name for a in node.names)}"
            )
            for target in dict.fromkeys(
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules or node.module is None else base
                for a in node.names
            ):
                out.append(Imp(line=node.lineno, target=target, text=text, **here))
        elif isinstance(node, ast.Call) and _is_import_module(node):
            name = node.args[0].value
            target = (
                resolve(name.lstrip("."), len(name) - len(name.lstrip("."))) if name.startswith(".") else name
            )
            out.append(Imp(line=node.lineno, target=target, text=f"import_module({name!r})", **here))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, nested, True)
            for child in node.orelse:
                visit(child, nested, typing_only)
            return
        inner = nested or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner, typing_only)

    visit(tree, False, False)
    return out


def all_core_imports() -> list[Imp]:
    modules = core_modules()
    return [i for p in core_files() for i in core_imports(p, modules=modules)]


def layer(module: str) -> str:
    """The floor of a module: contract, registry, engine, results, views, cli, or the top-level
    module itself (reinv_bench, reinv_bench.api, reinv_bench.hookspecs, reinv_bench.testing)."""
    parts = module.split(".")
    if parts[0] != "reinv_bench":
        return ""
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ".".join(parts[:2])


def is_core(target: str) -> bool:
    return target.split(".")[0] == "reinv_bench"


def _fail(i: Imp, rule: str) -> str:
    return f"{i.where}: {i.text} ({i.module} -> {i.target}): {rule}"


def api_violations(imps: list[Imp]) -> list[str]:
    return [
        _fail(i, "nothing in reinv_bench imports reinv_bench.api (it is the plugins' facade only)")
        for i in imps
        if i.module != FACADE and (i.target == FACADE or i.target.startswith(FACADE + "."))
    ]


# what each floor may import of the core: ("only", floors) or ("not", floors), and the rule's words
FLOORS: dict[str, tuple[str, set[str], str]] = {
    "contract": ("only", {"contract"}, "contract/ imports only contract/"),
    "registry": (
        "only",
        {"contract", "registry", "reinv_bench.hookspecs"},
        "registry/ imports only contract/, registry/ and reinv_bench.hookspecs",
    ),
    "results": ("not", {"engine", "views", "cli"}, "results/ never imports engine/, views/ or cli/"),
    "views": ("not", {"engine", "cli"}, "views/ never imports engine/ or cli/ (loaders are handed in)"),
}


def floor_violations(imps: list[Imp], floor: str) -> list[str]:
    """Imports of core modules from ``floor`` that its rule in ``FLOORS`` forbids."""
    how, floors, rule = FLOORS[floor]
    return [
        _fail(i, rule)
        for i in imps
        if layer(i.module) == floor and is_core(i.target) and (layer(i.target) in floors) == (how == "not")
    ]


def cli_violations(imps: list[Imp]) -> list[str]:
    return [
        _fail(i, "only cli/ imports cli/ (api.py's lazy re-exports excepted)")
        for i in imps
        if layer(i.target) == "cli" and layer(i.module) != "cli" and i.module != FACADE
    ]


def import_graph(imps: list[Imp], modules: set[str]) -> dict[str, dict[str, Imp]]:
    """module -> {module it imports: the first such import}, over the core's modules, counting
    imports inside functions (not those only type checkers see)."""
    graph: dict[str, dict[str, Imp]] = {m: {} for m in modules}
    for i in imps:
        if i.typing_only or i.target not in modules or i.target == i.module:
            continue
        graph.setdefault(i.module, {}).setdefault(i.target, i)
    return graph


def cycles(graph: dict[str, dict[str, Imp]]) -> list[list[Imp]]:
    """One shortest cycle (as the chain of imports) through each strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            comps.append(comp)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(limit)
    out = []
    for comp in comps:
        if len(comp) < 2:
            continue
        start = min(comp)  # breadth first from start back to it, inside the component
        prev: dict[str, str] = {}
        todo, found = [start], None
        while todo and found is None:
            nxt = []
            for v in todo:
                for w in sorted(graph[v]):
                    if w not in comp:
                        continue
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found:
                    break
            todo = nxt
        chain, v = [found], found
        while v != start:
            v = prev[v]
            chain.append(v)
        chain.reverse()
        out.append([graph[a][b] for a, b in zip(chain, [*chain[1:], start])])
    return out


def describe_cycle(chain: list[Imp]) -> str:
    return (
        "import cycle: "
        + " -> ".join(f"{i.module} ({i.where}{', in a function' if i.nested else ''})" for i in chain)
        + f" -> {chain[0].module}"
    )


def nested_violations(imps: list[Imp]) -> list[str]:
    bad = []
    for i in imps:
        if not i.nested or i.module == FACADE:
            continue
        top = i.target.split(".")[0]
        if is_core(i.target):
            bad.append(_fail(i, "a function imports a reinv_bench module; import it at the top"))
        elif top not in LAZY_ALLOWED:
            bad.append(
                _fail(
                    i,
                    f"a function imports {top}, which is not an optional or heavy dependency "
                    "(LAZY_ALLOWED); import it at the top",
                )
            )
    return bad


def size_violations(path: Path, source: str | None = None) -> list[str]:
    text = path.read_text() if source is None else source
    try:
        where = path.relative_to(ROOT)
    except ValueError:
        where = path
    bad = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        bad.append(f"{where}:1: {lines} lines, over the {MAX_MODULE_LINES} a module of the core may have")
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                bad.append(
                    f"{where}:{node.lineno}: function {node.name} is {n} lines, over the "
                    f"{MAX_FUNCTION_LINES} a function of the core may have"
                )
    return bad


def _report(bad: list[str], what: str) -> str:
    return f"{len(bad)} {what}:\n" + "\n".join(bad)


def test_the_core_walk_reads_the_tree():
    imps = all_core_imports()
    assert len(core_files()) > 40 and len(imps) > 300
    assert {layer(m) for m in core_modules()} >= {*LAYERS, "reinv_bench.api", "reinv_bench.hookspecs"}


def test_nothing_in_reinv_bench_imports_the_facade():
    bad = api_violations(all_core_imports())
    assert not bad, _report(bad, "imports of reinv_bench.api inside reinv_bench")


def test_contract_imports_only_contract():
    bad = floor_violations(all_core_imports(), "contract")
    assert not bad, _report(bad, "imports out of contract/")


def test_registry_imports_only_contract_registry_and_hookspecs():
    bad = floor_violations(all_core_imports(), "registry")
    assert not bad, _report(bad, "imports out of registry/")


def test_results_never_imports_engine_views_or_cli():
    bad = floor_violations(all_core_imports(), "results")
    assert not bad, _report(bad, "upward imports from results/")


def test_views_never_imports_engine_or_cli():
    bad = floor_violations(all_core_imports(), "views")
    assert not bad, _report(bad, "upward imports from views/")


def test_only_cli_imports_cli():
    bad = cli_violations(all_core_imports())
    assert not bad, _report(bad, "imports of cli/ from outside it")


def test_no_import_cycle_counting_function_level_imports():
    found = cycles(import_graph(all_core_imports(), core_modules()))
    assert not found, _report([describe_cycle(c) for c in found], "import cycles")


def test_function_level_imports_only_of_optional_heavy_dependencies():
    bad = nested_violations(all_core_imports())
    assert not bad, _report(bad, "function-level imports")


def test_no_module_over_500_lines_and_no_function_over_60():
    bad = [v for p in core_files() for v in size_violations(p)]
    assert not bad, _report(bad, "modules or functions over the size limits")


# ---- the checker itself, on synthetic modules --------------------------------------------------


def probe(module: str, source: str) -> list[Imp]:
    """The imports of ``source`` as if it were the module ``module`` of the core (never written)."""
    parts = module.split(".")
    return core_imports(ROOT.joinpath(*parts[:-1], parts[-1] + ".py"), source)


@pytest.mark.parametrize(
    ("module", "source", "target", "nested"),
    [
        ("reinv_bench.results.zz", "import reinv_bench.engine.steps\n", "reinv_bench.engine.steps", False),
        (
            "reinv_bench.results.zz",
            "from reinv_bench.engine import steps\n",
            "reinv_bench.engine.steps",
            False,
        ),
        (
            "reinv_bench.results.zz",
            "from reinv_bench.engine.steps import Env\n",
            "reinv_bench.engine.steps",
            False,
        ),
        ("reinv_bench.results.zz", "from ..engine.plan import Cell\n", "reinv_bench.engine.plan", False),
        ("reinv_bench.results.zz", "from . import store\n", "reinv_bench.results.store", False),
        (
            "reinv_bench.results.zz",
            "def f():\n    from reinv_bench.cli import main\n",
            "reinv_bench.cli",
            True,
        ),
        (
            "reinv_bench.results.zz",
            "import importlib\n\ndef f():\n    return importlib.import_module('reinv_bench.views.plots')\n",
            "reinv_bench.views.plots",
            True,
        ),
        ("reinv_bench.results.zz", "class A:\n    def m(self):\n        import ray\n", "ray", True),
    ],
)
def test_the_core_walk_resolves_each_kind_of_import(module, source, target, nested):
    found = [i for i in probe(module, source) if i.target == target]
    assert len(found) == 1 and found[0].nested is nested, probe(module, source)


def floor(name: str):
    return lambda imps: floor_violations(imps, name)


@pytest.mark.parametrize(
    ("module", "source", "check", "complaint"),
    [
        ("reinv_bench.engine.zz", "from reinv_bench.api import Attack\n", api_violations, "reinv_bench.api"),
        ("reinv_bench.engine.zz", "from reinv_bench import api\n", api_violations, "reinv_bench.api"),
        (
            "reinv_bench.contract.zz",
            "from reinv_bench.registry.lookup import Registry\n",
            floor("contract"),
            "contract/ imports only contract/",
        ),
        (
            "reinv_bench.contract.zz",
            "from reinv_bench import hookimpl\n",
            floor("contract"),
            "contract/ imports only",
        ),
        (
            "reinv_bench.registry.zz",
            "from reinv_bench.engine import plan\n",
            floor("registry"),
            "registry/ imports only",
        ),
        ("reinv_bench.registry.zz", "import reinv_bench\n", floor("registry"), "registry/ imports only"),
        (
            "reinv_bench.results.zz",
            "from reinv_bench.views.tables import entry_json\n",
            floor("results"),
            "results/ never imports engine/, views/ or cli/",
        ),
        (
            "reinv_bench.views.zz",
            "def f():\n    from ..engine.steps import reconstructions\n",
            floor("views"),
            "views/ never imports engine/ or cli/",
        ),
        ("reinv_bench.engine.zz", "from reinv_bench.cli import results_db\n", cli_violations, "only cli/"),
        (
            "reinv_bench.engine.zz",
            "def f():\n    from reinv_bench.results.store import Row\n",
            nested_violations,
            "a function imports a reinv_bench module",
        ),
        ("reinv_bench.engine.zz", "def f():\n    import json\n", nested_violations, "not an optional"),
    ],
)
def test_the_core_walk_catches_each_kind_of_crossing(module, source, check, complaint):
    bad = check(probe(module, source))
    where = f"reinv_bench/{module.split('.')[1]}/zz.py:"
    assert len(bad) == 1 and complaint in bad[0] and where in bad[0], bad


@pytest.mark.parametrize(
    ("module", "source", "check"),
    [
        ("reinv_bench.api", "from reinv_bench.cli import results_db\n", cli_violations),
        ("reinv_bench.cli.zz", "from reinv_bench.cli import main\n", cli_violations),
        ("reinv_bench.engine.zz", "def f():\n    import matplotlib.pyplot as plt\n", nested_violations),
        (
            "reinv_bench.contract.zz",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import click\nimport torch\n",
            floor("contract"),
        ),
        (
            "reinv_bench.registry.zz",
            "from reinv_bench.hookspecs import Spec\nfrom . import spec\n",
            floor("registry"),
        ),
        ("reinv_bench.results.zz", "from reinv_bench.registry.spec import normalise\n", floor("results")),
        ("reinv_bench.views.zz", "from reinv_bench.results.store import Row\n", floor("views")),
    ],
)
def test_the_core_walk_lets_allowed_imports_pass(module, source, check):
    assert check(probe(module, source)) == []


def test_a_cycle_is_reported_as_a_chain_and_type_checking_imports_make_none():
    a, b, c = (ROOT / "reinv_bench" / "engine" / f"zz_{n}.py" for n in "abc")
    names = {"reinv_bench.engine.zz_a", "reinv_bench.engine.zz_b", "reinv_bench.engine.zz_c"}
    imps = [
        *core_imports(a, "from reinv_bench.engine import zz_b\n", names),
        *core_imports(b, "def f():\n    from .zz_c import x\n", names),
        *core_imports(c, "import reinv_bench.engine.zz_a\n", names),
    ]
    (chain,) = cycles(import_graph(imps, names))
    text = describe_cycle(chain)
    assert text.startswith("import cycle: reinv_bench.engine.zz_a (reinv_bench/engine/zz_a.py:1) -> ")
    assert "zz_b (reinv_bench/engine/zz_b.py:2, in a function) -> reinv_bench.engine.zz_c" in text
    assert text.endswith("-> reinv_bench.engine.zz_a"), text
    typed = core_imports(
        c, "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import zz_a\n", names
    )
    assert cycles(import_graph([*imps[:2], *typed], names)) == []


def test_the_size_check_names_the_long_module_and_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    bad = size_violations(CORE / "engine" / "zz.py", f"def long():\n{body}\n\n\ndef short():\n    pass\n")
    assert bad == [
        "reinv_bench/engine/zz.py:1: function long is 62 lines, over the 60 a function of the core may have"
    ]
    bad = size_violations(CORE / "engine" / "zz.py", "x = 1\n" * 501)
    assert len(bad) == 1 and "501 lines, over the 500" in bad[0]
