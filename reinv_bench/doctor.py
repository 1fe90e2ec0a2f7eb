"""Is everything a run needs here? Two answers, each collecting every problem before it reports:

- ``check_data(scenario, data_root)`` (``reinv-bench data check``): the scenario's own checks
  (``Scenario.check``: layout, list files, identity counts) and the generic ones every scenario
  gets (``generic_checks``: the data loads, every class has training images, labels in range,
  splits disjoint, a sample of the image files decodes), the label order and the data digest
  that keys the cache.
- ``missing_prerequisites(request, registry)`` (``run``, ``run --dry-run``): every weights file,
  data folder and optional extra the whole plan needs and this machine lacks, as one checklist,
  each with the command that fixes it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reinv_bench.config import ConfigError
from reinv_bench.data import Problem, Scenario, ScenarioData
from reinv_bench.images import DataError, ImageFiles

SAMPLE = 1000  # image files decoded by default (``--sample``); 0: all


# ---- decoding -----------------------------------------------------------------------------------


def _pil_decode(path: str) -> Any:
    from PIL import Image

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

# optional extras a builtin plugin needs: (kind, name) -> (module, extra)
EXTRAS = {
    ("executor", "ray"): ("ray", "ray"),
    ("executor", "submitit"): ("submitit", "slurm"),
    ("defense", "dpsgd"): ("opacus", "dp"),
}


@dataclass(frozen=True)
class Missing:
    """One missing prerequisite: what, and the command (or step) that fixes it. ``required``:
    the run would fail without it (False: a metric records null with the reason)."""

    kind: str  # weights | data | extra | file
    what: str
    fix: str
    required: bool = True


def _weights(registry: Any, value: str, where: str, required: bool = True) -> Missing | None:
    """A weights name (or a path) that is not usable here, with the command that installs it."""
    from reinv_bench.weights import best_state, usable

    if value in registry.names("weights"):
        w = registry.get("weights", value)
        state = best_state(w)
        if usable(state):
            return None
        get = f"get {w.url} and " if w.url else "get the file and "
        return Missing(
            "weights",
            f"weights {value} ({w.filename}) for {where}: {state}",
            f"{get}run `reinv-bench weights add {value} FILE`",
            required,
        )
    path = Path(value).expanduser()
    if path.is_file():
        return None
    return Missing(
        "file",
        f"{where}: {value} is neither a file nor a weights name",
        "give an existing file, or a name `reinv-bench weights` lists",
        required,
    )


def _ensemble_members(
    registry: Any, texts: Iterable[str], scenarios: list[Scenario], budget: str
) -> list[str]:
    """The installed members of the ensembles (``--attack auto``) among ``texts``, per scenario:
    their prerequisites are the run's too."""
    from reinv_bench import spec as specs
    from reinv_bench.api import ConfigError, EnsembleAttack

    out = []
    for text in dict.fromkeys(texts):
        comps = specs.parse(text)
        cls = registry.get("attack", comps[0].name)
        if len(comps) != 1 or not issubclass(cls, EnsembleAttack):
            continue
        for s in scenarios:
            try:
                members = cls(comps[0].params, budget).members(s.name)
            except ConfigError:  # the plan says so in one line
                continue
            names = registry.names("attack")
            out += [m for m in members if all(c.name in names for c in specs.parse(m))]
    return list(dict.fromkeys(out))


def _components(registry: Any, kind: str, texts: Iterable[str], budget: str):
    """(name, resolved config) of every component the spec texts name (sweeps expanded)."""
    from reinv_bench import spec as specs

    for text in dict.fromkeys(texts):
        for one, _ in specs.sweep(text):
            for comp in specs.parse(one):
                cls = registry.get(kind, comp.name)
                yield comp.name, cls.resolve(comp.params, budget)


def _arch_weights(registry: Any, text: str, where: str) -> Missing | None:
    from reinv_bench import spec as specs

    comp = specs.parse(text)[0]
    value = comp.params.get("weights")
    if not value:
        return None
    arch = registry.get("architecture", comp.name)
    return _weights(registry, arch.pretrained.get(value, value), where)


def _extra(kind: str, name: str) -> Missing | None:
    module, extra = EXTRAS.get((kind, name), (None, None))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return Missing(
        "extra", f"{kind} {name} needs the {module} package", f"pip install 'reinv-bench[{extra}]'"
    )


def missing_prerequisites(
    req: Any, registry: Any, executor: str | None = None, optional: bool = True
) -> list[Missing]:
    """Everything ``req`` (a ``plan.Request``) needs and this machine lacks, across the whole plan:
    weights of the architectures (targets and evaluation models), of defenses and attacks (a
    StyleGAN file), the scenarios' data, optional extras of the executor and defenses; with
    ``optional``, also the weights of metrics that would record null without them."""
    from reinv_bench import spec as specs

    scenarios = [registry.get("scenario", s) for s in dict.fromkeys(req.scenarios)]
    found: dict[str, Missing] = {}
    candidates = [
        *(m for scenario in scenarios for m in _missing_of_scenario(registry, req, scenario, optional)),
        *_missing_of_components(registry, req, scenarios),
        _extra("executor", specs.parse(executor)[0].name) if executor else None,
        *(_missing_metric_weights(registry, req, scenarios) if optional else ()),
        *_missing_judge_weights(registry, req, scenarios),
    ]
    for m in candidates:
        if m is not None:
            found.setdefault(m.what.split(" for ")[0] if m.kind == "weights" else m.what, m)
    return list(found.values())


