"""``celeba64`` (64-px protocol of GMI/KEDMI/PLG-MI/LOMMA): private data = the 1,000 most frequent
CelebA identities, chosen and split exactly as the seed paper's code (MIDRE_TMLR, PPA's
``datasets/celeba.py::CelebA1000``): identities ordered by image count (ties: first appearance in
``identity_CelebA.txt``), class i = the i-th most frequent, the images of those identities shuffled
with ``np.random.seed(42)`` and split 90/10 into train/test. Images: centre crop 108 of the
178x218 aligned image, resized to 64 (KEDMI/LOMMA ``dataloader.py``). Public data (unlabelled,
for every attack's priors: the GANs, PLG-MI's top-n, LOMMA's students): every image of the other
identities, or the official 64-px code's fixed 30,000-image list when the user gives it (PLG-MI
``data_files/celeba_ganset.txt``; KEDMI/LOMMA ``ganset.txt``): ``$REINV_BENCH_CELEBA_GANSET``
names the file, else ``DATA_ROOT/celeba/celeba_ganset.txt`` is used if it exists. One image name
of ``img_align_celeba/`` per line (a second column, a label, is ignored; ``.jpg`` names also find
``.png`` files), in the list's order; a listed image of a private identity (the official code's
private identities are chosen differently) is left out and counted in the data source line; an
unknown name is a ``DataError``. The list's images enter the data digest, so results with and
without it are never mixed. Attacked classes: the first 300 private identities (the protocol's
300 target identities). Evaluation model ``ir50_112`` ("FaceNet", trained on the private
training split).

``celeba64-ffhq``: the same private data; public data = FFHQ thumbnails, centre crop 88 of 128,
resized to 64 (KEDMI ``dataloader.py``'s FFHQ setting).

Layout: see ``_faces.py``.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
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


@functools.lru_cache(maxsize=2)
def celeba1000(root: str) -> tuple[list[str], np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(private files, private labels 0..999, public files, train index, test index)."""
    base = Path(root) / "celeba"
    ann, imgs = base / "identity_CelebA.txt", base / "img_align_celeba"
    if not ann.is_file() or not imgs.is_dir():
        found = sorted(p.name for p in base.iterdir())[:8] if base.is_dir() else []
        raise DataError(
            f"CelebA expected at {base}/ with identity_CelebA.txt and img_align_celeba/ (torchvision's "
            f"and PPA's layout); found {len(found)} entr{'y' if len(found) == 1 else 'ies'} there"
            f"{': ' + ', '.join(found) if found else ''}"
        )
    names, ids = [], []
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(f"{ann}:{n}: expected 'FILENAME IDENTITY', found {line[:60]!r}")
            names.append(parts[0])
            ids.append(int(parts[1]))
    ids_arr = np.array(ids)
    order = top_identities(ids)
    if len(order) < 1000:
        raise DataError(
            f"{ann} lists {len(order)} identities; celeba64 needs the 1,000 most frequent of CelebA's "
            f"10,177 (is the file complete? it has {len(names)} lines, CelebA has 202,599)"
        )
    present = {p.name for p in imgs.iterdir()}
    files = [n if n in present else n.replace(".jpg", ".png") for n in names]
    missing = [n for n, f in zip(names, files) if f not in present]
    if missing:
        raise DataError(
            f"{imgs}/ lacks {len(missing)} of the {len(names)} images identity_CelebA.txt lists "
            f"(found {len(present)} files; first missing: {', '.join(missing[:3])})"
        )
    mapping = {ident: c for c, ident in enumerate(order)}
    private = np.flatnonzero(np.isin(ids_arr, order))
    indices = private.copy()
    np.random.RandomState(SPLIT_SEED).shuffle(indices)
    cut = int(0.9 * len(indices))
    pub = np.flatnonzero(~np.isin(ids_arr, order))
    paths = [str(imgs / f) for f in files]
    labels = np.array([mapping[i] for i in ids_arr[indices]])
    return (
        [paths[i] for i in indices],
        labels,
        [paths[i] for i in pub],
        np.arange(cut),
        np.arange(cut, len(indices)),
    )


