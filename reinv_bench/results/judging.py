"""Judges' answers: where they are stored, and the leaderboard columns derived from them.

A judge (``api.Judge``, registered with ``register_judges``) answers per reconstruction whether it
shows the identity of the private images of its class: yes / no / no answer. Its answers are
stored with the cell, under the key ``judge[LABEL]`` (LABEL: the judge's spec as the leaderboard
shows it, ``verification`` or ``verification[far=0.001]``, ``human``):

- ``row.outcomes.per_reconstruction["judge[L]"]``: 1.0 yes, 0.0 no, None no answer;
- ``row.metrics["judge[L]"]``: the fraction of answered reconstructions judged yes (null with the
  reason in ``row.notes`` when there is no answer at all); ``row.notes["judge[L]"]``: how the judge
  decided (threshold, rates, model), when it answered;
- ``row.config["metrics"]["judge[L]"]``: the judge's version.

Answers that come from outside a run (people: ``reinv-bench judge import``) are written into the
stored row of their cell with ``store_verdicts``.

The leaderboard derives, per merged row (``derive``), with E the privacy axis's per-reconstruction
success (attack accuracy: the evaluation model's top-1 is the attacked class) and J the judge:

- ``judge[L]`` itself is the judge's attack accuracy (MI-Eval-MLLM's ``AttAcc_F_Gemini``);
- ``confirmed_acc[L]``: over the reconstructions J answered, the fraction with E yes and J yes;
- ``eval_fpr[L]``: over the reconstructions J says no to, the fraction E says yes to: the
  evaluation model's false-positive rate with the judge as the truth, as MI-Eval-MLLM computes it
  (Ho et al. 2025, arXiv:2505.03519; hosytuyen/MI-Eval-MLLM ``utility.py::compute_metrics``:
  ``FPR = FP / (FP + TN)``, FP: judge no and evaluation model yes). Reconstructions that fool target
  and evaluator alike ("Type-I adversarial" examples) raise it. It reads the judge's stored
  answers: a judge that counts refusals as "no" (``mllm[refusal=no]``, MI-Eval-MLLM's main
  evaluation) counts them among the TN/FP here, one that stores them as no answer
  (``refusal=none``, the default) leaves them out. (Not the share of the evaluation
  model's successes the judge rejects, FP / (FP + TP): that is 1 - confirmed / attack accuracy
  where every reconstruction is answered.)
- with several evaluation models (``--eval-arch A --eval-arch B``): ``eval_agree[B]``, the fraction
  of reconstructions where B's success (``attack_acc[B]``) equals A's.

Each is a per-reconstruction outcome, so its 95% interval (and its difference from the baseline)
comes from the class bootstrap of ``reinv_bench.results.stats`` like any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from reinv_bench.contract.judge import Verdicts
from reinv_bench.contract.metric import Column
from reinv_bench.results.outcomes import Outcomes
from reinv_bench.results.store import Row

VERDICT, CONFIRMED, FPR, AGREE = "judge", "confirmed_acc", "eval_fpr", "eval_agree"


@dataclass(frozen=True)
class JudgeKey:
    """The identity of a value that one judge (or one further evaluation model) gave: ``kind`` is
    ``judge`` (its answers), ``confirmed_acc``, ``eval_fpr``, ``eval_agree`` (derived from them) or
    a metric's key (``attack_acc``, computed with the evaluation model ``label``); ``label`` the
    judge's or evaluation model's label. Stored as the string ``key``: ``KIND[LABEL]``."""

    kind: str
    label: str

    _FORM = re.compile(r"(?P<kind>[^\[]+)\[(?P<label>.+)\]")

    @property
    def key(self) -> str:
        return f"{self.kind}[{self.label}]"

    @classmethod
    def parse(cls, key: str) -> JudgeKey | None:
        """``JudgeKey("judge", "verification")`` for ``judge[verification]``; None for a key
        without a suffix."""
        m = cls._FORM.fullmatch(key)
        return None if m is None else cls(m["kind"], m["label"])


def verdict_key(label: str) -> str:
    """The key a judge's answers are stored under: ``judge[LABEL]``."""
    return JudgeKey(VERDICT, label).key


