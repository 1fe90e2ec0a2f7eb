"""``facescrub224-ffhq`` (224-px protocol of PPA, NegLS and the seed paper): FaceScrub's 530
identities (actors, then actresses, each in ``ImageFolder`` order), all images shuffled with
``np.random.seed(42)`` and split 90/10 (PPA ``datasets/facescrub.py``), resized to 224x224; public
data = FFHQ at 1024 px, centre crop 800, resized to 224 (PPA's attack transforms). Evaluation
model ``inception_v3`` (fed at 299 px). The seed paper's Random Erasing setting is defined here.

Layout: see ``_faces.py``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from reinv_bench import hookimpl
from reinv_bench.api import DataError, ImageFiles, Problem, Reported, ScenarioData, Split, TrainRecipe

from ._faces import (
    SPLIT_SEED,
    FaceScenario,
    center_crop_resize,
    decode_problems,
    digest,
    ffhq_files,
    ffhq_problems,
    need_root,
    root_problems,
)

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's


@functools.lru_cache(maxsize=2)
def facescrub(root: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(files, labels, class names) in PPA's order: actors then actresses, ImageFolder order each."""
    base = Path(root) / "facescrub"
    files, labels, classes = [], [], []
    for group in ("actors", "actresses"):
        d = base / group / "faces"
        people = sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
        if not people:
            raise DataError(
                f"FaceScrub expected at {d}/ (one folder of cropped faces per person, PPA's layout); "
                f"found {'no such folder' if not d.is_dir() else 'no person folders'}"
            )
        for person in people:
            imgs = sorted(str(p) for p in person.rglob("*") if p.suffix.lower() in IMAGE_EXT)
            if not imgs:
                raise DataError(f"{person}/ holds no images ({', '.join(IMAGE_EXT)})")
            files += imgs
            labels += [len(classes)] * len(imgs)
            classes.append(f"{group}/{person.name}")
    return files, np.array(labels), classes


GROUPS = {"actors": 265, "actresses": 265}
FACESCRUB_GET = (
    "FaceScrub's cropped faces as facescrub/actors/faces/NAME/*.jpg and facescrub/actresses/faces/NAME/"
    "*.jpg (PPA's layout; FaceScrub's own download script meets many dead links: ask its authors)"
)


def _group_problems(base: Path, group: str, expected: int) -> tuple[list[Path], list[str], list[Problem]]:
    """(image files, person names, problems) of one group: its faces/ folder, identities, images."""
    d = base / group / "faces"
    if not d.is_dir():
        uncropped = base / group / "images"
        if uncropped.is_dir():
            return (
                [],
                [],
                [
                    Problem(
                        f"{d}/ is missing; {uncropped}/ (the uncropped images) is there",
                        f"the protocol trains on the cropped faces (PPA reads faces/): put them in {d}/",
                    )
                ],
            )
        direct = base / group
        if direct.is_dir() and any(p.is_dir() for p in direct.iterdir()):
            return (
                [],
                [],
                [
                    Problem(
                        f"{d}/ is missing; person folders are directly in {direct}/", f"move them into {d}/"
                    )
                ],
            )
        return [], [], [Problem(f"{d}/ is missing", f"get {FACESCRUB_GET}")]
    people = sorted(p for p in d.iterdir() if p.is_dir())
    out, files, empty = [], [], []
    if len(people) != expected:
        out.append(
            Problem(
                f"{d}/ has {len(people)} person folders; the protocol has {expected} {group}",
                "FaceScrub has 530 identities, 265 actors and 265 actresses: "
                f"add the missing ones ({FACESCRUB_GET})",
            )
        )
    for person in people:
        imgs = sorted(p for p in person.rglob("*") if p.suffix.lower() in IMAGE_EXT)
        if not imgs:
            empty.append(person.name)
        files += imgs
    if empty:
        out.append(
            Problem(
                f"{len(empty)} person folder(s) of {d}/ hold no image (first: {', '.join(empty[:3])})",
                f"add their faces ({', '.join(IMAGE_EXT)}); every identity of the protocol needs images",
            )
        )
    return files, [p.name for p in people], out


