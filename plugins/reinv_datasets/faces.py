"""The literature's face scenarios, read from the real datasets under ``--data-root`` (or
``$REINV_BENCH_DATA``). Nothing is downloaded; the layout is checked before anything trains, and
a missing or incomplete folder is a ``DataError`` naming what was expected where and what was found.

Layout under the data root (the folders torchvision, PPA and the FFHQ release use)::

    celeba/identity_CelebA.txt            CelebA identity annotations (202,599 lines)
    celeba/img_align_celeba/000001.jpg    aligned CelebA images (.jpg, or .png as PPA accepts)
    ffhq/thumbnails128x128/**/*.png       FFHQ thumbnails (70,000; 128 px)
    ffhq/images1024x1024/**/*.png         FFHQ images (70,000; 1024 px), for the 224-px protocol
    facescrub/actors/faces/NAME/*.jpg     FaceScrub cropped faces (265 actors)
    facescrub/actresses/faces/NAME/*.jpg  (265 actresses)

``celeba64`` (64-px protocol of GMI/KEDMI/PLG-MI/LOMMA): private data = the 1,000 most frequent
CelebA identities, chosen and split exactly as the seed paper's code (MIDRE_TMLR, PPA's
``datasets/celeba.py::CelebA1000``): identities ordered by image count (ties: first appearance in
``identity_CelebA.txt``), class i = the i-th most frequent, the images of those identities shuffled
with ``np.random.seed(42)`` and split 90/10 into train/test. Images: centre crop 108 of the
178x218 aligned image, resized to 64 (KEDMI/LOMMA ``dataloader.py``). Public data = every image
of the other identities (unlabelled); the official 64-px code uses a fixed 30,000-image list
(``ganset.txt``) of them instead. Attacked classes: the first 300 private identities (the
protocol's 300 target identities). Evaluation model ``ir50_112`` ("FaceNet", trained on the
private training split).

``celeba64-ffhq``: the same private data; public data = FFHQ thumbnails, centre crop 88 of 128,
resized to 64 (KEDMI ``dataloader.py``'s FFHQ setting).

``facescrub224-ffhq`` (224-px protocol of PPA, NegLS and the seed paper): FaceScrub's 530
identities (actors, then actresses, each in ``ImageFolder`` order), all images shuffled with
``np.random.seed(42)`` and split 90/10 (PPA ``datasets/facescrub.py``), resized to 224x224; public
data = FFHQ at 1024 px, centre crop 800, resized to 224 (PPA's attack transforms). Evaluation
model ``inception_v3`` (fed at 299 px). The seed paper's Random Erasing setting is defined here.

Every split's digest (a hash of the file lists and labels) is stored with every result.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np

from reinv_bench import hookimpl
from reinv_bench.api import DataError, ImageFiles, Scenario, ScenarioData, Split, TrainRecipe

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
SPLIT_SEED = 42


def _need_root(data_root: Path | None, scenario: str) -> Path:
    if data_root is None:
        raise DataError(f"scenario {scenario} reads real datasets from disk: pass --data-root DIR (or set "
                        "REINV_BENCH_DATA); the expected layout is in `reinv-bench plugins` and "
                        "plugins/reinv_datasets/faces.py")
    if not Path(data_root).is_dir():
        raise DataError(f"--data-root {data_root} is not a directory")
    return Path(data_root)


def center_crop_resize(path: str, crop: int, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3): the centred ``crop`` x ``crop`` square, resized (bilinear)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if crop:
            left, top = (w - crop) // 2, (h - crop) // 2
            im = im.crop((left, top, left + crop, top + crop))
        return np.array(im.resize((size, size), Image.BILINEAR))


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else "\n".join(p).encode())
    return h.hexdigest()[:16]


# ---- CelebA ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def celeba1000(root: str) -> tuple[list[str], np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(private files, private labels 0..999, public files, train index, test index)."""
    base = Path(root) / "celeba"
    ann, imgs = base / "identity_CelebA.txt", base / "img_align_celeba"
    if not ann.is_file() or not imgs.is_dir():
        found = sorted(p.name for p in base.iterdir())[:8] if base.is_dir() else []
        raise DataError(f"CelebA expected at {base}/ with identity_CelebA.txt and img_align_celeba/ (torchvision's "
                        f"and PPA's layout); found {len(found)} entr{'y' if len(found) == 1 else 'ies'} there"
                        f"{': ' + ', '.join(found) if found else ''}")
    names, ids = [], []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(f"{ann}:{n}: expected 'FILENAME IDENTITY', found {line[:60]!r}")
            names.append(parts[0])
            ids.append(int(parts[1]))
    ids_arr = np.array(ids)
    order = [i for i, _ in sorted(Counter(ids).items(), key=lambda kv: kv[1], reverse=True)][:1000]
    if len(order) < 1000:
        raise DataError(f"{ann} lists {len(order)} identities; celeba64 needs the 1,000 most frequent of CelebA's "
                        f"10,177 (is the file complete? it has {len(names)} lines, CelebA has 202,599)")
    present = {p.name for p in imgs.iterdir()}
    files = [n if n in present else n.replace(".jpg", ".png") for n in names]
    missing = [n for n, f in zip(names, files) if f not in present]
    if missing:
        raise DataError(f"{imgs}/ lacks {len(missing)} of the {len(names)} images identity_CelebA.txt lists "
                        f"(found {len(present)} files; first missing: {', '.join(missing[:3])})")
    mapping = {ident: c for c, ident in enumerate(order)}
    private = np.flatnonzero(np.isin(ids_arr, order))
    indices = private.copy()
    np.random.RandomState(SPLIT_SEED).shuffle(indices)
    cut = int(0.9 * len(indices))
    pub = np.flatnonzero(~np.isin(ids_arr, order))
    paths = [str(imgs / f) for f in files]
    labels = np.array([mapping[i] for i in ids_arr[indices]])
    return [paths[i] for i in indices], labels, [paths[i] for i in pub], np.arange(cut), np.arange(cut, len(indices))


