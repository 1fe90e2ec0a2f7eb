"""The GPU figures of issue 22, in one run (``benchmarks/gpu_check.sh`` calls this): PPA seconds per
class and peak GiB at the ``midre`` and ``ppa`` configurations, fp32 and bf16, through the harness
(``reinv_bench.run``) on the fake FaceScrub tree of ``reinv_bench.testing`` with a random-weight
1024-px StyleGAN2 generator of ``ffhq.pkl``'s architecture; and IR152 training images/s at batch 64
(64 px, 1,000 classes, ``train_classifier``) under fp32, bf16 and bf16 with ``torch.compile``.
Prints figures; asserts nothing.

PPA attacks the first ``GPU_CHECK_CLASSES`` (1) identities of the protocol (a scenario
``facescrub224-ffhq-firstN`` that differs from ``facescrub224-ffhq`` only there), with the
configuration's own search, candidates, iterations and final selection; the targets and the
evaluation model train one epoch (their figures are not the point). A class's seconds leave out
the candidate search, which runs once per inversion whatever the number of classes; the line
says both, and what 530 classes would take. Peak GiB is the inversion step's ``peak_gib`` (the
harness's own measure, CUDA only).

``GPU_CHECK_TOY=1``: the same path at toy sizes, for a CPU test (a 16-px generator, a one-layer
target and evaluator trained on 32 images, a few latents and iterations, the same one-layer net in
IR152's place on 2 batches of 2, the ``eager`` compile backend): its figures say nothing about a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import reinv_bench
from reinv_bench import hookimpl
from reinv_bench.api import Architecture, Classifier, Defense
from reinv_bench.contract.data import Split
from reinv_bench.engine.artifacts import Artifacts
from reinv_bench.engine.runner import describe_device, resolve_device
from reinv_bench.engine.train import train_classifier
from reinv_bench.registry.lookup import load
from reinv_bench.testing import make_facescrub, make_ffhq

TOY = os.environ.get("GPU_CHECK_TOY", "") not in ("", "0")
CLASSES = int(os.environ.get("GPU_CHECK_CLASSES", "1"))
FACESCRUB_IDS = 530
# (label, ppa spec) at full size; toy: the same configurations with a few latents and iterations
PPA = [("midre", "ppa[config=midre]"), ("ppa", "ppa[config=ppa]")]
TOY_PPA = "search=4,candidates=2,final=1,epochs=2,final_iters=1"


def first_classes_plugin(base):
    """A plugin registering ``base`` (the facescrub224-ffhq scenario) attacked on its first classes."""

    class First(type(base)):
        name = f"{base.name}-first{CLASSES}"

        def target_classes(self):
            return list(range(CLASSES))

        def load(self, data_root):
            data = super().load(data_root)
            if not TOY:
                return data
            # toy: the first 32 images of each split (a CNN at 224 px on a loaded CPU costs minutes)
            few = {
                f.name: Split(getattr(data, f.name).x[:32], getattr(data, f.name).y[:32])
                for f in dataclasses.fields(data)
                if isinstance(getattr(data, f.name), Split) and getattr(data, f.name).y is not None
            }
            return dataclasses.replace(data, **few, digest=data.digest + "-toy")

    class Plugin:
        @hookimpl
        def register_datasets(self):
            return [First()]

        @hookimpl
        def register_architectures(self):
            return [ToyNet()] if TOY else []

    return Plugin(), First.name


class ToyNet(Architecture):
    """Toy target and evaluator: one strided convolution and a linear feature (cheap at 224 px)."""

    name = "gpu-check-toy"

    def build(self, num_classes, image_shape):
        blocks = [
            torch.nn.Sequential(torch.nn.Conv2d(image_shape[0], 8, 3, stride=4, padding=1), torch.nn.ReLU()),
            torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 32)),
        ]
        return Classifier(blocks, torch.nn.Linear(32, num_classes), 32, num_classes, freeze_point=1)


def generator():
    """A random-weight generator of ffhq.pkl's architecture (1024 px, 512-d z and w, 8 mapping layers,
    channel base 32768, max 512, fp16 at the 4 highest resolutions, conv clamp 256); toy: 16 px."""
    from reinv_attacks._stylegan2_net import Generator

    torch.manual_seed(0)
    if TOY:
        return Generator(16, 0, 16, 16, 3, {"num_layers": 2}, {"channel_base": 128, "channel_max": 16})
    syn = {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256}
    return Generator(512, 0, 512, 1024, 3, {"num_layers": 8}, syn)


def ppa_figures(dev: torch.device, work: Path) -> None:
    from reinv_attacks._stylegan2_load import save_generator

    root, weights = work / "data", work / "weights"
    make_facescrub(root, per_person=2 if TOY else 3)
    make_ffhq(root, "images1024x1024", 2, 64 if TOY else 1024)
    weights.mkdir()
    save_generator(generator(), weights / "stylegan2-ffhq.pt")
    os.environ["REINV_BENCH_WEIGHTS"] = str(weights)
    registry = load()
    plugin, scenario = first_classes_plugin(registry.get("scenario", "facescrub224-ffhq"))
    registry = load(extra=(plugin,))
    arch = {"archs": [ToyNet.name], "eval_arch": ToyNet.name} if TOY else {}
    side = 16 if TOY else 1024
    print(
        f"PPA, fake FaceScrub tree, first {CLASSES} of {FACESCRUB_IDS} identities, random {side}-px generator"
    )
    for precision in ("fp32", "bf16"):
        for label, spec in PPA:
            spec = spec[:-1] + "," + TOY_PPA + "]" if TOY else spec
            res = reinv_bench.run(
                attacks=[spec],
                defenses=["none"],
                scenarios=[scenario],
                budget="paper",
                baseline=False,
                metrics=["attack_acc"],
                data_root=str(root),
                recipes={"target": {"epochs": 1}, "eval": {"epochs": 1}},
                registry=registry,
                workdir=work / "runs",
                device=dev,
                precision=precision,
                **arch,
            )
            if res.summary.failed:
                print(f"ppa {label:5s} {precision}: FAILED {res.summary.failed[0]['error']}", flush=True)
                continue
            art = Artifacts(work / "runs")
            (key,) = [k for k, s in res.plan.steps.items() if s.kind == "invert"]
            meta, info = art.record(key)["meta"], art.load(key)["info"]
            info = info["chunks"][0] if "chunks" in info else info  # (one chunk: no --class-chunk here)
            search, total = info["seconds_search"], info["seconds_per_class"] * CLASSES
            per_class, peak = (total - search) / CLASSES, meta.get("peak_gib")
            print(
                f"ppa {label:5s} {precision}: {per_class:.2f} s per class (search {search:.1f} s once; "
                f"{CLASSES} class(es) {total:.1f} s; {FACESCRUB_IDS} classes ~"
                f"{(search + per_class * FACESCRUB_IDS) / 3600:.2f} h), peak "
                + (f"{peak:.2f} GiB" if peak is not None else "n/a (not CUDA)"),
                flush=True,
            )


def ir152_rate(reg, dev: torch.device, precision: str, compiled: bool) -> tuple[float, float]:
    """IR152 training images/s through ``train_classifier`` at the celeba64 paper recipe and batch 64
    (toy: 2), second of two epochs (the first: warm-up, compilation), and peak GiB."""
    shape, classes = (3, 64, 64), 1000
    batch, batches = (2, 2) if TOY else (64, 40)
    recipe = reg.get("scenario", "celeba64").recipe("target", "paper", "ir152")
    recipe = dataclasses.replace(recipe, epochs=1, batch_size=batch)
    g = torch.Generator().manual_seed(0)
    n = batch * batches
    data = Split(torch.rand(n, *shape, generator=g) * 2 - 1, torch.randint(0, classes, (n,), generator=g))
    defense = Defense()
    net = ToyNet() if TOY else reg.get("architecture", "ir152")
    model = defense.wrap_model(net.build(classes, shape))
    if compiled:
        model.compile(backend="eager" if TOY else "inductor")  # in place: still the harness's Classifier
    kw = {"device": dev, "seed": 0, "precision": precision}
    train_classifier(model, data, recipe, defense, **kw)  # warm-up: compilation, autotuning
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    train_classifier(model, data, recipe, defense, **kw)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else math.nan
    return n / (time.perf_counter() - t0), peak


def ir152_figures(dev: torch.device) -> None:
    reg = load()
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    net = ToyNet.name if TOY else "ir152"  # toy: a one-layer net stands in for IR152 (minutes on a CPU)
    print(f"{net} training, 64 px, 1,000 classes, batch {2 if TOY else 64} (train_classifier)")
    base = None
    for precision, compiled in (("fp32", False), ("bf16", False), ("bf16", True)):
        label = precision + (" + torch.compile" if compiled else "")
        try:
            rate, peak = ir152_rate(reg, dev, precision, compiled)
        except Exception as exc:  # noqa: BLE001 - a figure that cannot be measured says why
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            print(f"{net} {label}: not measured ({why})", flush=True)
            continue
        base = base or rate
        print(f"{net} {label}: {rate:.1f} img/s ({rate / base:.2f}x fp32), peak {peak:.2f} GiB", flush=True)


def main() -> None:
    from reinv_bench.contract.weights import UnverifiedWeightsWarning

    warnings.simplefilter("ignore", UnverifiedWeightsWarning)  # the random generator has no published hash
    dev = resolve_device(os.environ.get("GPU_CHECK_DEVICE", "auto"))
    toy = " (TOY sizes: no GPU figure)" if TOY else ""
    print(f"gpu_check: device {describe_device(dev)}, torch {torch.__version__}{toy}", flush=True)
    if dev.type != "cuda":
        print("gpu_check: not a GPU: these figures say nothing about one", file=sys.stderr)
    with tempfile.TemporaryDirectory() as work:
        ppa_figures(dev, Path(work))
    ir152_figures(dev)


if __name__ == "__main__":
    main()