def is_verdict(key: str) -> bool:
    """Whether ``key`` holds a judge's answers (``judge[LABEL]``)."""
    k = JudgeKey.parse(key)
    return k is not None and k.kind == VERDICT


def confirmed(key: str) -> bool:
    """Whether ``key`` is a judge's confirmed accuracy."""
    k = JudgeKey.parse(key)
    return k is not None and k.kind == CONFIRMED


def column(key: str, columns: list[Column]) -> Column | None:
    """The column of a key this module derives (or of a declared key computed with a further
    evaluation model, ``attack_acc[B]``: the declared column, without its axis); None otherwise."""
    k = JudgeKey.parse(key)
    if k is None:
        return None
    base, label = k.kind, k.label
    if base == VERDICT:
        return Column(key, f"Judge {label} %", percent=True, better="lower", interval=True)
    if base == CONFIRMED:
        return Column(key, f"Confirmed {label} %", percent=True, better="lower", interval=True)
    if base == FPR:
        return Column(key, f"Eval FPR {label} %", percent=True, interval=True)
    if base == AGREE:
        return Column(key, f"Eval agree {label} %", percent=True, interval=True)
    declared = next((c for c in columns if c.key == base), None)
    if declared is None:
        return None
    header = declared.header.removesuffix("%").strip() + f" {label}" + (" %" if declared.percent else "")
    return replace(declared, key=key, header=header, axis=None)


def sort_key(key: str) -> tuple:
    """Undeclared keys in the leaderboard's order: plain ones by name, then per judge its answers,
    confirmed accuracy and false-positive rate, per further evaluation model its metrics and its
    agreement."""
    k = JudgeKey.parse(key)
    if k is None:
        return (0, key)
    base, label = k.kind, k.label
    return (1, label, {VERDICT: 0, CONFIRMED: 1, FPR: 2, AGREE: 4}.get(base, 3), base)


# --------------------------------------------------------------------------------------------
# Storing answers


def record(
    metrics: dict[str, Any], notes: dict[str, str], outcomes: Outcomes | None, label: str, verdicts: Verdicts
) -> None:
    """Put a judge's answers for one cell into its row's metrics, notes and outcomes."""
    key = verdict_key(label)
    if outcomes is not None and len(verdicts.answers) != len(outcomes):
        raise ValueError(
            f"judge {label} gave {len(verdicts.answers)} answers for {len(outcomes)} reconstructions"
        )
    items = [None if a is None else float(bool(a)) for a in verdicts.answers]
    answered = [v for v in items if v is not None]
    if outcomes is not None:
        outcomes.per_reconstruction[key] = items
    if answered:
        metrics[key] = sum(answered) / len(answered)
        if verdicts.note:
            notes[key] = verdicts.note
        else:
            notes.pop(key, None)
    else:
        metrics[key], notes[key] = (
            None,
            verdicts.note or f"judge {label} answered none of the reconstructions",
        )


def store_verdicts(
    store: Any, cell_id: str, label: str, answers: list[bool | None], note: str = "", version: int = 1
) -> Row:
    """Write a judge's answers into the stored row of ``cell_id`` (answers from outside a run, e.g.
    people's: one per reconstruction of the cell, None where not asked) and return the new row.
    The row is replaced in place; nothing else in it changes."""
    new = judged(store.get(cell_id), cell_id, label, answers, note, version)
    store.put(new)
    return new