def top_identities(ids: list[int]) -> list[int]:
    """The 1,000 most frequent identities, most frequent first (ties: first appearance)."""
    return [i for i, _ in sorted(Counter(ids).items(), key=lambda kv: kv[1], reverse=True)][:1000]


@functools.lru_cache(maxsize=2)
def identity_order(root: str) -> list[int]:
    """The CelebA identity number of each class of celeba64, class 0 first."""
    ann = Path(root) / "celeba" / "identity_CelebA.txt"
    return top_identities([int(line.split()[1]) for line in ann.read_text().splitlines() if line.strip()])


GANSET_ENV = "REINV_BENCH_CELEBA_GANSET"


def ganset_file(root: Path) -> Path | None:
    """The official GAN-set list to use: ``$REINV_BENCH_CELEBA_GANSET``, else
    ``ROOT/celeba/celeba_ganset.txt`` if it exists, else None (all other identities)."""
    if os.environ.get(GANSET_ENV):
        path = Path(os.environ[GANSET_ENV]).expanduser()
        if not path.is_file():
            raise DataError(
                f"${GANSET_ENV} names {path}, which is not a file (a list of CelebA image names, one "
                "per line, e.g. PLG-MI's data_files/celeba_ganset.txt)"
            )
        return path
    path = root / "celeba" / "celeba_ganset.txt"
    return path if path.is_file() else None


def read_ganset(path: Path, public: list[str], private: list[str]) -> tuple[list[str], int]:
    """The public image files ``path`` lists, in its order, and how many listed images are of
    private identities (left out). A name matches its file with either extension."""
    by_stem = {Path(f).stem: f for f in public}
    private_stems = {Path(f).stem for f in private}
    files, left_out, unknown = [], 0, []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stem = Path(line.split()[0]).stem
        if stem in by_stem:
            files.append(by_stem[stem])
        elif stem in private_stems:
            left_out += 1
        else:
            unknown.append(line.split()[0])
    if unknown:
        raise DataError(
            f"{path} lists {len(unknown):,} image(s) that identity_CelebA.txt and img_align_celeba/ do "
            f"not have (first: {', '.join(unknown[:3])})"
        )
    if not files:
        raise DataError(f"{path} lists no public CelebA image (one image name per line, e.g. 000001.jpg)")
    return files, left_out


# ---- the data doctor (``reinv-bench data check celeba64``) --------------------------------------

IMAGE_EXT = (".jpg", ".jpeg", ".png")
CELEBA_GET = (
    "CelebA's aligned images (Img/img_align_celeba.zip) and Anno/identity_CelebA.txt from the CelebA "
    "site (torchvision's downloader often fails on Google Drive quotas)"
)
CELEBA_LINES, CELEBA_IDENTITIES = 202_599, 10_177


def _first(values: list, n: int = 3) -> str:
    return ", ".join(map(str, values[:n])) + (", ..." if len(values) > n else "")


