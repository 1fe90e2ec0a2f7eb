"""Evaluation-validity checks (issue 29 item 4), in the spirit of AutoAttack's ``autoattack/checks.py``
(Croce and Hein, ICML 2020) and the checklist of Carlini et al., "On Evaluating Adversarial Robustness"
(arXiv 1902.06705): flags that say when a cell's attack accuracy cannot be trusted as the leakage of
its target.

Two halves:

- ``target_checks``: computed once per *target* (cached as an artifact of its own, keyed by the
  target's key: no step key or cell id changes) and stored with every cell of it under
  ``row.notes["validity"]``:

  * **randomised forward** (AutoAttack ``check_randomized``): two forward passes on one batch of
    public images; the target is randomised when a prediction flips or the L2-normalised logits
    differ by more than ``RANDOM_TOL`` (AutoAttack's alpha, 1e-4). A MID/VIB target that samples
    its bottleneck noise at inference is. Flag: "randomised target: use EOT/adaptive".
  * **gradients** (AutoAttack ``check_zero_gradients``, and Carlini et al.'s "gradient masking"):
    the L2 norm of the gradient of the identity loss CE(T(x), y) with respect to the input, per
    sample, at ``SAMPLES`` public images (``x``: what every attack's prior is fit to: the harness
    has no attack-independent way of sampling an attack's own prior, so the public images stand
    in for "prior samples"), each labelled with an attacked class in turn. Stored: the mean and
    median norm and how many are exactly zero.
  * **probabilities instead of logits** (AutoAttack ``check_range_output``): the outputs lie in
    [0, 1] and sum to 1.

- ``attach``: at leaderboard time, from the stored rows of the entries (``aggregate``), each entry
  gets ``Entry.validity`` (numbers) and ``Entry.flags`` (sentences):

  * "randomised target: use EOT/adaptive", "target outputs probabilities, not logits",
    "K of N samples have zero identity-loss gradient";
  * **vanishing gradients**: the mean gradient norm against the undefended twin's (the ``none``
    entry of the same comparison setting: same architecture, recipe, data, seeds); flagged below
    ``VANISHING_RATIO`` = 0.1 (an order of magnitude smaller: the gradient-suppression pattern of
    obfuscated gradients, Athalye, Carlini and Wagner, ICML 2018). No twin stored: no ratio, and
    the validity record says why;
  * **gradient masking suspected**: a black-box or label-only attacker (rlbmi, brepmi, any attack
    of that threat model) or a transfer attacker (``transfer+...``) beats a white-box attacker on
    the same targets (same defense and target config, paired by seed and attacked class with
    ``stats.paired``) by a separable margin: its attack accuracy is higher and the paired 95%
    interval of the difference excludes 0 (AutoAttack ``check_square_sr``: black-box Square beating
    the white-box attacks), and by more than the same two attackers' gap on the undefended twin
    (a difference in differences, ``stats.contrast``, whose interval excludes 0). A gap no larger
    than the twin's says the white-box attack is the weaker attacker, not that the defense masks
    its gradients: "white-box attack weaker" (also on the undefended target itself, where there
    is nothing to mask). No twin with both attackers: the flag says that a weaker white-box attack
    is not ruled out;
  * **not converged** (opt-in: ``run --convergence K``, see ``reinv_bench.engine.plan``): the same attack
    at twice its iterations on a subsample of K attacked classes; flagged when the doubled budget's
    attack accuracy rises above the standard one's by a paired difference whose 95% interval
    excludes 0 (paired on the subsample's classes and the common seeds), with the doubled budget's
    number beside it. An entry with a convergence row and no flag has ``validity["convergence"]``
    with ``"converged": True``.

Rows stored before the checks existed have no ``notes["validity"]``: their entries say so
(``validity["checks"] = "not run"``), never a made-up pass. The cross-entry flags (twin, masking,
convergence) are computed among the rows the leaderboard was given: a filter (``-a gmi``) that
leaves out the twin or the black-box attacker leaves out the flag too.

For item 8 (the RobustBench-like layout): ``Entry.validity`` holds ``checks`` ("run", "run on
seeds [...]" or "not run ..."), ``randomised``, ``grad_norm``, ``grad_ratio`` (or
``grad_ratio_note``), ``zero_grad``, ``beaten_by`` and ``convergence`` (absent: no convergence
row); ``Entry.flags`` the sentences.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from reinv_bench.registry.spec import normalise
from reinv_bench.results import stats
from reinv_bench.results.compare import signed
from reinv_bench.results.entries import axis
from reinv_bench.results.setting import comparison_key, target_setting

VALIDITY = "validity"  # the key of the checks in row.notes
BROKEN = "broken"  # the canary note's first word when an attack fails the unit test (engine.canaries)
CHECKS_VERSION = 1
SAMPLES = 64  # public images the target checks use
RANDOM_TOL = 1e-4  # AutoAttack check_randomized alpha: max L2 distance of normalised logits
VANISHING_RATIO = 0.1  # gradient norm below this fraction of the undefended twin's: flagged
PROB_TOL = 1e-5  # AutoAttack check_range_output alpha
CONVERGENCE = "convergence"  # config key of a convergence row: {"of", "param", "from", "to", "classes"}
BLACK_BOX = ("black-box", "label-only")
TRANSFER = "transfer+"


# --------------------------------------------------------------------------------------------
# At evaluation: the target's checks


def target_checks(
    model: torch.nn.Module,
    public_x: Any,
    classes: list[int],
    device: torch.device,
    seed: int,
    samples: int = SAMPLES,
) -> dict[str, Any]:
    """The target's randomised-forward, gradient and output-range checks on ``samples`` public
    images (module docstring); a JSON-able dict. ``public_x``: the public images (a tensor or
    ``ImageFiles``), ``classes``: the attacked classes (the identity-loss labels, in turn)."""
    n = min(samples, len(public_x))
    if n == 0 or not classes:
        return {"version": CHECKS_VERSION, "error": "no public images or no attacked classes"}
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(public_x), generator=gen)[:n].sort().values
    x = public_x[idx].to(device).float()
    y = torch.tensor([classes[i % len(classes)] for i in range(n)], device=device)
    model.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        a, b = model(x).float(), model(x).float()
    na = a / (a.norm(dim=1, keepdim=True) + 1e-10)
    nb = b / (b.norm(dim=1, keepdim=True) + 1e-10)
    max_diff = float((na - nb).norm(dim=1).max())
    flips = int((a.argmax(1) != b.argmax(1)).sum())
    probabilities = bool(
        a.max() < 1 + PROB_TOL and a.min() > -PROB_TOL and ((a.sum(1) - 1).abs() < PROB_TOL).all()
    )
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(xg).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    norms = grad.flatten(1).norm(dim=1)
    zero = int((grad.flatten(1).abs().sum(1) == 0).sum())
    return {
        "version": CHECKS_VERSION,
        "samples": n,
        "at": "public images, each labelled with an attacked class in turn",
        "randomised": flips > 0 or max_diff > RANDOM_TOL,
        "max_diff": max_diff,
        "flips": flips,
        "probabilities": probabilities,
        "grad_norm": float(norms.mean()),
        "grad_norm_median": float(norms.median()),
        "zero_grad": zero,
    }


# --------------------------------------------------------------------------------------------
# At leaderboard time: the flags of each entry


def checks_of(row: Any) -> dict[str, Any] | None:
    """The target checks stored with a row (None: rows stored before they existed)."""
    notes = (row.notes if hasattr(row, "notes") else row.get("notes")) or {}
    got = notes.get(VALIDITY)
    return got if isinstance(got, dict) else None


def _pct(v: float) -> str:
    return f"{v * 100:.1f}"


def target_key(e: Any) -> tuple:
    """Entries of the same targets (``setting.target_setting``): attacks compared on them."""
    return target_setting(e)


def _privacy(entries: list, columns: list) -> Any:
    return axis(entries, "privacy", columns)


def _worse(c: Any, a: float, b: float) -> bool:
    """``a`` leaks more than ``b`` on column ``c`` (its direction better for the defense)."""
    return a < b if c.better == "higher" else a > b


def _target_flags(e: Any) -> None:
    checks = {s: checks_of(r) for s, r in e.rows.items()}
    have = {s: c for s, c in checks.items() if c is not None and "error" not in c}
    errors = sorted({c["error"] for c in checks.values() if c is not None and "error" in c})
    if errors:
        e.validity["checks_error"] = "; ".join(errors)
        e.flags.append(f"validity checks failed: {'; '.join(errors)}")
    if not have:
        e.validity.setdefault("checks", "not run (rows stored before the validity checks; rerun the cells)")
        return
    e.validity["checks"] = "run" if len(have) == len(checks) else f"run on seeds {sorted(have)}"
    rand = [s for s, c in have.items() if c["randomised"]]
    e.validity["randomised"] = bool(rand)
    e.validity["max_diff"] = max(c["max_diff"] for c in have.values())
    if rand:
        flips = sum(have[s]["flips"] for s in rand)
        e.flags.append(
            f"randomised target: use EOT/adaptive (two forward passes differ by up to "
            f"{e.validity['max_diff']:.2g}, {flips} prediction(s) flipped)"
        )
    if any(c["probabilities"] for c in have.values()):
        e.validity["probabilities"] = True
        e.flags.append("target outputs probabilities, not logits: gradients of CE on them are weak")
    e.validity["grad_norm"] = sum(c["grad_norm"] for c in have.values()) / len(have)
    zero = sum(c["zero_grad"] for c in have.values())
    e.validity["zero_grad"] = zero
    if zero:
        total = sum(c["samples"] for c in have.values())
        e.flags.append(f"{zero} of {total} samples have zero identity-loss gradient")


def _vanishing(entries: list) -> None:
    """The gradient norm against the undefended twin's (the ``none`` entry of the same comparison)."""

    twins = {comparison_key(e): e for e in entries if e.defense == "none" and e.reported is None}
    for e in entries:
        if e.reported is not None or "grad_norm" not in e.validity or e.defense == "none":
            continue
        twin = twins.get(comparison_key(e))
        base = None if twin is None else twin.validity.get("grad_norm")
        if not base:
            e.validity["grad_ratio_note"] = "no undefended twin (defense none) with validity checks stored"
            continue
        ratio = e.validity["grad_norm"] / base
        e.validity["grad_ratio"] = ratio
        if ratio < VANISHING_RATIO:
            e.flags.append(
                f"vanishing gradients: identity-loss gradient norm {ratio:.3g}x the undefended twin's "
                f"(< {VANISHING_RATIO}): use BPDA/adaptive or transfer attacks"
            )


