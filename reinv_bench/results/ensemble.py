"""The worst-case ensemble (``--attack auto``, issue 29 item 3): its pooling step and its null.

An ``EnsembleAttack`` (the ``auto`` plugin holds the member lists) is planned as its members, each
a cell of its own, plus one cell whose ``pool`` step reads the members' stored reconstructions
(no member is rerun) and keeps, per identity, the best of every member's final candidates by an
**attacker-side score only**: the target's log-probability of the identity (white-box and
black-box: the softmax a black-box attacker observes; label-only: whether the target's top-1 is
the identity, ties by member order). The evaluation model and the judges never choose, so the
ensemble is an attacker one could run, not an oracle (MI-Eval-MLLM: a maximum over attacks judged
by the evaluation model inflates leakage).

The **null control** (a permuted identity): a fixed derangement ``pi`` of the attacked classes
(seeded by the cell's seed); for identity ``c`` the same pooling chooses, among the candidates the
members made *for c*, the best by the score of ``pi(c)``, and the evaluation model judges them
against ``pi(c)``. Nothing was optimised for ``pi(c)``, so what succeeds there is what a pool of
that size buys by chance; ``worst_case - null`` is the leakage the pool does not explain. The
null's values are stored as the evaluation model's metric keys with ``NULL`` appended
(``attack_acc_null``), one per kept candidate in the ensemble's order (same identities), so the
paired interval of the difference is the usual bootstrap over classes.

Deliberate differences: the score does not repeat a member's own input transformations (GMI's
inversion uses none; PPA's selection transforms are its own member's business), and
``keep`` defaults to the fewest candidates any member makes per identity, so the ensemble is
judged on as many reconstructions per identity as a single member.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import torch

NULL = "_null"  # suffix of a metric key judged against the permuted identity
SOURCES = "ensemble_sources"  # note: the member label of each kept candidate, as a JSON list
BROKEN_BY = "broken_by"  # note: the member that supplied most successful kept candidates, and counts
NOTES = (SOURCES, BROKEN_BY)  # remarks kept with a row's notes though no metric is null


def derangement(classes: list[int], seed: int) -> dict[int, int]:
    """A permutation of ``classes`` without a fixed point (a random cyclic order, seeded); one
    class alone maps to itself (no null then)."""
    order = [classes[i] for i in torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))]
    return {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}


def attacker_score(target: Any, threat: str, images, labels, device) -> Any:
    """The score the ensemble keeps candidates by (higher is better): the target's log-probability
    of ``labels`` (white-box, black-box), or its top-1 agreeing with them (label-only)."""
    with torch.no_grad():
        out = target(images.to(device))
        if threat == "label-only":
            pred = out if out.dim() == 1 else out.argmax(1)
            return (pred.cpu() == labels).float()
        logp = out.log_softmax(1) if threat == "white-box" else out.clamp_min(1e-30).log()
        return logp.gather(1, labels.to(logp.device).long()[:, None])[:, 0].float().cpu()


def pool(
    members: dict[str, Any],
    target: Any,
    threat: str,
    classes: list[int],
    keep: int,
    seed: int,
    device: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ensemble's artifact from its members' ``Reconstructions`` (label -> reconstructions, in
    member order): per identity the ``keep`` best by the attacker score (0: the fewest any member
    makes per identity it reconstructs; a member may skip identities), and the null's choice for
    the permuted identity. Two passes over the
    members' chunks: scores first, then only the kept images."""
    perm = derangement(classes, seed)
    cand, counts = _candidates(members, target, threat, perm, device)
    empty = [c for c in classes if not any(n[c] for n in counts.values())]
    if empty:
        raise ValueError(f"no member of the ensemble reconstructed classes {empty}")
    # a member may skip an identity (BREP-MI without a first hit): it adds nothing to that pool
    k = keep or min(n[c] for n in counts.values() for c in classes if n[c])
    by_class: dict[int, list[tuple]] = {c: [] for c in classes}
    for t in cand:
        if t[2] in by_class:
            by_class[t[2]].append(t)
    kept, nulls = [], []
    for c in classes:  # ties: member order, then position (a stable sort)
        kept += sorted(by_class[c], key=lambda t: -t[3])[:k]
        nulls += sorted(by_class[c], key=lambda t: -t[4])[:k]
    images = _images(members, {(t[0], t[1]) for t in kept + nulls})
    labels = list(members)

    def stack(ts: list[tuple]) -> Any:
        return torch.stack([images[(t[0], t[1])] for t in ts])

    info = {
        "members": labels,
        "keep": k,
        "sources": [labels[t[0]] for t in kept],
        "null_sources": [labels[t[0]] for t in nulls],
        "pool_size": {lb: sum(n.values()) for lb, n in counts.items()},
        "permutation": {str(c): perm[c] for c in classes},
    }
    obj = {
        "images": stack(kept),
        "labels": torch.tensor([t[2] for t in kept]),
        "info": info,
        # one identity has no other to permute it with: no null
        "null": {"images": stack(nulls), "labels": torch.tensor([perm[t[2]] for t in nulls])}
        if len(classes) > 1
        else None,
    }
    return obj, {"candidates": len(cand), "kept": len(kept)}