def _annotations(ann: Path) -> tuple[list[str], list[int], list[Problem]]:
    """(image names, identities, problems) of identity_CelebA.txt: every malformed or repeated line."""
    names, ids, bad, twice, seen = [], [], [], [], set()
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            bad.append(n)
        elif parts[0] in seen:
            twice.append(parts[0])
        else:
            seen.add(parts[0])
            names.append(parts[0])
            ids.append(int(parts[1]))
    again = f"get {ann.name} again (CelebA's Anno/ folder: {CELEBA_LINES:,} lines of 'NNNNNN.jpg IDENTITY')"
    out = []
    if bad:
        out.append(
            Problem(
                f"{ann}: {len(bad)} malformed line(s) (line {_first(bad)}; expected 'FILENAME IDENTITY')",
                again,
            )
        )
    if twice:
        out.append(Problem(f"{ann}: {len(twice)} image(s) listed twice (first: {_first(twice)})", again))
    n_ids = len(set(ids))
    if n_ids < 1000:
        out.append(
            Problem(
                f"{ann} lists {n_ids:,} identities; celeba64 needs the 1,000 most frequent of CelebA's "
                f"{CELEBA_IDENTITIES:,}",
                again,
            )
        )
    elif not bad and (len(names) != CELEBA_LINES or n_ids != CELEBA_IDENTITIES):
        out.append(
            Problem(
                f"{ann} lists {len(names):,} images of {n_ids:,} identities; CelebA has {CELEBA_LINES:,} "
                f"of {CELEBA_IDENTITIES:,}: the 1,000 most frequent identities may not be the papers'",
                f"use the complete, unmodified {ann.name} to match the published protocol",
                error=False,
            )
        )
    return names, ids, out


def _layout_problems(base: Path) -> list[Problem]:
    """The two things CelebA needs under ``base``, and where they often are instead."""
    ann, imgs, out = base / "identity_CelebA.txt", base / "img_align_celeba", []
    if not ann.is_file():
        elsewhere = [p for p in (base / "Anno" / ann.name, base.parent / ann.name) if p.is_file()]
        out.append(
            Problem(
                f"{ann} is missing (the identity of each image)",
                f"move {elsewhere[0]} to {ann}"
                if elsewhere
                else f"get {CELEBA_GET}; put {ann.name} at {ann}",
            )
        )
    if not imgs.is_dir():
        zipped = [
            p for p in (base / "img_align_celeba.zip", base / "Img" / "img_align_celeba.zip") if p.is_file()
        ]
        out.append(
            Problem(
                f"{imgs}/ is missing (the aligned images)",
                f"unzip {zipped[0]} into {base}/"
                if zipped
                else f"get {CELEBA_GET}; unzip the images as {imgs}/",
            )
        )
    elif (imgs / imgs.name).is_dir():
        out.append(
            Problem(
                f"{imgs}/ holds another {imgs.name}/ folder",
                f"move the images of {imgs / imgs.name}/ up into {imgs}/",
            )
        )
    return out


def celeba_problems(root: Path, sample: int, decode: bool) -> list[Problem]:
    """Every problem of ``root/celeba`` at once: layout, identity file, images listed and present,
    images that do not decode (a sample of ``sample``; 0: all)."""
    base = root / "celeba"
    if not base.is_dir():
        return [
            Problem(
                f"{base}/ does not exist",
                f"get {CELEBA_GET}; put them at {base}/identity_CelebA.txt and {base}/img_align_celeba/",
            )
        ]
    ann, imgs = base / "identity_CelebA.txt", base / "img_align_celeba"
    out = _layout_problems(base)
    names, _, found = _annotations(ann) if ann.is_file() else ([], [], [])
    out += found
    if names and imgs.is_dir():
        present = set(os.listdir(imgs))
        files = [n if n in present else n.replace(".jpg", ".png") for n in names]
        missing = [n for n, f in zip(names, files) if f not in present]
        if missing:
            out.append(
                Problem(
                    f"{imgs}/ lacks {len(missing):,} of the {len(names):,} images {ann.name} lists (first: "
                    f"{_first(missing)})",
                    f"extract img_align_celeba.zip again into {base}/ (a partial "
                    "copy or an interrupted unzip leaves files out)",
                )
            )
        listed = set(files)
        unlisted = sorted(f for f in present if f not in listed and f.lower().endswith(IMAGE_EXT))
        if unlisted:
            out.append(
                Problem(
                    f"{imgs}/ holds {len(unlisted):,} image(s) {ann.name} does not list (first: "
                    f"{_first(unlisted)}): they are not used",
                    f"remove them, or check {ann.name} is the list of these images",
                    error=False,
                )
            )
        if decode:
            out += decode_problems([str(imgs / f) for f in files if f in present], sample)
    return out


