"""Does a scenario's data load and hold together? ``check_data(scenario, data_root)`` (``reinv-bench
data check``) collects every problem before it reports: the scenario's own checks (``Scenario.check``:
layout, list files, identity counts) and the generic ones every scenario gets (``generic_checks``:
the data loads, every class has training images, labels in range, splits disjoint, a sample of the
image files decodes), the label order and the data digest that keys the cache.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from reinv_bench.contract.images import DataError, ImageFiles

if TYPE_CHECKING:
    from reinv_bench.contract.data import Scenario, ScenarioData

SAMPLE = 1000  # image files decoded by default (``--sample``); 0: all


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario's data (``reinv-bench data check``): what, and what to do.
    ``error``: the scenario is not ready (False: a warning; the run would go on)."""

    what: str
    fix: str
    error: bool = True


# ---- decoding -----------------------------------------------------------------------------------


def _pil_decode(path: str) -> Any:

    with Image.open(path) as im:
        im.load()  # a full decode: a truncated file fails here (Image.verify() would pass some)
        return None


def undecodable(
    paths: Sequence[str],
    sample: int = 0,
    decode: Callable[[str], Any] | None = None,
    shape: tuple[int, ...] | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """(files checked, [(file, why)] of those that do not decode): all of ``paths`` (``sample``
    0) or ``sample`` of them drawn with a fixed seed. ``decode``: the scenario's own decoding
    (``ImageFiles.decode``: (H, W, C) at the final size, checked against ``shape`` (C, H, W));
    default: PIL decodes the whole file."""
    paths = list(dict.fromkeys(paths))
    if sample and len(paths) > sample:
        pick = np.random.default_rng(0).choice(len(paths), sample, replace=False)
        paths = [paths[i] for i in np.sort(pick)]
    bad = []
    for p in paths:
        special = _not_regular(p)
        if special:  # a named pipe would block the decoder forever: never opened
            bad.append((p, special))
            continue
        try:
            out = (decode or _pil_decode)(p)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the finding
            bad.append((p, f"{type(exc).__name__}: {exc}"))
            continue
        if shape is not None and out is not None:
            got = (np.shape(out)[2], *np.shape(out)[:2]) if np.ndim(out) == 3 else tuple(np.shape(out))
            if tuple(got) != tuple(shape):
                bad.append((p, f"decoded to {tuple(got)}, expected {tuple(shape)}"))
    return len(paths), bad


def _not_regular(path: str) -> str:
    """Why ``path`` is not a regular file that can be opened without blocking ('' if it is one)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return ""
    kinds = [(stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISDIR, "a directory")]
    what = next((name for test, name in kinds if test(mode)), "a special file")
    return f"{what}, not a regular file (never opened: it could block)"


def decode_problem(checked: int, bad: list[tuple[str, str]]) -> list[Problem]:
    """The one problem for the undecodable files found (none: no problem)."""
    if not bad:
        return []
    first = "; ".join(f"{p}: {why}" for p, why in bad[:3])
    return [
        Problem(
            f"{len(bad)} of {checked:,} image file(s) checked do not decode ({first})",
            "replace them with the dataset's originals (extract its archive again) or remove them and "
            "their lines in the list files; then check again with --sample 0 (every file)",
        )
    ]


# ---- the generic checks -------------------------------------------------------------------------


def _files(x: Any) -> list[str]:
    return [x.paths[i] for i in x.index] if isinstance(x, ImageFiles) else []


def _first(values: Iterable[Any], n: int = 5) -> str:
    values = list(values)
    return ", ".join(map(str, values[:n])) + (", ..." if len(values) > n else "")


def label_problems(scenario: Scenario, data: ScenarioData) -> list[Problem]:
    """Labels against the protocol: in range, every class with training images, a test split."""
    out, name, n = [], scenario.name, scenario.num_classes
    layout = f"check the dataset is complete (`reinv-bench protocol {name}` says what it holds)"
    y = data.private_train.y
    if y is None or len(y) == 0:
        return [Problem(f"{name}: the private training split is empty or unlabelled", layout)]
    labels = set(y.tolist())
    outside = sorted(c for c in labels if not 0 <= c < n)
    if outside:
        out.append(Problem(f"{name}: private labels {_first(outside)} outside 0..{n - 1}", layout))
    empty = sorted(set(range(n)) - labels)
    if empty:
        out.append(
            Problem(
                f"{name}: {len(empty)} of the protocol's {n:,} classes have no training image "
                f"(classes {_first(empty)}): the target cannot learn them",
                layout,
                error=False,
            )
        )
    if data.private_test.y is not None and len(data.private_test):
        untested = sorted(set(range(n)) - set(data.private_test.y.tolist()))
        if untested:
            out.append(
                Problem(
                    f"{name}: {len(untested)} class(es) have no test image (classes {_first(untested)}): "
                    "their natural accuracy is not measured",
                    layout,
                    error=False,
                )
            )
    attacked = [c for c in scenario.target_classes() if not 0 <= c < n]
    if attacked:
        out.append(
            Problem(
                f"{name}: attacked classes {_first(attacked)} outside 0..{n - 1}",
                "the scenario's target_classes() must name classes of its private data",
            )
        )
    if data.eval_train.y is not None and len(data.eval_train.y):
        eval_y = data.eval_train.y
        if int(eval_y.min()) < 0 or int(eval_y.max()) >= scenario.eval_num_classes:
            out.append(
                Problem(f"{name}: evaluation labels outside 0..{scenario.eval_num_classes - 1}", layout)
            )
    for split, what in ((data.private_train, "private"), (data.public, "public")):
        if len(split) and tuple(split.x.shape[1:]) != tuple(scenario.image_shape):
            out.append(
                Problem(
                    f"{name}: {what} images are {tuple(split.x.shape[1:])}, the scenario declares "
                    f"{tuple(scenario.image_shape)}",
                    "the scenario's load() must resize to image_shape",
                )
            )
    if not len(data.public):
        out.append(
            Problem(f"{name}: no public data (the attacker's prior has nothing to learn from)", layout)
        )
    return out


def overlap_problems(scenario: Scenario, data: ScenarioData) -> list[Problem]:
    """Image files listed twice: in train and test, in private and public data, or twice in a split."""
    out = []
    train, test, public = (_files(s.x) for s in (data.private_train, data.private_test, data.public))
    fix = "the same image must not be in two splits: remove the duplicate files or list lines"
    for a, b, what in ((train, test, "private train and test"), (train + test, public, "private and public")):
        both = sorted(set(a) & set(b))
        if both:
            out.append(
                Problem(
                    f"{scenario.name}: {len(both)} image file(s) in both the {what} data "
                    f"(first: {_first(both, 3)})",
                    fix,
                )
            )
    for files, what in ((train + test, "private"), (public, "public")):
        twice = len(files) - len(set(files))
        if twice:
            out.append(
                Problem(
                    f"{scenario.name}: {twice} {what} image file(s) listed more than once", fix, error=False
                )
            )
    return out


def generic_checks(
    scenario: Scenario, data_root: Path | None, sample: int = SAMPLE, decode: bool = True
) -> list[Problem]:
    """What every scenario gets (``Scenario.check``'s default): ``load`` succeeds, labels match
    the protocol, splits are disjoint, and a sample of the image files decodes to the declared shape."""
    root = None if data_root is None else Path(data_root)
    try:
        data = scenario.load(root)
    except DataError as exc:
        return [
            Problem(
                str(exc),
                f"put the data where the message says (`reinv-bench protocol {scenario.name}`), "
                "then run this check again",
            )
        ]
    except Exception as exc:  # noqa: BLE001 - a loader's failure is the finding, in one line
        return [
            Problem(
                f"{scenario.name}: loading the data failed: {type(exc).__name__}: {exc}",
                "fix the file it names, or report the scenario's failure to its plugin's authors",
            )
        ]
    out = label_problems(scenario, data) + overlap_problems(scenario, data)
    if decode:
        for split in (data.private_train, data.private_test, data.public):
            if isinstance(split.x, ImageFiles):
                out += decode_problem(
                    *undecodable(_files(split.x), sample, split.x.decode, split.x.image_shape)
                )
    return out


# ---- the report ---------------------------------------------------------------------------------


@dataclass
class DataReport:
    scenario: str
    data_root: Path | None
    problems: list[Problem]
    labels: list[str] = field(default_factory=list)  # class i's name, in label order (ready only)
    digest: str | None = None  # the data digest that keys every step reading this data (ready only)
    source: str = ""

    @property
    def ready(self) -> bool:
        return not any(p.error for p in self.problems)

    def label_text(self) -> str:
        """The label order file: one ``INDEX<TAB>NAME`` line per class."""
        return "".join(f"{i}\t{name}\n" for i, name in enumerate(self.labels))

    def label_hash(self) -> str:
        return hashlib.sha256(self.label_text().encode()).hexdigest()[:16]


def check_data(scenario: Scenario, data_root: Path | None, sample: int = SAMPLE) -> DataReport:
    """Every problem of ``scenario``'s data under ``data_root`` at once; when ready, the label
    order and the data digest too."""
    root = None if data_root is None else Path(data_root)
    try:
        problems = list(scenario.check(root, sample))
    except DataError as exc:  # a check that stops at its first finding still reports it
        problems = [Problem(str(exc), f"`reinv-bench protocol {scenario.name}` says what the data must hold")]
    except Exception as exc:  # noqa: BLE001 - a plugin's failing check: one line, not a traceback
        problems = [
            Problem(
                f"{scenario.name}: its data check failed: {type(exc).__name__}: {exc}",
                "report it to the scenario plugin's authors; `reinv-bench plugins` names its package",
            )
        ]
    report = DataReport(scenario.name, root, problems)
    if report.ready:
        try:
            data = scenario.load(root)
        except Exception as exc:  # noqa: BLE001 - a check that missed it: still one line
            report.problems.append(
                Problem(
                    f"{scenario.name}: loading the data failed: {type(exc).__name__}: {exc}",
                    f"`reinv-bench protocol {scenario.name}` says what the data must hold",
                )
            )
            return report
        try:
            names = scenario.class_names(root)
        except Exception:  # noqa: BLE001 - names are a courtesy: "class i" then
            names = None
        report.labels = list(names) if names else [f"class {i}" for i in range(scenario.num_classes)]
        report.digest, report.source = data.digest, data.source
    return report


def check_data_quick(scenario: Scenario, data_root: Path | None) -> list[Problem]:
    """The scenario's checks without decoding any image (what a dry run can afford)."""
    try:
        return list(scenario.check(data_root, 0, decode=False))
    except Exception as exc:  # noqa: BLE001 - the run itself will say more
        return [Problem(f"its data check failed: {type(exc).__name__}: {exc}", "run the data check")]


def render(report: DataReport, labels_file: Path | None = None) -> str:
    """The report as the command prints it."""
    lines = [
        f"data check {report.scenario}" + (f" (data root {report.data_root})" if report.data_root else "")
    ]
    for p in sorted(report.problems, key=lambda p: not p.error):
        lines += [f"  {'ERROR  ' if p.error else 'WARNING'} {p.what}", f"          fix: {p.fix}"]
    if not report.ready:
        n = sum(p.error for p in report.problems)
        lines.append(f"not ready: {n} problem(s) to fix (and {len(report.problems) - n} warning(s))")
        return "\n".join(lines)
    if report.source:
        lines.append(f"data: {report.source}")
    shown = ", ".join(f"{i}={n}" for i, n in enumerate(report.labels[:5])) + (
        ", ..." if len(report.labels) > 5 else ""
    )
    where = f" written to {labels_file}" if labels_file else ""
    lines += [
        f"label order: {len(report.labels):,} classes{where} (sha256 {report.label_hash()}): {shown}",
        f"data digest: {report.digest} (enters the key of every step that reads this data)",
        "ready" + (f" ({len(report.problems)} warning(s))" if report.problems else ""),
    ]
    return "\n".join(lines)


# ---- the prerequisites of a whole plan ----------------------------------------------------------
