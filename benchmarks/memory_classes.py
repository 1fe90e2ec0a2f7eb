"""Peak host memory of ``ppa`` against the number of attacked classes (issue 22), on CPU.

Runs ``ppa`` at a reduced size (a tiny random-weight StyleGAN2, 4 candidates and 4 final images
per class, the smoke budget's few iterations) on the fake FaceScrub tree of
``reinv_bench.testing`` (224-px images, as the paper's protocol), with the ``tiny`` networks as
target and evaluation model and the metrics ``attack_acc``, ``eval_dist`` (KNN) and ``fid`` (a
random-weight pytorch-fid Inception file: the feature extraction is real, the value means
nothing). Each (mode, classes) runs in a fresh process from a copy of one warm workdir (target,
evaluation model and prior already trained), and prints the peak resident memory of each step kind
(``VmHWM``, reset before each step) and of the process (``ru_maxrss``):

- ``--class-chunk 0``: one inversion step holds every class; it grows with the classes;
- ``--class-chunk auto``: PPA's ``memory_per_class`` sizes the chunks; the 2 GiB budget of the
  paper's scale is scaled to this reduced configuration (4 classes per chunk), so that these runs
  are chunked as a paper run is. Inversion, merge and evaluation (FID and KNN feature extraction
  included) should stay flat.

It ends with the arithmetic for the paper configuration (530 classes x 50 final images at 224 px,
200 candidates): the inversion step's per-class bytes measured unchunked (the slope of its peaks,
per reconstruction), plus the candidate latents PPA holds per class (``memory_per_class``'s term;
the tiny generator's are negligible here), times 530 classes (one step) or times the classes of
one auto chunk, plus the fixed part measured here (the paper's own networks come on top).

    python benchmarks/memory_classes.py                 # classes 4 8 16 32, modes 0 and auto
    python benchmarks/memory_classes.py --classes 4 16 --modes auto
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from reinv_bench import hookimpl
from reinv_bench.api import Architecture, Classifier

# smoke budget otherwise (2 iterations, 1 selection transform); batch 4: the final selection makes
# the images of 10 x 4 candidates at a time, so per-class growth is not hidden in it
ATTACK = "ppa[candidates=4,final=4,search=16,batch=4]"
FINAL, PAPER_FINAL, PAPER_CLASSES, PAPER_CANDIDATES = 4, 50, 530, 200
METRICS = ["attack_acc", "eval_dist", "fid"]
SCENARIO = "facescrub224-ffhq"


class TinyNet(Architecture):
    """One strided convolution and a linear feature layer: a target that costs nothing at 224 px."""

    name = "tiny"

    def build(self, num_classes, image_shape):
        blocks = [
            torch.nn.Sequential(torch.nn.Conv2d(image_shape[0], 8, 3, stride=4, padding=1), torch.nn.ReLU()),
            torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 32)),
        ]
        return Classifier(blocks, torch.nn.Linear(32, num_classes), 32, num_classes, freeze_point=1)


@hookimpl
def register_architectures():
    return [TinyNet()]


# ---- the measured process ------------------------------------------------------------------------


def _hwm() -> int:
    """Peak resident bytes since the last reset (VmHWM)."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def _reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def child(classes: int, mode: str, workdir: Path, root: Path, fid_sha: str) -> dict:
    from reinv_bench.engine import chunks as plan_mod
    from reinv_bench.engine import steps
    from reinv_bench.engine.plan import Request, expand
    from reinv_bench.engine.runner import Runner
    from reinv_bench.registry.lookup import load
    from reinv_bench.results.store import Store
    from reinv_metrics import fid

    fid.WEIGHTS = dataclasses.replace(fid.WEIGHTS, sha256=fid_sha)  # the random Inception file here
    registry = load(extra=(sys.modules[__name__],))
    scenario = registry.get("scenario", SCENARIO)
    scenario.target_classes = lambda: list(range(classes))
    if mode == "auto":  # the paper's 2 GiB budget scaled to this configuration: 4 classes per chunk
        attack = registry.get("attack", "ppa")({"candidates": "4", "final": "4", "search": "16"}, "smoke")
        plan_mod.AUTO_CHUNK_BYTES = 4 * attack.memory_per_class(scenario.image_shape)
    peaks: dict[str, int] = {}

    def tracked(fn, kind_of):
        def run(self, arg):
            _reset_hwm()
            try:
                return fn(self, arg)
            finally:
                peaks[kind_of(arg)] = max(peaks.get(kind_of(arg), 0), _hwm())

        return run

    steps.Worker.execute = tracked(steps.Worker.execute, lambda step: step.kind)
    steps.Worker.evaluate = tracked(steps.Worker.evaluate, lambda cell: "evaluate")
    req = Request(
        [ATTACK],
        ["none"],
        archs=["tiny"],
        eval_arch="tiny",
        scenarios=[SCENARIO],
        budget="smoke",
        baseline=False,
        data_root=str(root),
        metrics=METRICS,
        class_chunk="auto" if mode == "auto" else int(mode),
    )
    t0 = time.perf_counter()
    summary = Runner(registry, workdir, torch.device("cpu")).run(
        expand(req, registry), Store(workdir / "r.db")
    )
    row = summary.rows[0] if summary.rows else {}
    return {
        "classes": classes,
        "mode": mode,
        "seconds": time.perf_counter() - t0,
        "ran": sorted(s.kind for s in summary.ran),
        "peaks": peaks,
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "metrics": row.get("metrics"),
        "failed": [str(f) for f in summary.failed],
    }


# ---- the driver ------------------------------------------------------------------------------------