def _candidates(
    members: dict[str, Any], target: Any, threat: str, perm: dict[int, int], device: Any
) -> tuple[list[tuple[int, int, int, float, float]], dict[str, Counter]]:
    """The first pass: every reconstruction as (member, position, class, score, null score), and
    per member how many it made of each class."""
    cand: list[tuple[int, int, int, float, float]] = []  # (member, position, class, score, null score)
    counts: dict[str, Counter] = {}
    for m, (label, recs) in enumerate(members.items()):
        pos, counts[label] = 0, Counter()
        for chunk in recs.chunks():
            y = chunk.labels.long()
            own = attacker_score(target, threat, chunk.images, y, device)
            null = attacker_score(
                target, threat, chunk.images, torch.tensor([perm[int(c)] for c in y]), device
            )
            for i, c in enumerate(y.tolist()):
                cand.append((m, pos + i, c, float(own[i]), float(null[i])))
                counts[label][c] += 1
            pos += len(y)
    return cand, counts


def _images(members: dict[str, Any], want: set[tuple[int, int]]) -> dict[tuple[int, int], Any]:
    """The second pass: the images of the (member, position) pairs in ``want``, on the CPU."""
    images: dict[tuple[int, int], Any] = {}
    for m, recs in enumerate(members.values()):
        pos = 0
        for chunk in recs.chunks():
            for i in range(len(chunk.labels)):
                if (m, pos + i) in want:
                    images[(m, pos + i)] = chunk.images[i].float().cpu()
            pos += len(chunk.labels)
    return images


def broken_by(sources: list[str], success: list[float | None] | None) -> str:
    """Which member supplied the kept candidates that succeed (``success``: the privacy axis per
    kept candidate), most first: ``"gmi (6 of 9 successful kept candidates; kedmi 3)"``; without
    successes, which members supplied the kept ones."""
    if success is not None and len(success) == len(sources):
        won = Counter(s for s, ok in zip(sources, success) if ok)
        if won:
            (lead, n), *rest = won.most_common()
            others = "; ".join(f"{lb} {c}" for lb, c in rest)
            total = sum(won.values())
            return f"{lead} ({n} of {total} successful kept candidates{'; ' + others if others else ''})"
        head = "none (no kept candidate succeeded"
    else:
        head = "unknown (no per-candidate success"
    kept = "; ".join(f"{lb} {c}" for lb, c in Counter(sources).most_common())
    return f"{head}; kept: {kept})"


def leader(note: str | None) -> str | None:
    """The attacker a ``broken_by`` note names first (None: no note, or none succeeded)."""
    if not note:
        return None
    head = note.split(" (", 1)[0]
    return None if head in ("none", "unknown") else head


def sources_note(sources: list[str]) -> str:
    return json.dumps(sources)
