"""What the literature's face scenarios (``celeba.py``, ``facescrub.py``) share: they read the
real datasets under ``--data-root`` (or ``$REINV_BENCH_DATA``). Nothing is downloaded; the layout
is checked before anything trains, and a missing or incomplete folder is a ``DataError`` naming
what was expected where and what was found.

Layout under the data root (the folders torchvision, PPA and the FFHQ release use)::

    celeba/identity_CelebA.txt            CelebA identity annotations (202,599 lines)
    celeba/img_align_celeba/000001.jpg    aligned CelebA images (.jpg, or .png as PPA accepts)
    ffhq/thumbnails128x128/**/*.png       FFHQ thumbnails (70,000; 128 px)
    ffhq/images1024x1024/**/*.png         FFHQ images (70,000; 1024 px), for the 224-px protocol
    facescrub/actors/faces/NAME/*.jpg     FaceScrub cropped faces (265 actors)
    facescrub/actresses/faces/NAME/*.jpg  (265 actresses)

Every split's digest (a hash of the file lists and labels) is stored with every result.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np

from reinv_bench.api import DataError, Problem, Scenario, TrainRecipe, decode_problem, undecodable

SPLIT_SEED = 42  # the seed paper's (PPA's) split_seed


def need_root(data_root: Path | None, scenario: str) -> Path:
    if data_root is None:
        raise DataError(
            f"scenario {scenario} reads real datasets from disk: pass --data-root DIR (or set "
            "REINV_BENCH_DATA); the expected layout is in the README (Scenarios) and "
            "plugins/reinv_datasets/_faces.py"
        )
    if not Path(data_root).is_dir():
        raise DataError(f"--data-root {data_root} is not a directory")
    return Path(data_root)


def root_problems(data_root: Path | None, scenario: str) -> list[Problem]:
    """``need_root``'s findings as problems (``reinv-bench data check``)."""
    try:
        need_root(data_root, scenario)
    except DataError as exc:
        return [
            Problem(
                str(exc),
                "give the folder that holds celeba/, ffhq/ and facescrub/ (layout: "
                f"`reinv-bench protocol {scenario}`)",
            )
        ]
    return []


def decode_problems(files: list[str], sample: int) -> list[Problem]:
    """The undecodable files among a sample of ``files`` (``sample`` 0: all), as one problem."""
    return decode_problem(*undecodable(files, sample))


def ffhq_problems(
    root: Path, folder: str, sample: int, decode: bool, expected: int = 70_000
) -> list[Problem]:
    """FFHQ under ``root/ffhq/folder``: there, complete, decodable."""
    base = root / "ffhq" / folder
    files = sorted(str(p) for p in base.rglob("*.png")) if base.is_dir() else []
    if not files:
        return [
            Problem(
                f"FFHQ expected at {base}/ ({expected:,} .png files, in the release's numbered "
                f"subfolders); found {'no such folder' if not base.is_dir() else '0 .png files'}",
                f"get FFHQ's {folder} (NVlabs/ffhq-dataset: download_ffhq.py) into {base}/",
            )
        ]
    out = []
    if len(files) != expected:
        out.append(
            Problem(
                f"{base}/ holds {len(files):,} .png files; FFHQ has {expected:,}",
                "the public data differs from the papers': complete the download to match them",
                error=False,
            )
        )
    return out + (decode_problems(files, sample) if decode else [])


def center_crop_resize(path: str, crop: int, size: int) -> np.ndarray:
    """RGB uint8 (size, size, 3): the centred ``crop`` x ``crop`` square, resized (bilinear)."""
    from PIL import Image

    if not stat.S_ISREG(os.stat(path).st_mode):  # a named pipe would block the reader forever
        raise DataError(f"{path} is not a regular file (a named pipe?): remove it from the dataset folder")
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if crop:
            left, top = (w - crop) // 2, (h - crop) // 2
            im = im.crop((left, top, left + crop, top + crop))
        return np.array(im.resize((size, size), Image.BILINEAR))


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else "\n".join(p).encode())
    return h.hexdigest()[:16]


def ffhq_files(root: Path, folder: str, expected: int = 70_000) -> list[str]:
    base = root / "ffhq" / folder
    files = sorted(str(p) for p in base.rglob("*.png")) if base.is_dir() else []
    if not files:
        raise DataError(
            f"FFHQ expected at {base}/ ({expected:,} .png files, in the release's numbered subfolders); "
            f"found {'no such folder' if not base.is_dir() else '0 .png files'}"
        )
    return files


class FaceScenario(Scenario):
    """A face protocol: its recipes per role and architecture (``_PAPER``), scaled for the budgets."""

    protocol = "64px"
    class_kind = "face"  # the judges' face network and "same individual" question
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
