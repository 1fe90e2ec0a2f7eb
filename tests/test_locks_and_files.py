"""Issue 30, item 21: locks and files that hang. A step lock that cannot be read is named, waited for
with a pause between looks (no busy loop) and then refused in one line, or refused at once when no run
can ever release it (a directory, a dangling link); a damaged (non-UTF-8) lock is a lock of an unknown
holder; staleness is judged by watching the lock unchanged, never by its mtime against this host's
clock; a named pipe named like an image never blocks ``data check``; a checkpoint whose tensors have
other shapes is set aside like an unreadable one instead of failing its step on every rerun."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from reinv_bench.contract.checkpoint import Checkpoint
from reinv_bench.engine.artifacts import ArtifactError, Artifacts
from reinv_bench.testing import make_celeba

KEY = "cd" * 10


def lock_path(art: Artifacts) -> Path:
    path = art.root / KEY[:2] / f"{KEY}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def take(art: Artifacts, within: float, **kw) -> tuple[str, float, list[str]]:
    """Take KEY's lock in a thread: ('took' or the error's text, seconds, messages)."""
    said: list[str] = []
    out: list = []

    def run():
        t0 = time.monotonic()
        try:
            with art.lock(KEY, poll=0.02, notify=said.append, **kw):
                out.append(("took", time.monotonic() - t0))
        except ArtifactError as exc:
            out.append((str(exc), time.monotonic() - t0))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(within)
    assert out, f"still waiting after {within} s; messages: {said}"
    return out[0][0], out[0][1], said


def test_a_directory_in_place_of_a_lock_is_refused_at_once(tmp_path):
    art = Artifacts(tmp_path)
    lock_path(art).mkdir()
    result, seconds, _ = take(art, 10, stale=30)
    assert seconds < 2 and str(lock_path(art)) in result and "not a file (a directory)" in result


def test_a_dangling_symlink_in_place_of_a_lock_is_refused_at_once(tmp_path):
    art = Artifacts(tmp_path)
    lock_path(art).symlink_to(tmp_path / "nowhere")
    result, seconds, _ = take(art, 10, stale=30)
    assert seconds < 2 and str(lock_path(art)) in result and "symbolic link to nothing" in result


def test_a_lock_this_user_cannot_read_is_named_waited_for_without_spinning(tmp_path, monkeypatch):
    """Another user's lock (mode 600): simulated, since the tests may run as root."""
    art = Artifacts(tmp_path)
    path = lock_path(art)
    path.write_text(json.dumps({"host": "h", "pid": 1, "since": "s", "token": "t"}))
    reads = []
    real = Path.read_bytes

    def read_bytes(self):
        if self == path:
            reads.append(1)
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result, seconds, said = take(art, 10, stale=0.5)
    assert 0.4 <= seconds < 5
    assert (
        str(path) in result and "cannot be read (Permission denied)" in result and "--break-locks" in result
    )
    assert len(said) == 1 and str(path) in said[0] and "cannot be read" in said[0]
    assert len(reads) < 0.5 / 0.02 * 3  # looked once per poll, not in a busy loop


def test_a_non_utf8_lock_is_named_and_taken_over_once_stale(tmp_path):
    art = Artifacts(tmp_path)
    lock_path(art).write_bytes(b"\xff\xfe\x00garbage \x80\x81")
    result, seconds, said = take(art, 10, stale=0.5)
    assert result == "took" and 0.4 <= seconds < 5
    assert any(f"waiting for the lock {lock_path(art)}" in m for m in said)
    assert any("took over" in m for m in said)


def test_a_live_lock_of_a_host_whose_clock_is_behind_is_not_taken_over(tmp_path):
    """Its heartbeat writes mtimes an hour in the past; the lock changes, so it is live."""
    art = Artifacts(tmp_path)
    path = lock_path(art)
    path.write_text(json.dumps({"host": "skewed-node", "pid": 7, "since": "s", "token": "t"}))
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(0.05):
            then = time.time() - 3600
            os.utime(path, (then, then))

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    said: list[str] = []
    waiter = threading.Thread(
        target=lambda: art.lock(KEY, poll=0.02, stale=0.5, notify=said.append).__enter__(), daemon=True
    )
    waiter.start()
    time.sleep(1.5)  # three stale times
    assert waiter.is_alive() and not any("took over" in m for m in said), said
    stop.set()
    beat.join()
    path.unlink()  # the holder releases it
    waiter.join(5)
    assert not waiter.is_alive()


def test_a_fifo_named_like_an_image_is_reported_not_read(tmp_path, registry, invoke, monkeypatch):
    monkeypatch.delenv("REINV_BENCH_CELEBA_GANSET", raising=False)
    make_celeba(tmp_path)
    image = tmp_path / "celeba" / "img_align_celeba" / "000010.jpg"
    image.unlink()
    os.mkfifo(image)
    out: list = []
    args = ("data", "check", "celeba64", "--data-root", tmp_path, "--sample", "0")
    t = threading.Thread(
        target=lambda: out.append(invoke(*args, "--labels", tmp_path / "l.txt", registry=registry)),
        daemon=True,
    )
    t.start()
    t.join(120)
    if not out:  # unblock the reader so the thread can end
        with open(image, "wb") as w:
            w.write(b"x")
    assert out, "data check blocked on a named pipe"
    result = out[0]
    assert result.exit_code == 1, result.output
    assert "000010.jpg: a named pipe (FIFO), not a regular file" in result.output


def test_the_face_decoder_refuses_a_fifo_instead_of_blocking(tmp_path):
    from reinv_datasets._faces import center_crop_resize

    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(Exception, match="not a regular file"):
        center_crop_resize(str(fifo), crop=0, size=8)


# --- checkpoints of another model ---------------------------------------------------------------


def test_a_checkpoint_whose_tensors_have_other_shapes_is_set_aside_not_a_failure_every_rerun(tmp_path):
    said: list[str] = []
    artifact = tmp_path / "ab" / "step.pt"
    artifact.parent.mkdir()
    old = torch.nn.Linear(4, 3)
    first = Checkpoint(artifact, label="train", every=1, notify=said.append)
    first.resume(10, {"model": old})
    first.save(5, 10, {"model": old})
    assert list(artifact.parent.glob("*.ckpt"))

    new = torch.nn.Linear(4, 5)  # the step's model changed shape (say, a default of the code)
    before = {k: v.clone() for k, v in new.state_dict().items()}
    second = Checkpoint(artifact, label="train", every=1, notify=said.append)
    assert second.resume(10, {"model": new}) == 0  # from scratch, not a RuntimeError
    assert all(torch.equal(before[k], v) for k, v in new.state_dict().items())  # nothing half-loaded
    assert any("tensors do not fit" in m and "model.weight: (3, 4) saved, (5, 4) now" in m for m in said), (
        said
    )
    assert not list(artifact.parent.glob("*.ckpt"))  # removed: the next run does not meet it again
