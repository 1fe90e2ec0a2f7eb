"""The notes under a leaderboard table (every format: terminal, markdown, CSV, LaTeX, report,
site): values that could not be computed, how to read the differences and marks, seed sets and
metric versions that differ, stale rows, issue 29's columns and validity flags, judges' remarks,
published numbers, where each protocol card is."""

from __future__ import annotations

from reinv_bench.contract.metric import Column
from reinv_bench.results.compare import paired_seeds, seeds_text
from reinv_bench.results.entries import Entry, present
from reinv_bench.results.judging import remarks
from reinv_bench.results.reported import reported_notes
from reinv_bench.results.validity import notes as validity_notes

STAR, HOLLOW = "★", "☆"
ONE_SEED = (
    "With one seed the intervals cover only the sampling of reconstructions (and test images), not the "
    "variation between trained targets; --seeds 3 adds it."
)


def gaps(entries: list[Entry], columns: list[Column]) -> list[str]:
    """One line per metric that shows n/a somewhere: why it could not be computed."""
    lines = []
    for c in present(entries, columns):
        notes = (e.stats[c.key].note for e in entries if c.key in e.stats and e.stats[c.key].mean is None)
        reasons = sorted({n for n in notes if n})
        if reasons:
            lines.append(f"{c.header} n/a: {' | '.join(reasons)}")
    return lines


def _where(e: Entry) -> str:
    return f"{e.defense} ({e.attack}, {e.arch})"


def stats_notes(entries: list[Entry], columns: list[Column]) -> list[str]:
    """Under the table: how to read the differences and marks, defenses without a baseline of
    their configuration, seed sets and metric versions that differ, stale rows, one-seed intervals."""
    measured = [e for e in entries if e.reported is None]
    if not measured or not [c for c in present(measured, columns) if c.axis]:
        return []
    lines = _reading(measured) + _merged(measured)
    if any(e.baseline and e.baseline != e.defense and len(paired_seeds(e)) == 1 for e in measured):
        lines.append(ONE_SEED)
    return lines


def _reading(measured: list[Entry]) -> list[str]:
    """How to read the differences and the marks; the groups and defenses without a baseline."""
    lines = []
    bases = sorted({e.baseline for e in measured if e.baseline})
    if bases:
        lines.append(
            f"Δ: difference from the baseline ({', '.join(bases)}) of the same group, with its 95% CI "
            "(paired bootstrap over seeds and attacked classes, docs/statistics.md); * = the interval "
            "excludes 0. n = seeds x reconstructions."
        )
    missing = sorted(
        {
            " / ".join(str(getattr(e, k)) for k in ("scenario", "arch", "attack"))
            for e in measured
            if not e.baseline and not e.baseline_note
        }
    )
    if missing:
        lines.append(f"No baseline in: {'; '.join(missing)} (choose one with --baseline).")
    lines += [
        f"{_where(e)}: {e.baseline_note}" + ("" if e.baseline else "; no difference shown.")
        for e in measured
        if e.baseline_note
    ]
    if any(e.pareto and e.separable is False for e in measured):
        lines.append(
            f"{STAR} = Pareto-optimal by the means; {HOLLOW} = Pareto-optimal by the means but another "
            "defense is at least as good on both axes within the intervals (not separable)."
        )
    return lines


def _merged(measured: list[Entry]) -> list[str]:
    """Entries whose rows differ in what they were paired on or computed with: seed sets, metric
    versions, thread counts, stale rows."""
    lines = []
    for e in measured:
        mm = e.seed_mismatch
        if mm:
            lines.append(
                f"{_where(e)}: seeds {seeds_text(mm.seeds)} vs baseline seeds "
                f"{seeds_text(mm.baseline_seeds)}: paired on the common seeds "
                f"{seeds_text(mm.paired) or '(none)'}."
            )
    lines += [
        f"{_where(e)}: rows of several versions of a metric merged ("
        + "; ".join(f"{m} {', '.join(map(str, v))}" for m, v in e.mixed_versions.items())
        + "): rerun to compute them with one."
        for e in measured
        if e.mixed_versions
    ]
    lines += [
        f"{_where(e)}: rows computed with {' and '.join(map(str, e.threads))} CPU threads merged (float "
        "reductions differ with the thread count: the last digits may too); rerun with one --threads "
        "to compute them alike."
        for e in measured
        if len(e.threads) > 1
    ]
    lines += [
        f"{_where(e)}: {e.stale} stale row(s) left out (computed against artifacts rebuilt since); "
        "rerun with the same --metric to refresh them."
        for e in measured
        if e.stale
    ]
    return lines


def issue29_notes(entries: list[Entry]) -> list[str]:
    """Under the table: how to read the top-decile and attack-baseline columns, and every
    validity flag (``reinv_bench.results.validity``)."""
    measured = [e for e in entries if e.reported is None]
    lines = []
    if any(e.top for e in measured):
        lines.append(
            "Top-10%: the mean over the 10 % most-leaked identities (at least one) with its 95% CI "
            "(bootstrap over seeds and identities; reinv_bench.results.exposure)."
        )
    bases = sorted({e.attack_baseline for e in measured if e.attack_baseline})
    if bases:
        lines.append(
            f"Δ vs {'/'.join(bases)}: each attacker minus {'/'.join(bases)} on the same targets, seeds and "
            "attacked classes, with its 95% CI (paired bootstrap); * = the interval excludes 0."
        )
        lines += sorted(
            {f"{_where(e)}: {e.attack_baseline_note}." for e in measured if e.attack_baseline_note}
        )
    return lines + validity_notes(measured)


def protocol_lines(entries: list[Entry]) -> list[str]:
    """One line per (protocol, scenario) of the entries: where its protocol card is."""
    seen = dict.fromkeys((e.protocol or "-", e.scenario) for e in entries if e.scenario)
    return [f"Protocol {p}: see `reinv-bench protocol {s}`" for p, s in seen]


def notes(entries: list[Entry], columns: list[Column]) -> list[str]:
    """Every note under a table, in order."""
    return [
        *gaps(entries, columns),
        *stats_notes(entries, columns),
        *issue29_notes(entries),
        *remarks([r for e in entries for r in e.rows.values()]),
        *reported_notes(entries),
        *protocol_lines(entries),
    ]
