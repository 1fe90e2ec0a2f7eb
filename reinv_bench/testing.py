"""Small fake dataset trees in the layouts the face scenarios read (real image files, few of them):
for tests, for benchmarks, and for checking a loader without the real data.

    from reinv_bench.testing import make_face_tree
    make_face_tree(Path("/tmp/faces"))
    # then: reinv-bench run --data-root /tmp/faces --scenario celeba64 ...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _img(path, size, seed):
    rng = np.random.default_rng(seed)
    a = np.empty((size[1], size[0], 3), np.uint8)
    a[:] = rng.integers(0, 255, 3)
    a[size[1] // 2 :, : size[0] // 2] = rng.integers(0, 255, 3)  # two colours: the crop is visible
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_celeba(root, n_private=1000, n_public=12):
    """Identities 1..300 have 3 images, 301..n_private 1, then n_public identities 1 image each;
    file order interleaves them so ties are broken by first appearance."""
    d = root / "celeba"
    counts = {i: 3 if i <= 300 else 1 for i in range(1, n_private + 1)}
    counts.update({n_private + j: 1 for j in range(1, n_public + 1)})
    ids = [i for i, c in counts.items() for _ in range(c)]
    order = np.random.default_rng(0).permutation(len(ids))
    lines = []
    for n, k in enumerate(order, 1):
        name = f"{n:06d}.jpg"
        lines.append(f"{name} {ids[k]}")
        _img(d / "img_align_celeba" / name, (178, 218), ids[k])
    (d / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return [int(line.split()[1]) for line in lines]


def make_ffhq(root, folder, n, side):
    for i in range(n):
        _img(root / "ffhq" / folder / f"{i // 1000 * 1000:05d}" / f"{i:05d}.png", (side, side), 10_000 + i)


def make_facescrub(root, per_group=265, per_person=3):
    for group in ("actors", "actresses"):
        for p in range(per_group):
            for k in range(per_person):
                _img(
                    root / "facescrub" / group / "faces" / f"Person_{p:03d}" / f"{k}.jpg", (60, 60), p * 7 + k
                )


def make_face_tree(root: Path, facescrub_per_person: int = 3) -> list[int]:
    """Every layout at once: CelebA, FFHQ thumbnails and 1024-px images, FaceScrub. Returns the
    CelebA identity of each image, in file order."""
    ids = make_celeba(root)
    make_ffhq(root, "thumbnails128x128", 6, 128)
    make_ffhq(root, "images1024x1024", 3, 1024)
    make_facescrub(root, per_person=facescrub_per_person)
    return ids