def ganset_problems(root: Path, layout_ok: bool = True) -> list[Problem]:
    """The official GAN-set list: named but absent, unreadable (read only when the identity file
    and images are sound: ``layout_ok``), or not given (a warning: the public data is then every
    other identity, not the official 64-px code's list)."""
    official = (
        "the official list unchanged (PLG-MI data_files/celeba_ganset.txt, KEDMI/LOMMA ganset.txt): "
        "one CelebA image name per line"
    )
    try:
        listed = ganset_file(root)
    except DataError as exc:
        return [Problem(str(exc), f"unset ${GANSET_ENV}, or name {official}")]
    if listed is None:
        return [
            Problem(
                f"no official GAN-set list (${GANSET_ENV} unset, "
                f"no {root / 'celeba' / 'celeba_ganset.txt'}): "
                "public data = every image of the other identities, not the 64-px papers' 30,000",
                f"to match them, put {official}, at {root / 'celeba' / 'celeba_ganset.txt'}",
                error=False,
            )
        ]
    if not layout_ok:
        return []
    files, _, public, *_ = celeba1000(str(root))
    try:
        read_ganset(listed, public, files)
    except DataError as exc:
        return [Problem(str(exc), f"use {official}")]
    return []


# KEDMI/PLG-MI ``config/classify.json`` and ``train_classifier.py``: SGD momentum 0.9, weight decay
# 1e-4, batch 64; VGG16 50 epochs, lr 1e-2 x0.2 at epochs 20 and 35; IR152 40 epochs and FaceNet64
# 50 epochs, lr x0.1 every 10 epochs; the evaluation "FaceNet" 30 epochs, lr 1e-2 -> 1e-3 (15) ->
# 1e-4 (25). Training images are flipped at random (``dataloader.py``). The official targets
# start from ImageNet (VGG16) or MS-Celeb-1M (IR) weights: ``--arch "vgg16[weights=imagenet]"``.
def _sgd(epochs: int, milestones: tuple[float, ...], gamma: float = 0.1) -> TrainRecipe:
    return TrainRecipe(
        epochs=epochs,
        batch_size=64,
        optimizer="sgd",
        lr=1e-2,
        momentum=0.9,
        weight_decay=1e-4,
        milestones=milestones,
        gamma=gamma,
        augment="flip",
    )


_CELEBA_PAPER = {
    "vgg16": _sgd(50, (20 / 50, 35 / 50), 0.2),
    "ir152": _sgd(40, (0.25, 0.5, 0.75)),
    "facenet64": _sgd(50, (0.2, 0.4, 0.6, 0.8)),
    "eval": _sgd(30, (15 / 30, 25 / 30)),
}
_CELEBA_PAPER["default"] = _CELEBA_PAPER["vgg16"]

# Published numbers (``leaderboard --reported``), only those with a verified source (METHODS.md section 7).
_CKPT = "official 64-px checkpoint (KEDMI / PLG-MI / LOMMA releases)"
_CKPT_SETTING = (
    "CelebA 64 px, 1,000 private identities, no defense: natural accuracy of the released checkpoint"
)
_DEFEND_MI = "BiDO (Peng et al., KDD 2022), official repository Defend_MI"
_ALIGNMI = "AlignMI (Peng et al., NeurIPS 2025)"
_ALIGNMI_64 = (
    "CelebA 64 px, first 100 private classes, 100 samples per class, evaluation model face.evoLVe "
    "IR-50 (95.88%)"
)
_ALIGNMI_SRC = "AlignMI paper, baseline rows (code: AlanPeng0897/AlignMI)"


