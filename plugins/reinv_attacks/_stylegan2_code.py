"""Code embedded in a StyleGAN2-ADA pickle: what NVIDIA's loader would run of a persistence
record's module source while loading it (``load_time_code``: parsed, never run), and the warning
``load_pickle`` gives about it (``EmbeddedCodeWarning``)."""

from __future__ import annotations

import ast
import warnings


class EmbeddedCodeWarning(UserWarning):
    """A pickle whose embedded module source runs code at load time in NVIDIA's own loader."""


# what stylegan2-ada-pytorch's training/networks.py decorates with (persistence.persistent_class,
# misc.profiled_function) and the builtins a plain module may; any other decorator is a call at import
_DECORATORS = {
    "persistence.persistent_class",
    "misc.profiled_function",
    "staticmethod",
    "classmethod",
    "property",
}
# methods NVIDIA's loader calls while loading a record (torch_utils/persistence.py,
# _reconstruct_persistent_obj: persistent_class subclasses the class, then __new__, then __setstate__)
_LOAD_HOOKS = {"__new__", "__setstate__", "__init_subclass__", "__set_name__", "__class_getitem__"}


def load_time_code(src: str) -> list[str]:
    """What NVIDIA's loader would run of a record's module source while loading it (it ``exec``s the
    source: module-level and class-body statements, decorators, default values, base classes; then the
    class's ``__new__``/``__setstate__``), beyond imports and definitions of constants, functions and
    classes: one ``line N: ...`` per finding. The source is parsed (``ast``), never compiled or run;
    stylegan2-ada-pytorch's own ``training/networks.py`` has no finding."""
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ["the source does not parse as Python"]
    lines = src.splitlines()
    found: list[str] = []

    def note(node, what: str) -> None:
        text = lines[node.lineno - 1].strip() if 0 < node.lineno <= len(lines) else ""
        found.append(f"line {node.lineno}: {what} ({text[:60]!r})")

    def constant(node) -> bool:
        try:
            ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return False
        return True

    def dotted(node) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            inner = dotted(node.value)
            return None if inner is None else f"{inner}.{node.attr}"
        return None

    def definitions(body, where: str) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.Pass)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            ):
                continue
            assigned = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if assigned is not None and constant(assigned):
                continue
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                note(node, f"a statement run at {where}")
                continue
            for d in node.decorator_list:
                if dotted(d) not in _DECORATORS:
                    note(d, f"decorator of {node.name}")
            if isinstance(node, ast.ClassDef):
                if node.keywords or any(dotted(b) is None for b in node.bases):
                    note(node, f"class {node.name} with a computed base or a metaclass")
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name in _LOAD_HOOKS:
                        note(item, f"{node.name}.{item.name}, called while loading")
                definitions(node.body, f"the definition of class {node.name}")
            else:
                defaults = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
                if not all(map(constant, defaults)):
                    note(node, f"a computed default value of {node.name}")

    definitions(tree.body, "import")
    return found


def _warn_embedded_code(where: str, found: dict[str, list[str]]) -> None:
    if not found:
        return
    shown = [f"{cls}: {f}" for cls, fs in found.items() for f in fs]
    more = f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""
    warnings.warn(
        f"{where}: the module source embedded in this pickle carries code that NVIDIA's own loader "
        f"(pickle.load, legacy.load_network_pkl) would run on load: {'; '.join(shown[:3])}{more}. "
        "reinv-bench did not run it; do not open this file with NVIDIA's code.",
        EmbeddedCodeWarning,
        stacklevel=3,
    )