def _missing_of_scenario(registry: Any, req: Any, scenario: Scenario, optional: bool):
    """The scenario's data (and, with ``optional``, what its data check warns of), and the weights of
    its target and evaluation architectures."""
    root = None if req.data_root is None else Path(req.data_root)
    cmd = f"reinv-bench data check {scenario.name}" + (f" --data-root {root}" if root else " --data-root DIR")
    try:
        scenario.load(root)
    except DataError as exc:
        yield Missing(
            "data", f"{scenario.name}: {exc}", f"put the data in place, then `{cmd}` lists what is left"
        )
    else:
        if optional:  # what the data check finds beyond what stops a run (the CelebA ganset list, ...)
            for p in check_data_quick(scenario, root):
                yield Missing("data", f"{scenario.name}: {p.what}", f"{p.fix} (`{cmd}` checks it all)", False)
    for text in req.archs or [scenario.default_arch]:
        yield _arch_weights(registry, text, f"--arch {text}")
    text = req.eval_arch or scenario.eval_arch
    yield _arch_weights(registry, text, f"the evaluation model {text} of {scenario.name}")


def _missing_of_components(registry: Any, req: Any, scenarios: list[Scenario]):
    """The extras of the defenses and attacks, and the weights files their settings name."""
    from reinv_bench import spec as specs

    weights = set(registry.names("weights"))
    # a pretrained defense's weights=: a weights name, a path, or a target architecture's short name
    targets = [
        registry.get("architecture", specs.parse(t)[0].name)
        for s in scenarios
        for t in dict.fromkeys(req.archs or [s.default_arch])
    ]
    attacks = [*req.attacks, *_ensemble_members(registry, req.attacks, scenarios, req.budget)]
    for kind, texts in (("defense", req.defenses), ("attack", attacks)):
        for name, config in _components(registry, kind, texts, req.budget):
            yield _extra(kind, name)
            for key, value in config.items():
                if not isinstance(value, str) or not value:
                    continue
                if key == "weights" and kind == "defense":
                    for w in dict.fromkeys(a.pretrained.get(value, value) for a in targets):
                        yield _weights(registry, w, f"{kind} {name} ({key}={value})")
                elif value in weights:
                    yield _weights(registry, value, f"{kind} {name} ({key}={value})")


def _missing_metric_weights(registry: Any, req: Any, scenarios: list[Scenario]):
    """Weights of the metrics that run: without them the metric is stored as null (not required)."""
    for metric in _metrics(req, registry, scenarios):
        plugin = registry.entry("metric", metric).plugin
        for entry in registry.entries("weights"):
            if entry.plugin == plugin:
                m = _weights(registry, entry.name, f"metric {metric}", required=False)
                if m is not None:
                    yield Missing(m.kind, f"{m.what} (without it the metric is stored as null)", m.fix, False)


def _missing_judge_weights(registry: Any, req: Any, scenarios: list[Scenario]):
    """Weights the judges read on each scenario (``Judge.weights``: the verification judge's face
    network on a face scenario): without them the judge stores null (not required)."""
    from reinv_bench import spec as specs

    for text in dict.fromkeys(getattr(req, "judges", None) or ()):
        try:
            (comp,) = specs.parse(text)
            judge = registry.get("judge", comp.name)(comp.params, req.budget)
        except Exception:  # noqa: BLE001 - a judge the plan refuses says why there
            continue
        for scenario in scenarios:
            for name in judge.weights(scenario):
                m = _weights(registry, name, f"judge {text} on {scenario.name}", required=False)
                if m is not None:
                    yield Missing(m.kind, f"{m.what} (without it the judge stores null)", m.fix, False)


def _metrics(req: Any, registry: Any, scenarios: list[Scenario]) -> list[str]:
    from reinv_bench.protocol import default_metrics

    if req.metrics:
        return [m for m in dict.fromkeys(req.metrics) if m in registry.names("metric")]
    return list(dict.fromkeys(m.name for s in scenarios for m in default_metrics(registry, s)[0]))


class MissingPrerequisites(ConfigError):
    """``reinv_bench.run`` before any step: the required prerequisites this machine lacks, all of
    them (``missing``), the message their checklist."""

    def __init__(self, missing: list[Missing]) -> None:
        super().__init__(checklist(missing))
        self.missing = missing


def checklist(missing: list[Missing]) -> str:
    """The one list a run prints of what it lacks, required first."""
    need = [m for m in missing if m.required]
    lines = [f"missing before this run can start: {len(need)} required, {len(missing) - len(need)} optional"]
    for n, m in enumerate(sorted(missing, key=lambda m: not m.required), 1):
        lines += [
            f"  [{n}] {'required' if m.required else 'optional'} {m.kind}: {m.what}",
            f"      fix: {m.fix}",
        ]
    return "\n".join(lines)


def metric_names(registry: Any, names: Iterable[str]) -> list[str]:
    """``--metric`` values as metric names: a metric's name, or the key of one of its columns
    (``attack_acc5`` is a column of ``attack_acc``: that metric computes it). Unknown names are
    kept, for the plan's did-you-mean error."""
    known = set(registry.names("metric"))
    column_of = {
        c.key: e.name for e in registry.entries("metric") for c in e.obj.columns if c.key not in known
    }
    return list(dict.fromkeys(column_of.get(n, n) for n in names))
