"""Long steps survive interruption (issue 22): a GAN prior or a classifier killed half-way
resumes from its checkpoint and saves the artifact an uninterrupted run saves, byte for byte.

In-process tests "kill" a step by raising from ``Checkpoint.save`` once the k-th checkpoint is on
disk; one test runs the prior in a subprocess and kills it with SIGKILL when its first checkpoint
file appears. Everything runs on the digits (``mnist``) at tiny sizes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reinv_bench.contract.checkpoint import ENV_EVERY, Checkpoint
from reinv_bench.engine.plan import Request, expand
from reinv_bench.engine.steps import Env, Worker

TESTS = Path(__file__).parent.parent  # tests/: conftest, the test plugin the workers import
sys.path.insert(0, str(TESTS.parent / "plugins"))

from reinv_attacks._gan import batch_stream, train_wgan_gp  # noqa: E402

GMI_TINY = "gmi[gan_steps=12,gan_batch=8]"


class Killed(BaseException):
    """What the simulated kill raises (a BaseException: nothing on the way catches it)."""


@pytest.fixture
def kill_after(monkeypatch):
    """``kill_after(k)``: the k-th checkpoint saved from now on raises ``Killed`` once written."""
    save = Checkpoint.save

    def arm(k: int) -> None:
        count = [0]

        def killing(self, *args, **kwargs):
            path = save(self, *args, **kwargs)
            count[0] += 1
            if count[0] == k:
                monkeypatch.setattr(Checkpoint, "save", save)
                raise Killed(path)
            return path

        monkeypatch.setattr(Checkpoint, "save", killing)

    return arm


def plan_step(registry, kind: str, attack: str = GMI_TINY, defense: str = "none", epochs: int = 3):
    plan = expand(
        Request(
            attacks=[attack],
            defenses=[defense],
            baseline=False,
            budget="smoke",
            archs=["tiny"],
            eval_arch="tiny",
            metrics=["attack_acc"],
            recipes={"target": {"epochs": epochs}},
        ),
        registry,
    )
    return plan, next(
        s for s in plan.steps.values() if s.kind == kind and (kind != "target" or defense in s.label)
    )


def execute(registry, workdir: Path, plan, step) -> str:
    """Run ``step`` in a fresh worker; the sha256 of the artifact it saved."""
    w = Worker(Env(str(workdir)), registry)
    w.steps.update(plan.steps)
    w.execute(step)
    return w.artifacts.record(step.key)["sha256"]


def checkpoints(workdir: Path) -> list[Path]:
    return sorted((workdir / "artifacts").glob("*/*ckpt*"))


def killed_then_resumed(
    registry, tmp_path, monkeypatch, kill_after, capsys, plan, step, k: int, at: str = ""
) -> str:
    """Kill ``step`` once its k-th checkpoint is written, run it again; the artifact's sha256.
    ``at``: where it says it resumes (default: iteration k)."""
    monkeypatch.setenv(ENV_EVERY, "1e-9")  # a checkpoint after every iteration
    kill_after(k)
    with pytest.raises(Killed):
        execute(registry, tmp_path / "killed", plan, step)
    assert len(checkpoints(tmp_path / "killed")) == 1  # the newest replaced the older ones
    capsys.readouterr()
    sha = execute(registry, tmp_path / "killed", plan, step)
    err = capsys.readouterr().err
    assert f"resuming {step.label} from checkpoint at iteration {at or f'{k}/'}" in err, err
    assert checkpoints(tmp_path / "killed") == []  # removed once the artifact is saved
    return sha


def test_a_gmi_prior_killed_half_way_resumes_to_the_uninterrupted_artifact(
    registry, tmp_path, monkeypatch, kill_after, capsys
):
    plan, step = plan_step(registry, "prior")
    monkeypatch.setenv(ENV_EVERY, "0")
    reference = execute(registry, tmp_path / "reference", plan, step)
    assert checkpoints(tmp_path / "reference") == []
    resumed = killed_then_resumed(registry, tmp_path, monkeypatch, kill_after, capsys, plan, step, k=5)
    assert resumed == reference


@pytest.mark.parametrize(
    ("defense", "k", "at"),
    [
        ("re", 1, ""),  # data order, augmentation generator, optimizer, global RNG (Random Erasing)
        ("trapmid", 2, ""),  # the defense's own state: triggers, discriminator, its optimizer and schedule
        ("dpsgd", 1, ""),  # Opacus's accountant (epsilon is stored with the target)
        (
            "calor[ft_epochs=2]",
            3,
            "1/2 of training loop 2",
        ),  # killed in the fine-tune phase: the main loop is not run again
    ],
)
def test_a_target_killed_half_way_resumes_to_the_uninterrupted_artifact(
    registry, tmp_path, monkeypatch, kill_after, capsys, defense, k, at
):
    if defense == "dpsgd":
        pytest.importorskip("opacus")
    plan, step = plan_step(registry, "target", defense=defense)
    monkeypatch.setenv(ENV_EVERY, "0")
    reference = execute(registry, tmp_path / "reference", plan, step)
    ref_meta = Worker(Env(str(tmp_path / "reference")), registry).artifacts.record(step.key)["meta"]
    resumed = killed_then_resumed(registry, tmp_path, monkeypatch, kill_after, capsys, plan, step, k, at)
    assert resumed == reference
    meta = Worker(Env(str(tmp_path / "killed")), registry).artifacts.record(step.key)["meta"]
    assert meta["history"] == ref_meta["history"] and meta.get("stats") == ref_meta.get("stats")
    assert len(meta["history"]) == 3 + (2 if defense.startswith("calor") else 0)


def test_a_damaged_checkpoint_is_ignored_with_one_line_and_the_step_starts_again(
    registry, tmp_path, monkeypatch, kill_after, capsys
):
    plan, step = plan_step(registry, "prior")
    monkeypatch.setenv(ENV_EVERY, "0")
    reference = execute(registry, tmp_path / "reference", plan, step)
    monkeypatch.setenv(ENV_EVERY, "1e-9")
    kill_after(4)
    with pytest.raises(Killed):
        execute(registry, tmp_path / "killed", plan, step)
    (ckpt,) = checkpoints(tmp_path / "killed")
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte torch.load would not notice
    ckpt.write_bytes(bytes(data))
    capsys.readouterr()
    assert execute(registry, tmp_path / "killed", plan, step) == reference
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if "ignoring the checkpoint" in line]
    assert len(warned) == 1 and "damaged" in warned[0] and not any("resuming" in line for line in err)
    assert checkpoints(tmp_path / "killed") == []


def test_a_checkpoint_of_other_inputs_or_garbage_is_not_used(tmp_path):
    x = torch.rand(40, 1, 32, 32) * 2 - 1
    kw = dict(dim=4, z_dim=8, steps=6, batch_size=8, lr=2e-4, n_critic=2, gp=10.0, device="cpu", seed=1)
    reference = train_wgan_gp(x, (1, 32, 32), **kw)[0].state_dict()
    path, said = tmp_path / "ab" / "abc.pt", []
    ckpt = Checkpoint(path, "prior", {"dep": "1" * 64}, every=1e-9, notify=said.append)
    with pytest.raises(Killed):
        train_wgan_gp(x, (1, 32, 32), **kw, checkpoint=_raising(ckpt, at=3))
    other = Checkpoint(path, "prior", {"dep": "2" * 64}, every=1e-9, notify=said.append)  # a rebuilt input
    G = train_wgan_gp(x, (1, 32, 32), **kw, checkpoint=other)[0].state_dict()
    assert all(torch.equal(G[k], reference[k]) for k in G)
    assert any("it was made from other versions of the step's inputs" in s for s in said), said
    assert not any("resuming" in s for s in said)
    # garbage under a checkpoint's name: one line, then from scratch
    for f in path.parent.glob("*.ckpt"):
        f.unlink()
    (path.parent / f"{path.stem}.{'0' * 16}.ckpt").write_bytes(b"not a checkpoint")
    said.clear()
    again = Checkpoint(path, "prior", {}, every=0, notify=said.append)
    assert again.resume(6, {}) == 0 and said == []  # checkpoints off: nothing is read
    again = Checkpoint(path, "prior", {}, every=1e-9, notify=said.append)
    G = train_wgan_gp(x, (1, 32, 32), **kw, checkpoint=again)[0].state_dict()
    assert all(torch.equal(G[k], reference[k]) for k in G)
    assert len(said) == 1 and "ignoring the checkpoint" in said[0]


def _raising(ckpt: Checkpoint, at: int) -> Checkpoint:
    """``ckpt`` raising ``Killed`` once its checkpoint of iteration ``at`` is written."""
    save = ckpt.save

    def killing(i, n, state):
        path = save(i, n, state)
        if i == at:
            raise Killed(path)
        return path

    ckpt.save = killing
    return ckpt


def test_batch_stream_from_a_step_gives_the_rest_of_the_full_stream():
    full = list(batch_stream(23, 5, 17, torch.Generator().manual_seed(3), streams=2))
    for start in (0, 1, 4, 5, 9, 16):
        rest = list(batch_stream(23, 5, 17, torch.Generator().manual_seed(3), streams=2, start=start))
        assert len(rest) == 17 - start
        assert all(torch.equal(a, b) for x, y in zip(rest, full[start:], strict=True) for a, b in zip(x, y))


def test_the_interval_is_read_from_the_environment(monkeypatch):
    from reinv_bench.contract.checkpoint import EVERY_S, every_seconds
    from reinv_bench.engine.artifacts import ArtifactError

    monkeypatch.delenv(ENV_EVERY, raising=False)
    assert every_seconds() == EVERY_S
    monkeypatch.setenv(ENV_EVERY, "90")
    assert every_seconds() == 90.0
    monkeypatch.setenv(ENV_EVERY, "ten minutes")
    with pytest.raises(ArtifactError, match=f"{ENV_EVERY}='ten minutes'"):
        every_seconds()


# ---- a real kill: SIGKILL from outside when the first checkpoint file appears -------------------

CHILD = r"""
import sys
from reinv_bench.engine.plan import Request, expand
from reinv_bench.registry.lookup import load
from reinv_bench.engine.steps import Env, run_step