# the attacks' setting (AlignMI low_resolution/configs/attacking/*.yaml: targets 0-100, i.e.
# range(0, 100) in create_target_vector, num_candidates 100, every one evaluated; evaluation model
# FaceNet_95.88.tar, IR-50 at 112 px)
_ALIGNMI_64_ATTACKED = {
    "classes": 100,
    "class_ids": "0-99",
    "per_class": 100,
    "selection": "none",
    "eval_arch": "ir50_112",
}
# its KEDMI(LOMMA) baseline (ked_dcgan-celeba_vgg16-*.yaml): SGD lr 0.01 momentum 0.9,
# num_iterations "200 for baseline and TAA"; here: lomma[iters=200]+kedmi[optimizer=sgd,lr=0.01,
# std_offset=5,clamp=1] (align's docstring). Its PLG-MI rows come from no config in that repository:
# optimiser and iterations not stated.
_ALIGNMI_KEDMI = {"optimizer": "sgd", "iterations": 200}
# the released checkpoints keep the best test epoch (file names carry that accuracy)
_BEST = {"select": "best_test"}


def _acc(a1: float, a5: float, knn: float) -> dict[str, float]:
    return {"attack_acc": a1 / 100, "attack_acc5": a5 / 100, "knn_dist": knn}


CELEBA64_REPORTED = (
    Reported(
        paper=_CKPT,
        setting=_CKPT_SETTING,
        metrics={"natural_acc": 0.8826},
        source="VGG16_88.26.tar",
        **_BEST,
        scenario="celeba64",
        arch="vgg16",
    ),
    Reported(
        paper=_CKPT,
        setting=_CKPT_SETTING,
        metrics={"natural_acc": 0.9116},
        source="IR152_91.16.tar",
        **_BEST,
        scenario="celeba64",
        arch="ir152",
    ),
    Reported(
        paper=_CKPT,
        setting=_CKPT_SETTING,
        metrics={"natural_acc": 0.8850},
        source="FaceNet64_88.50.tar",
        **_BEST,
        scenario="celeba64",
        arch="facenet64",
    ),
    Reported(
        paper=_CKPT,
        setting="CelebA 64 px, 1,000 private identities: the evaluation model 'FaceNet' "
        "(face.evoLVe IR-50 at 112 px), accuracy on the private test split",
        metrics={"natural_acc": 0.9588},
        source="FaceNet_95.88.tar",
        **_BEST,
        scenario="celeba64",
        arch="ir50_112",
    ),
    *(
        Reported(
            paper=_DEFEND_MI,
            setting=f"CelebA 64 px, 1,000 private identities, VGG16 with MID (VIB), beta {b}",
            metrics={"natural_acc": acc},
            source="Defend_MI DMI/k+1_gan_vib.py (comments)",
            scenario="celeba64",
            arch="vgg16",
            defense=f"mid[beta={b}]",
        )
        for b, acc in ((0.003, 0.7982), (0.01, 0.7098), (0.02, 0.5914))
    ),
    *(
        Reported(
            paper=_DEFEND_MI,
            setting=f"CelebA 64 px, 1,000 private identities, VGG16 with BiDO-HSIC, (a1, a2) = ({a1}, {a2})",
            metrics={"natural_acc": acc},
            source="Defend_MI DMI/k+1_gan_HSIC.py (comments)",
            scenario="celeba64",
            arch="vgg16",
            defense=f"bido[a1={a1},a2={a2}]",
        )
        for a1, a2, acc in (
            (0.05, 0.5, 0.8035),
            (0.01, 0.05, 0.8481),
            (0.01, 0.2, 0.8165),
            (0.01, 0.5, 0.7497),
            (0.05, 0.25, 0.8384),
            (0.05, 1.0, 0.7031),
            (0.05, 2.5, 0.5349),
        )
    ),
    Reported(
        paper=_ALIGNMI,
        table="baseline rows",
        setting=f"{_ALIGNMI_64}, public CelebA; KEDMI(LOMMA), VGG16",
        metrics=_acc(60.46, 87.35, 1275.10),
        source=_ALIGNMI_SRC,
        scenario="celeba64",
        arch="vgg16",
        attack="lomma+kedmi",
        **_ALIGNMI_64_ATTACKED,
        **_ALIGNMI_KEDMI,
    ),
    Reported(
        paper=_ALIGNMI,
        table="baseline rows",
        setting=f"{_ALIGNMI_64}, public CelebA; KEDMI(LOMMA), FaceNet64",
        metrics=_acc(60.42, 89.47, 1331.94),
        source=_ALIGNMI_SRC,
        scenario="celeba64",
        arch="facenet64",
        attack="lomma+kedmi",
        **_ALIGNMI_64_ATTACKED,
        **_ALIGNMI_KEDMI,
    ),
)
CELEBA64_FFHQ_REPORTED = (
    Reported(
        paper=_ALIGNMI,
        table="baseline rows",
        setting=f"{_ALIGNMI_64}, public FFHQ; KEDMI(LOMMA), VGG16",
        metrics=_acc(26.32, 52.65, 1592.32),
        source=_ALIGNMI_SRC,
        scenario="celeba64-ffhq",
        arch="vgg16",
        attack="lomma+kedmi",
        **_ALIGNMI_64_ATTACKED,
        **_ALIGNMI_KEDMI,
    ),
    Reported(
        paper=_ALIGNMI,
        table="baseline rows",
        setting=f"{_ALIGNMI_64}, public FFHQ; KEDMI(LOMMA), FaceNet64",
        metrics=_acc(30.33, 61.20, 1542.77),
        source=_ALIGNMI_SRC,
        scenario="celeba64-ffhq",
        arch="facenet64",
        attack="lomma+kedmi",
        **_ALIGNMI_64_ATTACKED,
        **_ALIGNMI_KEDMI,
    ),
    Reported(
        paper=_ALIGNMI,
        table="baseline rows",
        setting=f"{_ALIGNMI_64}, public FFHQ; PLG-MI, FaceNet64",
        metrics=_acc(88.68, 97.06, 1267.12),
        source=_ALIGNMI_SRC,
        scenario="celeba64-ffhq",
        arch="facenet64",
        attack="plgmi",
        **_ALIGNMI_64_ATTACKED,
    ),
    Reported(
        paper=_ALIGNMI,
        table="baseline rows",
        setting=f"{_ALIGNMI_64}, public FaceScrub (no scenario here); PLG-MI, FaceNet64",
        metrics=_acc(32.06, 58.17, 1558.26),
        source=_ALIGNMI_SRC,
        scenario=None,
        arch="facenet64",
        attack="plgmi",
        **_ALIGNMI_64_ATTACKED,
    ),
)


