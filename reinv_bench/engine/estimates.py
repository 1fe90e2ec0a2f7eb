"""Step costs shipped with the package: what ``run --dry-run`` estimates from where the workdir has
no timing of a step kind yet.

Each entry is (fixed seconds, seconds per *unit*) of one step kind on one device type, for one
scenario, what (the architecture trained, the prior's kind, the attack) and budget, measured by
``benchmarks/step_costs.py`` (CPU: two runs, the second with every size doubled, give the fixed
part and the slope) or taken from H200 throughput figures (CUDA: no fixed part). A step's estimate
is the fixed seconds plus the per-unit figure times the step's own size in units, so a step of
another size (more epochs, GAN steps, classes or iterations) scales:

- training steps (``eval``, ``target``, ``pretrain``): one training image for one epoch;
- ``prior``: one GAN step (its ``gan_steps`` / ``gan_iters``; a prior without either: the prior);
- ``invert``: one class for one iteration (``iters`` / ``max_iters``; an attack without either: a class);
- ``merge``: nothing (it concatenates chunks already computed).

An entry of another budget of the same key is used when the step's own budget has none, and the
estimate says so: widths differ between budgets (a smoke GAN is 8 channels wide, a paper one 64),
so such a figure is rough. Defenses are not in the key (a target under ``dpsgd`` or
``mid`` costs more than under ``none``). Where no entry matches, the estimate stays unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SOURCES = {
    "cpu": "measured on a loaded 2-core machine shared with other jobs, one torch thread, mnist at "
    "smoke (benchmarks/step_costs.py)",
    "cuda": "one NVIDIA H200, fp32, paper budget: training from the images/s of "
    "benchmarks/face_throughput.py, celeba64 priors and inversions from benchmarks/paper_memory.sh",
}

# (device, scenario, kind, what) -> {budget: (fixed seconds, seconds per unit)}
TABLE: dict[tuple[str, str, str, str], dict[str, tuple[float, float]]] = {
    # ---- cpu: benchmarks/step_costs.py --scenario mnist --budget smoke --threads 1: wall seconds on a
    # 2-core machine shared with other jobs (load average about 12 during the measurement: a process
    # had a fifth of a core or less; a dedicated core is several times faster) ----------------------
    ("cpu", "mnist", "eval", "resnet8"): {"smoke": (0, 0.0325)},
    ("cpu", "mnist", "target", "cnn"): {"smoke": (0, 0.00777)},
    ("cpu", "mnist", "prior", "gmi-gan"): {"smoke": (0, 0.226)},
    ("cpu", "mnist", "prior", "kedmi-gan"): {"smoke": (0, 1.07)},
    ("cpu", "mnist", "prior", "lomma-students"): {"smoke": (0, 96.4)},
    ("cpu", "mnist", "prior", "plgmi-cgan"): {"smoke": (4.34, 12.7)},
    ("cpu", "mnist", "invert", "brepmi"): {"smoke": (5.09, 0.0558)},
    ("cpu", "mnist", "invert", "gmi"): {"smoke": (0, 0.0206)},
    ("cpu", "mnist", "invert", "kedmi"): {"smoke": (0, 0.0274)},
    ("cpu", "mnist", "invert", "lomma"): {"smoke": (0, 0.0505)},
    ("cpu", "mnist", "invert", "plgmi"): {"smoke": (0, 0.0715)},
    # ---- cuda: H200 -------------------------------------------------------------------------------
    # training, s per image-epoch = 1 / (images/s of benchmarks/face_throughput.py at batch 64)
    ("cuda", "celeba64", "target", "vgg16"): {"paper": (0, 1 / 8972)},
    ("cuda", "celeba64", "target", "facenet64"): {"paper": (0, 1 / 3974)},
    ("cuda", "celeba64", "target", "ir152"): {"paper": (0, 1 / 1717)},
    ("cuda", "celeba64", "eval", "ir50_112"): {"paper": (0, 1 / 1915)},
    # 224 px at batch 128
    ("cuda", "facescrub224-ffhq", "target", "resnet18"): {"paper": (0, 1 / 5204)},
    ("cuda", "facescrub224-ffhq", "target", "resnet50"): {"paper": (0, 1 / 2138)},
    ("cuda", "facescrub224-ffhq", "target", "inception_resnet_v1"): {"paper": (0, 1 / 1971)},
    ("cuda", "facescrub224-ffhq", "target", "densenet121"): {"paper": (0, 1 / 1511)},
    ("cuda", "facescrub224-ffhq", "target", "resnet152"): {"paper": (0, 1 / 1004)},
    ("cuda", "facescrub224-ffhq", "eval", "inception_v3"): {"paper": (0, 1 / 1125)},
    # priors at paper width, s per GAN step (paper_memory.sh: 100 GAN steps, 20 cGAN iterations)
    ("cuda", "celeba64", "prior", "gmi-gan"): {"paper": (0, 1.9 / 100)},
    ("cuda", "celeba64", "prior", "kedmi-gan"): {"paper": (0, 4.1 / 100)},
    ("cuda", "celeba64", "prior", "plgmi-cgan"): {"paper": (0, 16.7 / 20)},
    # inversions, s per class-iteration (paper_memory.sh: one batch of 60 identities, 20 iterations)
    ("cuda", "celeba64", "invert", "gmi"): {"paper": (0, 3.8 / (60 * 20))},
    ("cuda", "celeba64", "invert", "kedmi"): {"paper": (0, 2.65 / (60 * 20))},
    ("cuda", "celeba64", "invert", "plgmi"): {"paper": (0, 15.5 / (60 * 20))},
}

TRAINING = ("eval", "target", "pretrain")
GAN_STEPS = ("gan_steps", "gan_iters")
ITERATIONS = ("iters", "max_iters")


@dataclass(frozen=True)
class Estimate:
    seconds: float
    budget: str  # the budget of the table's figure (another than the step's: a rough lower bound)


def what(step: Any) -> str:
    """The second half of a step's table key: the architecture trained, the prior's kind, the attack."""
    if step.kind in TRAINING:
        return str(step.spec["arch"])
    if step.kind == "prior":
        return str(step.spec["kind"])
    if step.kind == "invert":
        return str(step.spec["attack"]["name"])
    return ""


def _first(config: dict[str, Any], keys: tuple[str, ...]) -> float:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return 1.0


def training_images(step: Any, data: Any) -> int:
    """How many images a training step learns from in ``data`` (a ``ScenarioData``), as
    ``steps.Worker`` picks them."""
    split = {"eval": data.eval_train, "target": data.private_train}.get(step.kind, data.pretrain)
    return 0 if split is None else len(split)


def units(step: Any, data: Callable[[], Any]) -> float:
    """The step's size in its kind's unit (``data()``: the scenario's ``ScenarioData``, read only
    for a training step's images)."""
    if step.kind in TRAINING:
        return float(training_images(step, data())) * step.spec["recipe"]["epochs"]
    if step.kind == "prior":
        return _first(step.spec.get("params", {}), GAN_STEPS)
    if step.kind == "invert":
        return len(step.spec.get("classes") or ()) * _first(step.spec["attack"]["config"], ITERATIONS)
    return 0.0


def estimate(step: Any, scenario: str, budget: str, device: str, data: Callable[[], Any]) -> Estimate | None:
    """The table's estimate of ``step`` on ``device`` (cpu, cuda), or None: no figure for it."""
    if step.kind in ("merge", "pool"):  # a pool reads stored reconstructions: one target pass
        return Estimate(0.0, budget)
    figures = TABLE.get((device, scenario, step.kind, what(step)), {})
    if not figures:
        return None
    used = budget if budget in figures else next(iter(figures))
    fixed, per_unit = figures[used]
    return Estimate(fixed + per_unit * units(step, data), used)