def judged(
    row: Row | None, cell_id: str, label: str, answers: list[bool | None], note: str = "", version: int = 1
) -> Row:
    """``row`` (the stored row of ``cell_id``) with a judge's answers written in (see
    ``store_verdicts``), not stored: several can then be stored in one transaction."""
    if row is None or row.status != "ok":
        what = "is not in the results database" if row is None else f"is {row.status}"
        raise ValueError(f"cell {cell_id} {what}: only a stored successful cell can be judged")
    if row.outcomes is None:
        raise ValueError(f"cell {cell_id} stored no per-reconstruction outcomes; rerun it first")
    if len(answers) != len(row.outcomes):
        raise ValueError(
            f"cell {cell_id}: {len(answers)} answers for {len(row.outcomes)} reconstructions "
            "(give None for those not asked)"
        )
    metrics, notes = dict(row.metrics or {}), dict(row.notes or {})
    outcomes = Outcomes.from_json(row.outcomes.to_json())  # a copy
    record(metrics, notes, outcomes, label, Verdicts(list(answers), note))
    config = dict(row.config or {})
    config["metrics"] = {**(config.get("metrics") or {}), verdict_key(label): version}
    return replace(row, metrics=metrics, notes=notes, outcomes=outcomes, config=config)


# --------------------------------------------------------------------------------------------
# The leaderboard's derived columns


def _binary(values: list[float | None]) -> bool:
    return all(v in (0.0, 1.0) for v in values if v is not None)


def _mean(items: list[float | None]) -> float | None:
    vals = [v for v in items if v is not None]
    return sum(vals) / len(vals) if vals else None


def derive(row: Row, success: str | None) -> Row:
    """``row`` with the columns derived from its judges' answers and its further evaluation
    models' successes (module docstring); ``success``: the key of the per-reconstruction 0/1
    success they are read against (the privacy axis, attack accuracy). Rows without those
    outcomes are returned as they are."""
    out = row.outcomes
    per = {} if out is None else out.per_reconstruction
    e = per.get(success) if success else None
    if e is None or len(e) != len(out) or not _binary(e):
        return row
    new: dict[str, list[float | None]] = {}
    why: dict[str, str] = {}
    for key, values in per.items():
        k = JudgeKey.parse(key)
        if k is None or len(values) != len(e):
            continue
        label = k.label
        if k.kind == VERDICT:
            conf, fpr = JudgeKey(CONFIRMED, label).key, JudgeKey(FPR, label).key
            new[conf] = [None if j is None or s is None else s * j for s, j in zip(e, values)]
            new[fpr] = [s if j == 0.0 else None for s, j in zip(e, values)]
            silent = (row.notes or {}).get(key) if (row.metrics or {}).get(key) is None else None
            why[conf] = silent or f"judge {label} answered none of the reconstructions"
            why[fpr] = silent or f"judge {label} said no to none of the reconstructions"
        elif k.kind == success and _binary(values):
            new[JudgeKey(AGREE, label).key] = [
                None if a is None or b is None else float(a == b) for a, b in zip(e, values)
            ]
    if not new:
        return row
    outcomes = Outcomes(out.classes, out.target_conf, {**per, **new}, dict(out.per_item))
    metrics, notes = dict(row.metrics or {}), dict(row.notes or {})
    for key, items in new.items():
        metrics[key] = _mean(items)
        if metrics[key] is None:
            notes[key] = why.get(key, "no reconstruction with both answers")
    return replace(row, metrics=metrics, notes=notes, outcomes=outcomes)


def remarks(rows: list[Row]) -> list[str]:
    """How each judge decided, once per scenario and judge (its rows' notes), e.g. "verification
    on mnist: resnet8 on public data: cosine to the class template > 0.95, set at FAR 0.01; ..."."""
    seen: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        for key, note in (r.notes or {}).items():
            k = JudgeKey.parse(key)
            if k and k.kind == VERDICT and (r.metrics or {}).get(key) is not None and note:
                seen.setdefault((k.label, r.scenario), set()).add(note)
    return [
        f"Judge {label} on {scenario}: {' | '.join(sorted(n))}"
        for (label, scenario), n in sorted(seen.items())
    ]
