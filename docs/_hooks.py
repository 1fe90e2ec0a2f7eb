"""MkDocs hook: pages generated at build time, so the site never drifts from the code.

- ``index.md``: README.md, its links into docs/ made site-relative;
- ``changelog.md``: CHANGELOG.md;
- ``cards/NAME.md``: ``reinv-bench plugins NAME`` of every registered attack, defense, architecture,
  scenario, metric, judge and executor (paper, official code, every Param, budgets), and an index;
- ``reference/api.md`` and ``reference/hooks.md``: the facade and the hooks, by mkdocstrings.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def _readme() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"\]\(docs/([^)]+)\)", r"](\1)", text)
    text = re.sub(r"\]\(CHANGELOG\.md\)", "](changelog.md)", text)

    def outside(m: re.Match) -> str:  # a link to a file of the repository: shown as its path
        return f"{m.group(1)} (`{m.group(2)}`)"

    return re.sub(r"\[([^\]]+)\]\(((?:benchmarks|plugins|reinv_bench|tests)/[^)]+)\)", outside, text)


def _cards() -> dict[str, str]:
    from click.testing import CliRunner

    from reinv_bench.cli import State, cli
    from reinv_bench.registry.lookup import KINDS, load

    registry = load()
    state = State(())
    state._pm, state._registry = registry.pm, registry
    pages, index = {}, ["# Plugin cards", "", "What `reinv-bench plugins NAME` prints for each builtin.", ""]
    for kind in KINDS:
        if kind == "weights" or not registry.names(kind):
            continue
        index += [f"## {kind.capitalize()}", ""]
        for name in registry.names(kind):
            result = CliRunner().invoke(cli, ["plugins", name], obj=state)
            if result.exit_code != 0:
                raise RuntimeError(f"reinv-bench plugins {name}: {result.output}")
            file = re.sub(r"[^A-Za-z0-9_-]", "-", f"{kind}-{name}")
            pages[f"cards/{file}.md"] = f"# {name} ({kind})\n\n```text\n{result.output.rstrip()}\n```\n"
            index.append(f"- [{name}]({file}.md)")
        index.append("")
    pages["cards/index.md"] = "\n".join(index)
    return pages


def on_files(files, config):
    pages = {
        "index.md": _readme(),
        "changelog.md": (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"),
        "reference/api.md": "# Plugin API\n\n::: reinv_bench.api\n",
        "reference/hooks.md": "# Hooks\n\n::: reinv_bench.hookspecs\n",
        **_cards(),
    }
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files