def facescrub_problems(root: Path, sample: int, decode: bool) -> list[Problem]:
    """Every problem of ``root/facescrub`` at once: the faces/ layout, 265 + 265 identities, an
    identity in both groups, empty identities, images that do not decode (a sample; 0: all)."""
    base = root / "facescrub"
    if not base.is_dir():
        return [Problem(f"{base}/ does not exist", f"get {FACESCRUB_GET}")]
    out, files, groups = [], [], {}
    for group, expected in GROUPS.items():
        found, names, problems = _group_problems(base, group, expected)
        out += problems
        files += found
        for name in names:
            groups.setdefault(name.lower(), []).append(group)
    both = sorted(n for n, g in groups.items() if len(g) > 1)
    if both:
        out.append(
            Problem(
                f"{len(both)} identit{'y is' if len(both) == 1 else 'ies are'} in both actors/ and "
                f"actresses/ (first: {', '.join(both[:3])}): one person would be two classes",
                "keep each person in one group: remove the duplicate folder",
                error=False,
            )
        )
    if decode:
        out += decode_problems([str(f) for f in files], sample)
    return out


# Published numbers (``leaderboard --reported``), only those with a verified source (METHODS.md section 7).
_ALIGNMI = "AlignMI (Peng et al., NeurIPS 2025)"
_PPA_SETTING = (
    "224 px, PPA with the FFHQ StyleGAN2-ADA, final selection omitted, 100 classes, mean of 3 runs, "
    "Inception-v3 evaluation model"
)


# the attack's setting (AlignMI high_resolution/configs/attacking/*_SG1024.yaml: num_candidates 100,
# targets 0-100 = classes 0-99, final selection omitted or keeping 100 of 100; Inception-v3
# evaluation model)
_PPA_ATTACKED = {
    "classes": 100,
    "class_ids": "0-99",
    "per_class": 100,
    "selection": "none",
    "eval_arch": "inception_v3",
}
# {CelebA,FaceScrub}_{ResNet18,DenseNet121}_SG1024.yaml: Adam lr 0.005, num_epochs 70 (PPA's own
# FaceScrub configs: 50). No config of the ResNet-152 (Table 8) runs is released: not stated there.
_PPA_70 = {"optimizer": "adam", "iterations": 70}


def _ppa(a1: float, a5: float, face: float) -> dict[str, float]:
    return {"attack_acc": a1 / 100, "attack_acc5": a5 / 100, "facenet_dist": face}


FACESCRUB224_REPORTED = (
    Reported(
        paper=_ALIGNMI,
        setting=f"FaceScrub {_PPA_SETTING}; ResNet-18",
        metrics=_ppa(81.57, 94.85, 0.796),
        source="AlignMI paper (code: AlanPeng0897/AlignMI)",
        scenario="facescrub224-ffhq",
        arch="resnet18",
        attack="ppa",
        **_PPA_ATTACKED,
        **_PPA_70,
    ),
    Reported(
        paper=_ALIGNMI,
        setting=f"FaceScrub {_PPA_SETTING}; DenseNet-121",
        metrics=_ppa(75.66, 90.91, 0.786),
        source="AlignMI paper (code: AlanPeng0897/AlignMI)",
        scenario="facescrub224-ffhq",
        arch="densenet121",
        attack="ppa",
        **_PPA_ATTACKED,
        **_PPA_70,
    ),
    *(
        Reported(
            paper=_ALIGNMI,
            table="Table 8",
            setting=f"FaceScrub {_PPA_SETTING}; ResNet-152, {what} (defense hyperparameters as AlignMI's)",
            metrics=_ppa(*values),
            source="AlignMI paper, Table 8",
            scenario="facescrub224-ffhq",
            arch="resnet152",
            attack="ppa",
            **_PPA_ATTACKED,
            defense=defense,
        )
        for defense, what, values in (
            ("none", "no defense", (57.89, 81.25, 0.893)),
            ("bido", "BiDO-HSIC", (35.11, 59.14, 1.031)),
            ("negls", "NegLS", (8.40, 23.50, 1.309)),
            ("tl", "TL-DMI", (25.14, 51.72, 1.026)),
        )
    ),
    Reported(
        paper=_ALIGNMI,
        setting=f"CelebA {_PPA_SETTING} (no CelebA 224-px scenario here); ResNet-18",
        metrics=_ppa(85.63, 95.12, 0.693),
        source="AlignMI paper (code: AlanPeng0897/AlignMI)",
        arch="resnet18",
        attack="ppa",
        **_PPA_ATTACKED,
        **_PPA_70,
    ),
    Reported(
        paper=_ALIGNMI,
        setting=f"CelebA {_PPA_SETTING} (no CelebA 224-px scenario here); DenseNet-121",
        metrics=_ppa(82.22, 93.26, 0.708),
        source="AlignMI paper (code: AlanPeng0897/AlignMI)",
        arch="densenet121",
        attack="ppa",
        **_PPA_ATTACKED,
        **_PPA_70,
    ),
    Reported(
        paper="MIDRE (TMLR 2025), released checkpoint",
        setting="FaceScrub 224 px, the seed paper's released "
        "ResNet-18: *training* accuracy (no validation split; no natural accuracy is published with it)",
        metrics={"train_acc": 0.9981},
        source="checkpoint file name Classifier_0.9981_no_val.pth (MIDRE_TMLR GitHub releases)",
        arch="resnet18",
        defense="",
    ),  # defense: as released (not stated)
)