def _ffhq(root: Path, folder: str, expected: int = 70_000) -> list[str]:
    base = root / "ffhq" / folder
    files = sorted(str(p) for p in base.rglob("*.png")) if base.is_dir() else []
    if not files:
        raise DataError(f"FFHQ expected at {base}/ ({expected:,} .png files, in the release's numbered subfolders); "
                        f"found {'no such folder' if not base.is_dir() else '0 .png files'}")
    return files


class _Faces(Scenario):
    protocol = "64px"
    image_shape = (3, 64, 64)
    eval_arch = "ir50_112"
    default_arch = "vgg16"
    # (epochs, batch, optimizer, lr, weight decay, milestones as fractions, gamma, augment)
    _PAPER: dict[str, TrainRecipe] = {}

    def recipe(self, role: str, budget: str, arch: str = "") -> TrainRecipe:
        key = "eval" if role == "eval" else arch if arch in self._PAPER else "default"
        paper = self._PAPER[key]
        if budget == "paper":
            return paper
        if budget == "smoke":  # one epoch, no augmentation: seconds, for tests
            return TrainRecipe(**{**paper.__dict__, "epochs": 1, "augment": ""})
        return TrainRecipe(**{**paper.__dict__, "epochs": max(1, paper.epochs // 10)})


# KEDMI/PLG-MI ``config/classify.json`` and ``train_classifier.py``: SGD momentum 0.9, weight decay
# 1e-4, batch 64; VGG16 50 epochs, lr 1e-2 x0.2 at epochs 20 and 35; IR152 40 epochs and FaceNet64
# 50 epochs, lr x0.1 every 10 epochs; the evaluation "FaceNet" 30 epochs, lr 1e-2 -> 1e-3 (15) ->
# 1e-4 (25). Training images are flipped at random (``dataloader.py``). The official targets
# start from ImageNet (VGG16) or MS-Celeb-1M (IR) weights: ``--arch "vgg16[weights=imagenet]"``.
def _sgd(epochs: int, milestones: tuple[float, ...], gamma: float = 0.1) -> TrainRecipe:
    return TrainRecipe(epochs=epochs, batch_size=64, optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=1e-4,
                       milestones=milestones, gamma=gamma, augment="flip")


_CELEBA_PAPER = {
    "vgg16": _sgd(50, (20 / 50, 35 / 50), 0.2),
    "ir152": _sgd(40, (0.25, 0.5, 0.75)),
    "facenet64": _sgd(50, (0.2, 0.4, 0.6, 0.8)),
    "eval": _sgd(30, (15 / 30, 25 / 30)),
}
_CELEBA_PAPER["default"] = _CELEBA_PAPER["vgg16"]


class CelebA64(_Faces):
    name = "celeba64"
    num_classes = eval_num_classes = 1000
    description = "CelebA 64px: 1,000 most frequent identities private (90/10), other identities public"
    _PAPER = _CELEBA_PAPER

    def target_classes(self) -> list[int]:
        return list(range(300))

    def load(self, data_root: Path | None) -> ScenarioData:
        root = _need_root(data_root, self.name)
        files, labels, public, train, test = celeba1000(str(root))
        crop = functools.partial(center_crop_resize, crop=108, size=64)
        priv = ImageFiles(files, crop, self.image_shape)
        pub, source = self.public(root, public)
        import torch

        y = torch.from_numpy(labels)
        ptrain, ptest = Split(priv[train], y[train]), Split(priv[test], y[test])
        return ScenarioData(ptrain, ptest, Split(pub, None), ptrain, ptest,
                            _digest(files, labels, list(pub.paths)), source)

    def public(self, root: Path, other_ids: list[str]) -> tuple[ImageFiles, str]:
        crop = functools.partial(center_crop_resize, crop=108, size=64)
        return ImageFiles(other_ids, crop, self.image_shape), (
            f"CelebA at {root}: 1,000 private identities; public = {len(other_ids):,} images of the other identities")


class CelebA64FFHQ(CelebA64):
    name = "celeba64-ffhq"
    description = "CelebA 64px private (1,000 identities), FFHQ thumbnails public"

    def public(self, root: Path, other_ids: list[str]) -> tuple[ImageFiles, str]:
        files = _ffhq(root, "thumbnails128x128")
        crop = functools.partial(center_crop_resize, crop=88, size=64)
        return ImageFiles(files, crop, self.image_shape), (
            f"CelebA at {root}: 1,000 private identities; public = {len(files):,} FFHQ thumbnails (of 70,000)")


# ---- FaceScrub ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def facescrub(root: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(files, labels, class names) in PPA's order: actors then actresses, ImageFolder order each."""
    base = Path(root) / "facescrub"
    files, labels, classes = [], [], []
    for group in ("actors", "actresses"):
        d = base / group / "faces"
        people = sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
        if not people:
            raise DataError(f"FaceScrub expected at {d}/ (one folder of cropped faces per person, PPA's layout); "
                            f"found {'no such folder' if not d.is_dir() else 'no person folders'}")
        for person in people:
            imgs = sorted(str(p) for p in person.rglob("*") if p.suffix.lower() in IMAGE_EXT)
            if not imgs:
                raise DataError(f"{person}/ holds no images ({', '.join(IMAGE_EXT)})")
            files += imgs
            labels += [len(classes)] * len(imgs)
            classes.append(f"{group}/{person.name}")
    return files, np.array(labels), classes


class FaceScrub224FFHQ(_Faces):
    name = "facescrub224-ffhq"
    protocol = "224px"
    image_shape = (3, 224, 224)
    num_classes = eval_num_classes = 530
    default_arch = "resnet18"
    eval_arch = "inception_v3"
    description = "FaceScrub 224px, 530 identities (90/10, seed 42), FFHQ 1024px public (crop 800 -> 224)"
    # MIDRE_TMLR ``ResNet18_FaceScrub_midre_*.yaml`` (targets) and PPA
    # ``Inception_V3_FaceScrub.yaml`` (evaluation): Adam 1e-3, batch 128, 100 epochs, lr x0.1 at
    # epochs 75 and 90 (targets) or 80 (evaluation), RandomResizedCrop/ColorJitter/flip. The
    # official models start from ImageNet weights: ``--arch "resnet18[weights=imagenet]"``.
    _PAPER = {
        "default": TrainRecipe(epochs=100, batch_size=128, lr=1e-3, milestones=(0.75, 0.9), augment="ppa"),
        "eval": TrainRecipe(epochs=100, batch_size=128, lr=1e-3, milestones=(0.8,), augment="ppa"),
    }

    def load(self, data_root: Path | None) -> ScenarioData:
        import torch

        root = _need_root(data_root, self.name)
        files, labels, classes = facescrub(str(root))
        if len(classes) != self.num_classes:
            raise DataError(f"FaceScrub at {root / 'facescrub'} has {len(classes)} identities; the protocol has 530 "
                            "(265 actors, 265 actresses)")
        idx = np.arange(len(files))
        np.random.RandomState(SPLIT_SEED).shuffle(idx)
        cut = int(0.9 * len(idx))
        priv = ImageFiles(files, functools.partial(center_crop_resize, crop=0, size=224), self.image_shape)
        y = torch.from_numpy(labels)
        train, test = idx[:cut], idx[cut:]
        ptrain, ptest = Split(priv[train], y[train]), Split(priv[test], y[test])
        pub_files = _ffhq(root, "images1024x1024")
        pub = ImageFiles(pub_files, functools.partial(center_crop_resize, crop=800, size=224), self.image_shape)
        return ScenarioData(ptrain, ptest, Split(pub, None), ptrain, ptest, _digest(files, labels[idx], pub_files),
                            f"FaceScrub at {root}: {len(files):,} images of 530 identities; "
                            f"public = {len(pub_files):,} FFHQ images (of 70,000)")


@hookimpl
def register_datasets():
    return [CelebA64(), CelebA64FFHQ(), FaceScrub224FFHQ()]