def black_box(e: Any) -> bool:
    """A black-box, label-only or transfer attacker (what white-box must beat)."""
    return e.threat_model in BLACK_BOX or str(e.attack).startswith(TRANSFER)


def _masking(entries: list, columns: list) -> None:
    """White-box entries beaten by a black-box or transfer attacker on the same targets, told apart
    from a white-box attack that is merely the weaker one: the same two attackers on the
    undefended twin (defense ``none``, same comparison) give the gap no defense explains."""
    p = _privacy(entries, columns)
    if p is None:
        return
    twins = {comparison_key(e): e for e in entries if e.defense == "none" and e.reported is None}
    by_target: dict[tuple, list] = defaultdict(list)
    for e in entries:
        if e.reported is None and e.mean(p.key) is not None:
            by_target[target_key(e)].append(e)
    for group in by_target.values():
        for w in group:
            if w.threat_model != "white-box" or black_box(w):
                continue
            for b in group:
                if not black_box(b) or not _worse(p, b.mean(p.key), w.mean(p.key)):
                    continue
                iv = stats.paired(b.rows, w.rows, p.key)
                if iv.estimate is None or not iv.excludes_zero or not _worse(p, iv.estimate, 0.0):
                    continue
                _beaten(p, w, b, iv, twins.get(comparison_key(w)), twins.get(comparison_key(b)))


