"""Issue 9, item 8: weights verification says what it checked. A full SHA-256 where one is known, the
published prefix reported as a prefix, the first added file's SHA-256 recorded for an entry without
a published hash (later loads must match it, and every use says "unverified"), and one-line
rejections that never quote torch's advice. Files are tiny state dicts saved here."""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch
from click.testing import CliRunner

from reinv_bench.cli import State, cli
from reinv_bench.contract import weights
from reinv_bench.contract.weights import UnverifiedWeightsWarning, WeightsFile, WeightsUnavailable
from reinv_bench.engine.artifacts import file_sha256

NOHASH = WeightsFile(
    "toy-nohash", "toy_backbone.pth", "", "a file without a published hash", torch_dir="checkpoints"
)


@pytest.fixture
def homes(tmp_path, monkeypatch):
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "rb"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    return tmp_path / "rb", tmp_path / "th"


def _state_file(path, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.save({"layer.weight": torch.randn(3, 2, generator=g), "layer.bias": torch.zeros(3)}, path)
    return path


def _bad_files(tmp_path):
    """name -> (file, what the one-line reason says)."""
    files = {}
    (tmp_path / "empty.pth").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.pth", "file is empty")
    (tmp_path / "junk.pth").write_bytes(b"\x00junk")
    files["junk"] = (tmp_path / "junk.pth", "not a torch checkpoint")
    torch.save({"args": argparse.Namespace(lr=0.1)}, tmp_path / "object.pth")
    files["object"] = (tmp_path / "object.pth", "argparse.Namespace")
    good = _state_file(tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(good[: len(good) // 2])
    files["truncated"] = (tmp_path / "truncated.pth", "truncated")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    files["list"] = (tmp_path / "list.pth", "holds a list, not a state dict")
    return files


def test_first_added_file_is_recorded_and_later_loads_must_match_it(homes, tmp_path):
    rb, th = homes
    first, other = _state_file(tmp_path / "a.pth", 0), _state_file(tmp_path / "b.pth", 1)
    digest = file_sha256(first)
    dest = weights.install(NOHASH, first)
    assert dest == rb / NOHASH.filename
    record = weights.record_path(NOHASH)
    assert record == rb / "toy_backbone.pth.sha256"
    assert record.read_text() == f"{digest}  toy_backbone.pth\n"  # `sha256sum -c` reads it
    assert weights.state_of(NOHASH, dest) == f"unverified (recorded sha256 {digest[:16]}...)"
    assert weights.hash_label(NOHASH) == f"(none published) recorded {digest[:16]}..."
    with pytest.warns(
        UnverifiedWeightsWarning, match=r"toy-nohash.*unverified \(recorded sha256 " + digest[:16]
    ):
        assert weights.locate(NOHASH) == dest
    # adding the same file again is fine; another file is refused, with how to record another one
    weights.install(NOHASH, first)
    with pytest.raises(
        WeightsUnavailable, match=r"recorded [0-9a-f]{16}\.\.\. when first added.*delete .*\.sha256"
    ):
        weights.install(NOHASH, other)
    # a file swapped in later, in any folder, no longer matches the record
    dest.write_bytes(other.read_bytes())
    assert weights.state_of(NOHASH, dest).startswith("bad (sha256 ")
    (th / "checkpoints").mkdir(parents=True)
    (th / "checkpoints" / NOHASH.filename).write_bytes(other.read_bytes())
    with pytest.raises(WeightsUnavailable, match="when first added") as err:
        weights.locate(NOHASH)
    assert "\n" not in str(err.value)
    # the original file, where torch keeps it, is found and used
    (th / "checkpoints" / NOHASH.filename).write_bytes(first.read_bytes())
    with pytest.warns(UnverifiedWeightsWarning):
        assert weights.locate(NOHASH) == th / "checkpoints" / NOHASH.filename
    assert weights.best_state(NOHASH).startswith("unverified (recorded sha256")


def test_an_unrecorded_file_is_used_unverified_and_says_how_to_record_it(homes, tmp_path):
    _, th = homes
    (th / "checkpoints").mkdir(parents=True)
    path = _state_file(th / "checkpoints" / NOHASH.filename)
    assert weights.state_of(NOHASH, path) == "unverified (no sha256 published or recorded)"
    with pytest.warns(
        UnverifiedWeightsWarning,
        match=r"no sha256 published or recorded\); `reinv-bench weights add toy-nohash",
    ):
        assert weights.locate(NOHASH) == path


def test_a_malformed_record_is_reported_not_trusted(homes, tmp_path):
    rb, _ = homes
    weights.install(NOHASH, _state_file(tmp_path / "a.pth"))
    weights.record_path(NOHASH).write_text("not a digest\n")
    state = weights.state_of(NOHASH, rb / NOHASH.filename)
    assert state.startswith("bad (") and "is not a sha256 record" in state
    with pytest.raises(WeightsUnavailable, match="is not a sha256 record"):
        weights.locate(NOHASH)


def test_full_prefix_and_none_are_reported_as_what_they_check(homes, tmp_path):
    from reinv_architectures import face_evolve, torchvision_nets
    from reinv_metrics import facenet, fid

    path = _state_file(tmp_path / "w.pth")
    digest = file_sha256(path)
    full = WeightsFile("toy-full", path.name, digest, "doc")
    prefix = WeightsFile("toy-prefix", path.name, digest[:8], "doc")
    assert weights.state_of(full, path) == "present"
    assert (
        weights.state_of(prefix, path)
        == f"present (sha256 prefix {digest[:8]} checked, no full hash published)"
    )
    assert weights.hash_label(prefix) == f"{digest[:8]} (prefix)" and weights.hash_label(full) == digest
    wrong = WeightsFile("toy-wrong", path.name, "0" * 8, "doc")
    assert weights.state_of(wrong, path).startswith(
        "bad (sha256 "
    ) and "expected prefix 00000000" in weights.state_of(wrong, path)
    # the registered entries: pytorch-fid's full digest (its name carries the prefix), torchvision's prefixes,
    # and the three without a published hash
    assert weights.check(fid.WEIGHTS) == "full" and fid.WEIGHTS.sha256.startswith("6726825d")
    assert {weights.check(w) for w in torchvision_nets.WEIGHTS} == {"prefix"}
    assert [weights.check(w) for w in (facenet.WEIGHTS, *face_evolve.WEIGHTS)] == ["none"] * 3
    # a prefix-checked file is used without a warning
    (tmp_path / "rb").mkdir()
    (tmp_path / "rb" / path.name).write_bytes(path.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedWeightsWarning)
        assert weights.locate(prefix) == tmp_path / "rb" / path.name


@pytest.mark.parametrize("kind", ["empty", "junk", "object", "truncated", "list"])
def test_rejections_are_one_line_with_a_reason(homes, tmp_path, kind):
    path, reason = _bad_files(tmp_path)[kind]
    with pytest.raises(WeightsUnavailable) as err:
        weights.install(NOHASH, path)
    msg = str(err.value)
    assert reason in msg and "\n" not in msg and "weights_only" not in msg, msg
    assert not weights.record_path(NOHASH).exists() and not (homes[0] / NOHASH.filename).exists()
    if kind != "empty":  # load_state says the same to a metric or an architecture that loads the file
        with pytest.raises(WeightsUnavailable) as err:
            weights.load_state(path)
        assert (
            reason in str(err.value) and "\n" not in str(err.value) and "weights_only" not in str(err.value)
        )


def test_an_empty_file_has_a_reason_for_a_hashed_entry_too(homes, tmp_path):
    from reinv_metrics import fid

    (tmp_path / "rb").mkdir()
    empty = tmp_path / "rb" / fid.WEIGHTS.filename
    empty.write_bytes(b"")
    assert weights.state_of(fid.WEIGHTS, empty) == "bad (file is empty)"
    with pytest.raises(WeightsUnavailable, match=r"file is empty"):
        weights.install(fid.WEIGHTS, empty)
    with pytest.raises(WeightsUnavailable, match=r"rb/pt_inception.*bad \(file is empty\)"):
        weights.locate(fid.WEIGHTS)


def test_weights_add_records_and_the_listing_says_unverified(homes, tmp_path):
    rb, _ = homes
    path = _state_file(tmp_path / "ir152.pth")
    digest = file_sha256(path)
    ok = CliRunner().invoke(cli, ["weights", "add", "ir152-ms1m", str(path)], obj=State(()))
    assert ok.exit_code == 0, ok.output
    assert (
        rb / "Backbone_IR_152_Epoch_112_Batch_2547328_Time_2019-07-13-02-59_checkpoint.pth.sha256"
    ).is_file()
    listing = CliRunner().invoke(cli, ["weights"], obj=State(()))
    line = next(x for x in listing.output.splitlines() if x.startswith("ir152-ms1m"))
    assert f"unverified (recorded sha256 {digest[:16]}...)" in line
    other = _state_file(tmp_path / "other.pth", 1)
    bad = CliRunner().invoke(cli, ["weights", "add", "ir152-ms1m", str(other)], obj=State(()))
    assert bad.exit_code != 0 and "when first added" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    junk = tmp_path / "junk.pth"
    torch.save({"args": argparse.Namespace(lr=0.1)}, junk)
    bad = CliRunner().invoke(cli, ["weights", "add", "ir50-ms1m", str(junk)], obj=State(()))
    assert (
        bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1 and "weights_only" not in bad.output
    )


def test_an_architecture_using_unverified_weights_says_so(homes, tmp_path):
    from reinv_bench.registry.components import weights_init
    from reinv_bench.registry.lookup import load

    reg = load()
    path = _state_file(tmp_path / "ir50.pth")
    weights.install(reg.get("weights", "ir50-ms1m"), path)
    with pytest.warns(UnverifiedWeightsWarning, match=r"'ir50-ms1m'.*unverified \(recorded sha256"):
        init = weights_init(reg, reg.get("architecture", "ir50_112"), "ms1m", "--arch ir50_112[weights=ms1m]")
    assert init["sha256"] == file_sha256(path)