class CelebA64(FaceScenario):
    name = "celeba64"
    num_classes = eval_num_classes = 1000
    description = "CelebA 64px: 1,000 most frequent identities private (90/10), other identities public"
    _PAPER = _CELEBA_PAPER
    # the protocol card's text (``reinv-bench protocol celeba64``)
    splits = (
        f"the 1,000 most frequent CelebA identities (ties: first appearance in identity_CelebA.txt), class i "
        f"= the i-th most frequent; their images shuffled with np.random.RandomState({SPLIT_SEED}) and split "
        "90/10 into train/test (PPA/MIDRE CelebA1000); centre crop 108 of the 178x218 aligned image, resized "
        "to 64 (KEDMI/LOMMA dataloader.py)"
    )
    public_data = (
        "every image of the other CelebA identities, unlabelled; or the official 64-px code's fixed "
        "30,000-image list (PLG-MI data_files/celeba_ganset.txt) when given as $REINV_BENCH_CELEBA_GANSET "
        "or DATA_ROOT/celeba/celeba_ganset.txt, less any image of a private identity"
    )
    eval_model = (
        "'FaceNet' = face.evoLVe IR-50 at 112 px, trained on the private training split and tested on "
        "the private test split; the official one starts from MS-Celeb-1M weights and reaches 95.88% "
        "(FaceNet_95.88.tar)"
    )
    samples = (
        "300 identities attacked (classes 0-299); the official 64-px scripts make 5 reconstructions per "
        "identity (GMI restarts, KEDMI samples, PLG-MI seeds) and evaluate all of them; here too every "
        "reconstruction an attack returns is evaluated (what it selects: 'selection')"
    )
    reported = CELEBA64_REPORTED

    def target_classes(self) -> list[int]:
        return list(range(300))

    def check(self, data_root: Path | None, sample: int = 1000, decode: bool = True) -> list[Problem]:
        out = root_problems(data_root, self.name)
        if out:
            return out
        root = Path(data_root)
        out = celeba_problems(root, sample, decode)
        out += self.public_problems(root, sample, decode, layout_ok=not any(p.error for p in out))
        if any(p.error for p in out):
            return out
        return out + super().check(data_root, sample, decode=False)

    def public_problems(self, root: Path, sample: int, decode: bool, layout_ok: bool) -> list[Problem]:
        return ganset_problems(root, layout_ok)

    def class_names(self, data_root: Path | None) -> list[str]:
        """Class i = the i-th most frequent CelebA identity: its number in identity_CelebA.txt."""
        return [f"identity {i}" for i in identity_order(str(need_root(data_root, self.name)))]

    def load(self, data_root: Path | None) -> ScenarioData:
        root = need_root(data_root, self.name)
        files, labels, public, train, test = celeba1000(str(root))
        crop = functools.partial(center_crop_resize, crop=108, size=64)
        priv = ImageFiles(files, crop, self.image_shape)
        pub, source = self.public(root, public)
        import torch

        y = torch.from_numpy(labels)
        ptrain, ptest = Split(priv[train], y[train]), Split(priv[test], y[test])
        return ScenarioData(
            ptrain, ptest, Split(pub, None), ptrain, ptest, digest(files, labels, list(pub.paths)), source
        )

    def public(self, root: Path, other_ids: list[str]) -> tuple[ImageFiles, str]:
        crop = functools.partial(center_crop_resize, crop=108, size=64)
        listed = ganset_file(root)
        if listed is None:
            return ImageFiles(other_ids, crop, self.image_shape), (
                f"CelebA at {root}: 1,000 private identities; "
                f"public = {len(other_ids):,} images of the other identities"
            )
        files, private = read_ganset(listed, other_ids, celeba1000(str(root))[0])
        return ImageFiles(files, crop, self.image_shape), (
            f"CelebA at {root}: 1,000 private identities; public = the {len(files):,} images of {listed}"
            + (f" ({private:,} listed images of private identities left out)" if private else "")
        )


class CelebA64FFHQ(CelebA64):
    name = "celeba64-ffhq"
    description = "CelebA 64px private (1,000 identities), FFHQ thumbnails public"
    public_data = (
        "FFHQ thumbnails (70,000 at 128 px), centre crop 88, resized to 64 (KEDMI dataloader.py), unlabelled"
    )
    reported = CELEBA64_FFHQ_REPORTED

    def public_problems(self, root: Path, sample: int, decode: bool, layout_ok: bool) -> list[Problem]:
        return ffhq_problems(root, "thumbnails128x128", sample, decode)

    def public(self, root: Path, other_ids: list[str]) -> tuple[ImageFiles, str]:
        files = ffhq_files(root, "thumbnails128x128")
        crop = functools.partial(center_crop_resize, crop=88, size=64)
        return ImageFiles(files, crop, self.image_shape), (
            f"CelebA at {root}: 1,000 private identities; public = {len(files):,} FFHQ thumbnails (of 70,000)"
        )


@hookimpl
def register_datasets():
    return [CelebA64(), CelebA64FFHQ()]
