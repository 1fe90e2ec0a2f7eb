"""Bundles, merge and the zoo (issue 31, items 1-3): results packed in one workdir, verified,
merged into another as one leaderboard, reproductions counted and conflicts kept apart; targets
installed from a bundle and attacked without retraining; every bad input refused in one line
with nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.runner import Runner
from reinv_bench.results.store import SCHEMA_VERSION, Store

CPU = torch.device("cpu")
METRICS = ["natural_acc", "attack_acc"]
RUN = ["-a", "meanimg", "--arch", "tiny", "--eval-arch", "tiny", "--budget", "smoke", "--no-baseline"]
RUN += [x for m in METRICS for x in ("--metric", m)]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU reductions depend on the thread count: pinned as the local workers pin it
    yield
    torch.set_num_threads(before)


def _fill(registry, workdir: Path, defenses: list[str], executor: str = "inline"):
    plan = expand(
        Request(
            ["meanimg"],
            defenses,
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            baseline=False,
            metrics=METRICS,
        ),
        registry,
    )
    store = Store(workdir / "results.db")
    summary = Runner(registry, workdir, CPU, executor=executor).run(plan, store)
    assert not summary.failed
    return summary


def _cli(registry, *args, ok=True):
    from conftest import cli_invoke

    return cli_invoke(*args, registry=registry, ok=ok)


def _refused(result, *words: str) -> str:
    """A one-line refusal (exit 1, no traceback) that says ``words``."""
    assert result.exit_code == 1, result.output + repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _write(path: Path, members: dict[str, bytes], fix_manifest: bool = True, extra=()) -> Path:
    """A bundle of ``members`` (the manifest's file entries recomputed when ``fix_manifest``, as a
    careful forger would); ``extra``: further TarInfo members (links, odd names)."""
    if fix_manifest:
        manifest = json.loads(members["manifest.json"])
        for name, data in members.items():
            if name != "manifest.json":
                manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        members = {**members, "manifest.json": json.dumps(manifest).encode()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    path.write_bytes(buf.getvalue())
    return path


def _leaderboard(registry, workdir: Path) -> list:
    return json.loads(_cli(registry, "leaderboard", "--format", "json", "--workdir", workdir).output)


# ---- the done-when of items 1 and 2 ------------------------------------------------------------


def test_two_halves_packed_and_merged_give_the_whole_grids_leaderboard(registry, tmp_path, one_thread):
    """Inline fills one half of the grid, local workers the other (one cell overlaps); both packed,
    verified and merged into a third workdir: its leaderboard is the one of the whole grid run in one
    workdir, the overlapping cell counted as reproduced, and the environments kept per row."""
    grid = ["none", "re", "re[scale=0.1-0.8]"]
    _fill(registry, tmp_path / "a", grid[:2])
    _fill(registry, tmp_path / "b", grid[1:], executor="local[workers=1,threads=1]")
    _fill(registry, tmp_path / "whole", grid)
    for half in "ab":
        out = _cli(registry, "pack", "-o", tmp_path / f"{half}.tar.gz", "--workdir", tmp_path / half).output
        assert "2 row(s), 0 checkpoint(s)" in out and "manifest sha256" in out
        assert "OK, 2 row(s) of schema 4" in _cli(registry, "verify", tmp_path / f"{half}.tar.gz").output
    merged = _cli(
        registry, "merge", tmp_path / "a.tar.gz", tmp_path / "b.tar.gz", "--workdir", tmp_path / "m"
    )
    assert "merged 4 row(s) from 2 source(s): 3 added, 1 reproduced, 0 conflict(s)" in merged.output
    whole = _leaderboard(registry, tmp_path / "whole")
    assert len(whole) == 3 and _leaderboard(registry, tmp_path / "m") == whole
    rows = {r.defense: r for r in Store(tmp_path / "m" / "results.db").rows()}
    assert rows["none"].environment["executor"] == "inline"
    assert rows["re[scale=0.1-0.8]"].environment["executor"] == "local[workers=1,threads=1]"
    assert rows["none"].environment["packages"]["torch"] == torch.__version__
    (reproduced,) = json.loads((tmp_path / "m" / "merges" / "reproduced.json").read_text()).values()
    assert reproduced[0]["environment"]["executor"] == "local[workers=1,threads=1]"
    # a workdir merges as a bundle does; merging again only counts reproductions
    again = _cli(registry, "merge", tmp_path / "b", "--workdir", tmp_path / "m").output
    assert "0 added, 2 reproduced, 0 conflict(s)" in again


def test_a_bundle_holds_outcomes_cards_environment_and_samples(registry, tmp_path):
    _fill(registry, tmp_path / "a", ["none"])
    bundle = tmp_path / "a.tar.gz"
    out = _cli(registry, "pack", "-o", bundle, "--with-samples", "3", "--workdir", tmp_path / "a").output
    assert "3 sample image(s)" in out
    files = _members(bundle)
    assert list(files)[:2] == ["bundle.json", "manifest.json"]  # a reader refuses a newer format first
    (row,) = json.loads(files["rows.json"])
    assert row["outcomes"]["per_reconstruction"]["attack_acc"] and row["environment"]["executor"] == "inline"
    assert files["protocols/mnist.txt"].decode().startswith("Protocol card: mnist")
    assert sorted(n for n in files if n.startswith("samples/")) == [
        f"samples/{row['cell_id']}/{i:03d}-class{c}.png" for i, c in enumerate(row["outcomes"]["class"][:3])
    ]
    manifest = json.loads(files["manifest.json"])
    assert (
        manifest["artifacts"][row["artifacts"]["target"]]["sha256"]
        == row["artifacts"]["sha256"][row["artifacts"]["target"]]
    )
    meta = json.loads(files["bundle.json"])
    assert meta["schema_version"] == SCHEMA_VERSION and meta["environment"]["python"]
    again = tmp_path / "again.tar.gz"  # the same rows pack to the same bytes (no time in the archive)
    _cli(registry, "pack", "-o", again, "--with-samples", "3", "--workdir", tmp_path / "a")
    assert _members(again).keys() == files.keys()


def test_a_number_changed_by_hand_is_refused_and_other_numbers_are_a_conflict(registry, tmp_path):
    _fill(registry, tmp_path / "a", ["none"])
    bundle = tmp_path / "a.tar.gz"
    _cli(registry, "pack", "-o", bundle, "--workdir", tmp_path / "a")
    files = _members(bundle)
    rows = json.loads(files["rows.json"])
    rows[0]["metrics"]["attack_acc"] = 0.987654
    edited = _write(tmp_path / "edited.tar.gz", {**files, "rows.json": json.dumps(rows).encode()}, False)
    _refused(_cli(registry, "verify", edited, ok=False), "rows.json does not match its manifest entry")
    _refused(_cli(registry, "merge", edited, "--workdir", tmp_path / "m", ok=False), "changed after packing")
    assert not (tmp_path / "m").exists()  # nothing written
    # the same cell with other numbers (a consistent bundle, e.g. another machine's): a conflict
    other = _write(tmp_path / "other.tar.gz", {**files, "rows.json": json.dumps(rows).encode()})
    result = _cli(registry, "merge", other, "--workdir", tmp_path / "a")
    here = Store(tmp_path / "a" / "results.db").rows()[0]
    assert "0 added, 0 reproduced, 1 conflict(s)" in result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("CONFLICT"))
    assert f"attack_acc: here {here.metrics['attack_acc']!r}, there 0.987654" in line
    assert "here: cpu (" in line and "executor inline" in line.split("there:")[1]
    assert here.metrics["attack_acc"] != 0.987654  # never written over
    (kept,) = (tmp_path / "a" / "merges" / "conflicts").glob("*.json")
    assert json.loads(kept.read_text())["row"]["metrics"]["attack_acc"] == 0.987654


def test_rows_of_an_older_schema_migrate_and_a_newer_one_is_refused(registry, tmp_path):
    _fill(registry, tmp_path / "a", ["none"])
    bundle = tmp_path / "a.tar.gz"
    _cli(registry, "pack", "-o", bundle, "--workdir", tmp_path / "a")
    files = _members(bundle)
    meta, rows = json.loads(files["bundle.json"]), json.loads(files["rows.json"])
    old = _write(
        tmp_path / "v3.tar.gz",
        {
            **files,
            "bundle.json": json.dumps({**meta, "schema_version": 3}).encode(),
            "rows.json": json.dumps(
                [{k: v for k, v in r.items() if k != "environment"} for r in rows]
            ).encode(),
        },
    )
    assert "1 added" in _cli(registry, "merge", old, "--workdir", tmp_path / "m").output
    (row,) = Store(tmp_path / "m" / "results.db").rows()
    assert row.environment is None and row.metrics == rows[0]["metrics"]
    newer = _write(
        tmp_path / "v9.tar.gz", {**files, "bundle.json": json.dumps({**meta, "schema_version": 9}).encode()}
    )
    for cmd in (("verify", newer), ("merge", newer, "--workdir", tmp_path / "n")):
        _refused(
            _cli(registry, *cmd, ok=False), "schema version 9, newer than this reinv-bench's 4", "upgrade"
        )
    assert not (tmp_path / "n").exists()
    db = tmp_path / "a" / "results.db"  # another workdir of a newer schema: refused, and not touched
    with Store(db).db as con:
        con.execute("UPDATE meta SET value='9' WHERE key='schema_version'")
    _refused(
        _cli(registry, "merge", tmp_path / "a", "--workdir", tmp_path / "n", ok=False), "schema version 9"
    )
    assert not (tmp_path / "n").exists()


def test_truncated_and_malicious_archives_are_refused_in_one_line(registry, tmp_path):
    _fill(registry, tmp_path / "a", ["none"])
    bundle = tmp_path / "a.tar.gz"
    _cli(registry, "pack", "-o", bundle, "--workdir", tmp_path / "a")
    data = bundle.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    _refused(_cli(registry, "verify", tmp_path / "cut.tar.gz", ok=False), "truncated")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a bundle")
    _refused(
        _cli(registry, "merge", tmp_path / "junk.tar.gz", "--workdir", tmp_path / "m", ok=False), "truncated"
    )
    files = _members(bundle)
    for name in ("../escape.json", "/etc/evil.json", "rows.json/../../x.json"):
        evil = _write(tmp_path / "evil.tar.gz", {**files, name: b"{}"}, False)
        _refused(_cli(registry, "verify", evil, ok=False), "unexpected member")
    link = tarfile.TarInfo("protocols/link.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _refused(
        _cli(registry, "verify", _write(tmp_path / "l.tar.gz", files, extra=[link]), ok=False), "unexpected"
    )
    rows = json.loads(files["rows.json"])
    rows[0]["cell_id"] = "../../etc/passwd"  # a stored value that would become a path
    bad = _write(tmp_path / "bad.tar.gz", {**files, "rows.json": json.dumps(rows).encode()})
    _refused(_cli(registry, "merge", bad, "--workdir", tmp_path / "m", ok=False), "not a hexadecimal digest")
    assert not (tmp_path / "m").exists()


# ---- the zoo (item 3) ---------------------------------------------------------------------------


def test_zoo_targets_are_attacked_without_training_and_give_the_same_rows(registry, tmp_path, one_thread):
    origin, fresh = tmp_path / "origin", tmp_path / "fresh"
    _fill(registry, origin, ["none", "re"])
    bundle = tmp_path / "zoo.tar.gz"
    assert (
        "3 checkpoint(s)" in _cli(registry, "pack", "-o", bundle, "--with-models", "--workdir", origin).output
    )
    added = _cli(registry, "zoo", "add", bundle, "--workdir", fresh).output
    assert "3 checkpoint(s) installed" in added and "target tiny / re / smoke / seed 0" in added
    listed = _cli(registry, "zoo", "list", "--workdir", fresh).output
    assert listed.count("from zoo.tar.gz") == 3
    dry = _cli(registry, "run", *RUN, "-d", "none", "-d", "re", "--dry-run", "--workdir", fresh).output
    (line,) = [ln for ln in dry.splitlines() if ln.startswith("target")]
    assert line.split()[1:5] == ["0", "2", "(2", "from"], line  # to run 0, reused 2 (2 from zoo)
    run = _cli(registry, "run", *RUN, "-d", "none", "-d", "re", "--executor", "inline", "--workdir", fresh)
    assert "(3 from zoo: trained elsewhere, not here)" in run.output
    assert "from zoo: target tiny / re / seed 0" in run.output
    ran = [ln for ln in run.output.splitlines() if " done " in ln]
    assert ran and not any("target" in ln or "eval model" in ln for ln in ran), ran  # nothing trained
    numbers = {r.cell_id: (r.metrics, r.outcomes.to_json()) for r in Store(fresh / "results.db").rows()}
    assert numbers == {
        r.cell_id: (r.metrics, r.outcomes.to_json()) for r in Store(origin / "results.db").rows()
    }
    assert "0 checkpoint(s) installed" in _cli(registry, "zoo", "add", bundle, "--workdir", fresh).output


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Evil.marker}",))


def test_a_checkpoint_whose_pickle_asks_for_code_or_a_tampered_one_is_refused(registry, tmp_path):
    _fill(registry, tmp_path / "a", ["none"])
    bundle = tmp_path / "zoo.tar.gz"
    _cli(registry, "pack", "-o", bundle, "--with-models", "--workdir", tmp_path / "a")
    files = _members(bundle)
    target = json.loads(files["rows.json"])[0]["artifacts"]["target"]
    pt, rec_name = f"artifacts/{target[:2]}/{target}.pt", f"artifacts/{target[:2]}/{target}.json"
    fresh = tmp_path / "fresh"
    # a flipped byte, the manifest left as it was: a hash mismatch
    flipped = bytearray(files[pt])
    flipped[len(flipped) // 2] ^= 1
    tampered = _write(tmp_path / "t.tar.gz", {**files, pt: bytes(flipped)}, False)
    _refused(_cli(registry, "zoo", "add", tampered, "--workdir", fresh, ok=False), f"{pt} does not match")
    # a pickle that asks for code, with its record and the manifest rewritten to match it
    _Evil.marker = tmp_path / "pwned"
    buf = io.BytesIO()
    state = torch.load(io.BytesIO(files[pt]), weights_only=True)
    torch.save({**state, "extra": _Evil()}, buf)
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    manifest = json.loads(files["manifest.json"])
    manifest["artifacts"][target]["sha256"] = sha
    rows = json.loads(files["rows.json"])
    rows[0]["artifacts"]["sha256"][target] = sha
    record = {**json.loads(files[rec_name]), "sha256": sha}
    evil = _write(
        tmp_path / "evil.tar.gz",
        {
            **files,
            "manifest.json": json.dumps(manifest).encode(),
            "rows.json": json.dumps(rows).encode(),
            pt: buf.getvalue(),
            rec_name: json.dumps(record).encode(),
        },
    )
    for cmd in (("verify", evil), ("zoo", "add", evil, "--workdir", fresh)):
        _refused(
            _cli(registry, *cmd, ok=False), "its pickle asks for code (posix.system), which is never run"
        )
    assert not _Evil.marker.exists()
    assert not list(fresh.glob("artifacts/*/*.pt")) and not list(
        fresh.glob("artifacts/.zoo*")
    )  # nothing written
    # a bundle without models; a key here with other bytes
    _cli(registry, "pack", "-o", tmp_path / "plain.tar.gz", "--workdir", tmp_path / "a")
    _refused(
        _cli(registry, "zoo", "add", tmp_path / "plain.tar.gz", "--workdir", fresh, ok=False), "--with-models"
    )
    from reinv_bench.engine.artifacts import Artifacts

    # a record's meta is another lab's text: only the known fields of their types are kept
    record = {**json.loads(files[rec_name]), "meta": {"kind": "target", "stats": {"attack_acc": "0"}, "x": 1}}
    forged = _write(tmp_path / "meta.tar.gz", {**files, rec_name: json.dumps(record).encode()})
    _cli(registry, "zoo", "add", forged, "--workdir", tmp_path / "d")
    assert set(Artifacts(tmp_path / "d").record(target)["meta"]) == {"kind", "zoo"}

    Artifacts(tmp_path / "c").save(target, {"state_dict": {}})  # the same key, other bytes (trained here)
    _refused(_cli(registry, "zoo", "add", bundle, "--workdir", tmp_path / "c", ok=False), "with other bytes")
    assert len(list((tmp_path / "c").glob("artifacts/*/*.pt"))) == 1