class FaceScrub224FFHQ(FaceScenario):
    name = "facescrub224-ffhq"
    protocol = "224px"
    image_shape = (3, 224, 224)
    num_classes = eval_num_classes = 530
    default_arch = "resnet18"
    eval_arch = "inception_v3"
    description = "FaceScrub 224px, 530 identities (90/10, seed 42), FFHQ 1024px public (crop 800 -> 224)"
    # the protocol card's text (``reinv-bench protocol facescrub224-ffhq``)
    splits = (
        f"FaceScrub's 530 identities (265 actors, then 265 actresses, each in ImageFolder order); all images "
        f"shuffled with np.random.RandomState({SPLIT_SEED}) and split 90/10 into train/test (PPA "
        "datasets/facescrub.py), resized to 224x224"
    )
    public_data = (
        "FFHQ at 1024 px (70,000), centre crop 800, resized to 224 (PPA's attack transforms), unlabelled"
    )
    eval_model = (
        "Inception-v3 fed at 299 px, trained on the private training split and tested on the private "
        "test split; PPA's starts from ImageNet weights (Inception_V3_FaceScrub.yaml: pretrained, 100 "
        "epochs, Adam 1e-3, lr x0.1 at epoch 80)"
    )
    samples = (
        "every identity attacked; PPA's protocol optimises 200 candidates and keeps 50 per class after a "
        "final selection (the seed paper's config: 16 and 8); the attacks here make their own count per "
        "class and every reconstruction an attack returns is evaluated (what it selects: 'selection')"
    )
    reported = FACESCRUB224_REPORTED
    # MIDRE_TMLR ``ResNet18_FaceScrub_midre_*.yaml`` (targets) and PPA
    # ``Inception_V3_FaceScrub.yaml`` (evaluation): Adam 1e-3, batch 128, 100 epochs, lr x0.1 at
    # epochs 75 and 90 (targets) or 80 (evaluation), RandomResizedCrop/ColorJitter/flip. The
    # official models start from ImageNet weights: ``--arch "resnet18[weights=imagenet]"``.
    _PAPER = {
        "default": TrainRecipe(epochs=100, batch_size=128, lr=1e-3, milestones=(0.75, 0.9), augment="ppa"),
        "eval": TrainRecipe(epochs=100, batch_size=128, lr=1e-3, milestones=(0.8,), augment="ppa"),
    }

    def check(self, data_root: Path | None, sample: int = 1000, decode: bool = True) -> list[Problem]:
        out = root_problems(data_root, self.name)
        if out:
            return out
        root = Path(data_root)
        out = facescrub_problems(root, sample, decode) + ffhq_problems(
            root, "images1024x1024", sample, decode
        )
        if any(p.error for p in out):
            return out
        return out + super().check(data_root, sample, decode=False)

    def class_names(self, data_root: Path | None) -> list[str]:
        """Class i = the i-th person folder: actors then actresses, ImageFolder order each."""
        return facescrub(str(need_root(data_root, self.name)))[2]

    def load(self, data_root: Path | None) -> ScenarioData:
        import torch

        root = need_root(data_root, self.name)
        files, labels, classes = facescrub(str(root))
        if len(classes) != self.num_classes:
            raise DataError(
                f"FaceScrub at {root / 'facescrub'} has {len(classes)} identities; the protocol has 530 "
                "(265 actors, 265 actresses)"
            )
        idx = np.arange(len(files))
        np.random.RandomState(SPLIT_SEED).shuffle(idx)
        cut = int(0.9 * len(idx))
        priv = ImageFiles(files, functools.partial(center_crop_resize, crop=0, size=224), self.image_shape)
        y = torch.from_numpy(labels)
        train, test = idx[:cut], idx[cut:]
        ptrain, ptest = Split(priv[train], y[train]), Split(priv[test], y[test])
        pub_files = ffhq_files(root, "images1024x1024")
        pub = ImageFiles(
            pub_files, functools.partial(center_crop_resize, crop=800, size=224), self.image_shape
        )
        return ScenarioData(
            ptrain,
            ptest,
            Split(pub, None),
            ptrain,
            ptest,
            digest(files, labels[idx], pub_files),
            f"FaceScrub at {root}: {len(files):,} images of 530 identities; "
            f"public = {len(pub_files):,} FFHQ images (of 70,000)",
        )


@hookimpl
def register_datasets():
    return [FaceScrub224FFHQ()]