def _setup(base: Path) -> tuple[Path, str]:
    """The fake FaceScrub tree, a tiny StyleGAN2 registered as ``stylegan2-ffhq`` and a random
    pytorch-fid Inception file in a weights folder. Returns (data root, the Inception file's sha256)."""
    from unittest import mock

    from pytorch_fid import inception

    from reinv_attacks import _stylegan2_load as stylegan2
    from reinv_attacks._stylegan2_net import Generator
    from reinv_bench.engine.artifacts import file_sha256
    from reinv_bench.testing import make_facescrub, make_ffhq

    root, weights = base / "data", base / "weights"
    make_facescrub(root, per_person=2)
    make_ffhq(root, "images1024x1024", 1, 1024)
    weights.mkdir(parents=True)
    torch.manual_seed(0)
    G = Generator(
        z_dim=16,
        c_dim=0,
        w_dim=16,
        img_resolution=8,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 128, "channel_max": 16},
    ).eval()
    stylegan2.save_generator(G, weights / "stylegan2-ffhq.pt")
    with (
        mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None),
    ):
        net = inception.fid_inception_v3()
    for m in net.modules():  # Kaiming, or the pool features are ~1e-8
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    fid_file = weights / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), fid_file)
    return root, file_sha256(fid_file)


def _run_child(args: list[str], env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--modes", nargs="+", default=["0", "auto"], help="--class-chunk values: 0, auto, N")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        classes, mode, workdir, root, sha = a.child
        print(json.dumps(child(int(classes), mode, Path(workdir), Path(root), sha)))
        return
    base = a.keep or Path(tempfile.mkdtemp(prefix="reinv-memory-"))
    root, sha = _setup(base)
    env = {
        **os.environ,
        "REINV_BENCH_WEIGHTS": str(base / "weights"),
        "TORCH_HOME": str(base / "no-torch-home"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONWARNINGS": "ignore",
    }
    warm = base / "warm"
    print(f"warming up (target, evaluation model, prior) in {warm} ...", flush=True)
    _run_child(["1", "0", str(warm), str(root), sha], env)
    kinds = ["invert", "merge", "evaluate"]
    print(f"\n{ATTACK} on {SCENARIO} (fake tree), CPU; peak resident memory in MiB")
    print(f"{'mode':>5} {'classes':>7} " + " ".join(f"{k:>9}" for k in kinds) + f" {'process':>9} {'s':>6}")
    results: dict[str, list[dict]] = {}
    for mode in a.modes:
        for n in a.classes:
            wd = base / f"run-{mode}-{n}"
            shutil.rmtree(wd, ignore_errors=True)
            shutil.copytree(warm, wd, ignore=shutil.ignore_patterns("*.db*"))
            r = _run_child([str(n), mode, str(wd), str(root), sha], env)
            results.setdefault(mode, []).append(r)
            cells = " ".join(
                f"{r['peaks'][k] / 2**20:9.0f}" if k in r["peaks"] else f"{'-':>9}" for k in kinds
            )
            print(f"{mode:>5} {n:7d} {cells} {r['maxrss'] / 2**20:9.0f} {r['seconds']:6.0f}", flush=True)
            if r["failed"]:
                print(f"      failed: {r['failed']}")
    print("\nslope of the peaks, MiB per class (least squares over the class counts):")
    slopes: dict[str, dict[str, tuple[float, float]]] = {}
    for mode, rs in results.items():
        xs = [r["classes"] for r in rs]
        slopes[mode] = {k: _fit(xs, [r["peaks"].get(k, 0) for r in rs]) for k in ["invert", "evaluate"]}
        print(f"  {mode:>5}: " + ", ".join(f"{k} {v[1] / 2**20:.2f}" for k, v in slopes[mode].items()))
    if "0" in slopes:
        try:
            _paper(slopes["0"]["invert"])
        except (ImportError, AttributeError) as exc:  # a version without memory_per_class
            print(f"\nno paper estimate: {exc}")


def _paper(fit: tuple[float, float]) -> None:
    """The arithmetic for the paper configuration from the unchunked (fixed, per-class) fit of the
    inversion step's peaks: per reconstruction, the per-class bytes over the images per class
    (every copy the attack holds), plus the candidates' w PPA holds per class. At this reduced
    size the evaluation's peak is set by the FID Inception batch (a constant), not by the
    reconstructions, so its slope is not extrapolated."""
    from reinv_attacks._stylegan import W_BYTES
    from reinv_attacks.ppa import PPA
    from reinv_bench.engine.chunks import AUTO_CHUNK_BYTES

    fixed, slope = fit
    chunk = max(1, AUTO_CHUNK_BYTES // PPA().memory_per_class((3, 224, 224)))
    per_class = slope / FINAL * PAPER_FINAL + PAPER_CANDIDATES * W_BYTES
    print(
        f"\npaper configuration ({PAPER_CLASSES} classes x {PAPER_FINAL} images at 224 px, "
        f"{PAPER_CANDIDATES} candidates): {slope / FINAL / 2**20:.2f} MiB per reconstruction measured "
        f"in the inversion, {PAPER_CANDIDATES * W_BYTES / 2**20:.1f} MiB of candidate w: "
        f"{per_class / 2**20:.0f} MiB per class"
    )
    for label, classes in (
        ("--class-chunk 0", PAPER_CLASSES),
        (f"--class-chunk auto ({chunk} classes)", chunk),
    ):
        print(f"  {label:>32}: inversion step {(fixed + classes * per_class) / 2**30:5.1f} GiB")
    print(f"  (fixed part measured here {fixed / 2**30:.2f} GiB; the paper's networks come on top)")


if __name__ == "__main__":
    main()