def _beaten(p: Any, w: Any, b: Any, iv: Any, w0: Any, b0: Any) -> None:
    """The record and the flag of white-box ``w`` beaten by ``b`` (``iv``: b - w, separable)."""
    record = {"attack": b.attack, "estimate": iv.estimate, "lo": iv.lo, "hi": iv.hi}
    w.validity.setdefault("beaten_by", []).append(record)
    gap = f"{_signed(p, iv.estimate)} (95% CI {_signed(p, iv.lo)} to {_signed(p, iv.hi)})"
    beats = f"{b.attack} ({b.threat_model}) beats {w.attack} by {gap} on the same targets"
    if w.defense == "none":  # nothing to mask: the white-box attack is the weaker attacker here
        record["undefended"] = True
        w.flags.append(f"white-box attack weaker: {beats}, with no defense to mask gradients")
        return
    did = (
        None if w0 is None or b0 is None else stats.contrast([b.rows, w.rows, b0.rows, w0.rows], _DID, p.key)
    )
    if did is None or did.estimate is None:
        w.flags.append(
            f"gradient masking suspected: {beats} (no undefended twin with both attackers, so a "
            "weaker white-box attack is not ruled out)"
        )
        return
    record["beyond_undefended"] = {"estimate": did.estimate, "lo": did.lo, "hi": did.hi}
    more = f"{_signed(p, did.estimate)} (95% CI {_signed(p, did.lo)} to {_signed(p, did.hi)})"
    if did.excludes_zero and _worse(p, did.estimate, 0.0):
        w.flags.append(f"gradient masking suspected: {beats}, {more} beyond the undefended twin's gap")
    else:
        w.flags.append(
            f"white-box attack weaker: {beats}, as on the undefended twin (the gap differs by {more}): "
            "not a sign of masking"
        )