request = Request([sys.argv[2]], ["none"], baseline=False, budget="smoke", metrics=["attack_acc"])
plan = expand(request, load())
step = next(s for s in plan.steps.values() if s.kind == "prior")
run_step(Env(sys.argv[1]), step, plan.steps)
print(step.key)
"""


def child(workdir: Path, every: str) -> subprocess.Popen:
    env = {**os.environ, ENV_EVERY: every, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(workdir), "gmi[gan_steps=60,gan_batch=8]"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def sha256_of_prior(workdir: Path, key: str) -> str:
    import json

    return json.loads((workdir / "artifacts" / key[:2] / f"{key}.json").read_text())["sha256"]


def test_a_gmi_prior_killed_with_sigkill_resumes_to_the_uninterrupted_artifact(tmp_path):
    ref = child(tmp_path / "reference", "0")
    killed = child(tmp_path / "killed", "0.3")
    deadline = time.monotonic() + 300
    while not list((tmp_path / "killed" / "artifacts").glob("*/*.ckpt")):
        assert killed.poll() is None, f"the step ended before its first checkpoint: {killed.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    resumed = child(tmp_path / "killed", "0.3")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming prior gmi-gan" in err and "from checkpoint at iteration " in err, err
    ref_out, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err
    key = out.split()[-1]
    assert ref_out.split()[-1] == key
    assert sha256_of_prior(tmp_path / "killed", key) == sha256_of_prior(tmp_path / "reference", key)
    assert not list((tmp_path / "killed" / "artifacts").glob("*/*ckpt*"))


def test_a_checkpoint_of_another_loop_is_ignored_or_refused_when_loops_were_skipped(tmp_path):
    from reinv_bench.engine.artifacts import ArtifactError

    path, said = tmp_path / "ab" / "abc.pt", []

    def run(sizes: list[int], kill: int | None = None) -> list[list[float]]:
        ckpt, out = Checkpoint(path, "target", every=1e-9, notify=said.append), []
        for n in sizes:  # loops one after another, as a target's main loop and its fine-tune phases
            acc: list[float] = []
            for i in range(ckpt.resume(n, {"acc": acc}), n):
                acc.append(torch.rand(()).item())
                ckpt.reached(i + 1, n, {"acc": acc})
                if kill is not None and len(acc) + sum(len(o) for o in out) == kill:
                    raise Killed
            out.append(ckpt.finish(acc))
        ckpt.discard()  # as the step does once its artifact is saved
        return out

    torch.manual_seed(0)
    reference = run([3, 4])
    torch.manual_seed(0)
    with pytest.raises(Killed):
        run([3, 4], kill=5)  # in the second loop
    assert run([3, 4]) == reference and "iteration 2/4 of training loop 2" in said[-1]
    torch.manual_seed(0)
    with pytest.raises(Killed):
        run([3, 4], kill=5)
    with pytest.raises(ArtifactError, match="another training loop"):  # the first loop was skipped
        run([3, 5])
    assert not list(path.parent.glob("*ckpt*"))
    torch.manual_seed(0)
    with pytest.raises(Killed):
        run([3, 4], kill=2)
    said.clear()
    (acc,) = run([6])  # a loop of another length: the checkpoint is ignored, the loop starts again
    assert len(acc) == 6 and said == [
        "ignoring the checkpoint of target: it was saved by another training loop (the code changed)"
    ]


@pytest.mark.parametrize("gan", ["kedmi", "plgmi"])
def test_the_kedmi_and_plgmi_gans_killed_half_way_resume_to_the_uninterrupted_networks(tmp_path, gan):
    from reinv_attacks.kedmi import train_kedmi_gan
    from reinv_attacks.plgmi import train_cgan

    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 32, 32) * 2 - 1, torch.arange(40) % 5
    T = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 5)).eval().requires_grad_(False)
    common = dict(z_dim=8, batch_size=8, lr=2e-4, device="cpu", seed=1)

    def train(ckpt=None) -> dict:
        kw = {**common, **({"checkpoint": ckpt} if ckpt else {})}
        if gan == "kedmi":
            return train_kedmi_gan(x, T, (1, 32, 32), 5, dim=4, steps=9, n_critic=2, **kw)[1].state_dict()
        return train_cgan(x, y, T, (1, 32, 32), 5, ch=4, iters=4, n_dis=2, alpha=0.2, **kw).state_dict()

    reference, said = train(), []
    path = tmp_path / "ab" / "abc.pt"
    with pytest.raises(Killed):
        train(_raising(Checkpoint(path, "prior", every=1e-9, notify=said.append), at=3))
    resumed = train(Checkpoint(path, "prior", every=1e-9, notify=said.append))
    assert said == [f"resuming prior from checkpoint at iteration 3/{9 if gan == 'kedmi' else 8}"]
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_a_ppdg_fine_tune_killed_between_classes_resumes_to_the_uninterrupted_artifact(
    registry, tmp_path, monkeypatch, kill_after, capsys
):
    """PPDG's tuned prior checkpoints after each class's fine-tune; killed in the second round's
    third class, the resumed step takes the networks tuned so far from the checkpoint and saves
    the uninterrupted artifact."""
    plan, _ = plan_step(registry, "prior", attack=f"ppdg[rounds=3]+{GMI_TINY}")
    tuned = next(s for s in plan.steps.values() if "ppdg-tuned" in s.label)
    monkeypatch.setenv(ENV_EVERY, "0")
    for key in tuned.deps:
        execute(registry, tmp_path / "reference", plan, plan.steps[key])
    shutil.copytree(tmp_path / "reference", tmp_path / "killed")
    reference = execute(registry, tmp_path / "reference", plan, tuned)
    artifacts = Worker(Env(str(tmp_path / "reference")), registry).artifacts
    classes = len(artifacts.load(tuned.key)["prior"]["tuned"])
    k = classes + 2  # round 2 (of 3), its third class: round 1's networks come from the checkpoint
    resumed = killed_then_resumed(
        registry, tmp_path, monkeypatch, kill_after, capsys, plan, tuned, k, at=f"{k}/{2 * classes}"
    )
    assert resumed == reference