_DID = [1.0, -1.0, -1.0, 1.0]  # (b - w) - (b0 - w0): the gap on the defended target beyond the twin's


def _signed(c: Any, v: float) -> str:
    return signed(c, v) + (" points" if c.percent else "")


def convergence_of(r: Any) -> dict[str, Any] | None:
    """The convergence description of a row run by ``run --convergence`` (None: an ordinary row)."""
    cfg = (r.config if hasattr(r, "config") else r.get("config")) or {}
    got = cfg.get(CONVERGENCE)
    return got if isinstance(got, dict) else None


def _convergence(entries: list, checks: list, columns: list) -> None:
    """Each standard entry against its doubled-budget entry (``checks``: entries of convergence rows)."""

    p = _privacy(entries, columns)
    if p is None:
        return
    index = {(target_key(e), normalise(e.attack)): e for e in entries if e.reported is None}
    for c in checks:
        conv = c.config[CONVERGENCE]
        e = index.get((target_key(c), normalise(conv["of"])))
        if e is None or c.mean(p.key) is None or e.mean(p.key) is None:
            continue
        iv = stats.paired(c.rows, e.rows, p.key)
        rec = {
            "attack": c.attack,
            "param": conv["param"],
            "from": conv["from"],
            "to": conv["to"],
            "classes": conv["classes"],
            "at_double": c.mean(p.key),
            "estimate": iv.estimate,
            "lo": iv.lo,
            "hi": iv.hi,
        }
        rec["converged"] = not (iv.estimate is not None and iv.excludes_zero and _worse(p, iv.estimate, 0.0))
        e.validity[CONVERGENCE] = rec
        if not rec["converged"]:
            e.flags.append(
                f"not converged: {conv['param']} {conv['from']} -> {conv['to']} on {conv['classes']} classes "
                f"raises {p.header.lower()} by {_signed(p, iv.estimate)} (95% CI {_signed(p, iv.lo)} to "
                f"{_signed(p, iv.hi)}); at twice the iterations: "
                + (_pct(c.mean(p.key)) if p.percent else f"{c.mean(p.key):.3g}")
            )


def attach(entries: list, columns: list, checks: list | None = None) -> None:
    """Every entry's ``validity`` and ``flags`` (module docstring); ``checks``: the entries of
    convergence rows, paired with the standard entries they double."""
    for e in entries:
        e.validity, e.flags = {}, []
        if e.reported is None:
            _target_flags(e)
    _vanishing(entries)
    _masking(entries, columns)
    _convergence(entries, checks or [], columns)


def notes(entries: list) -> list[str]:
    """One line per flagged entry, under the table."""
    out = []
    for e in entries:
        for f in getattr(e, "flags", None) or ():
            out.append(f"Validity {e.defense} ({e.attack}, {e.arch}, {e.scenario}): {f}.")
    return out
