"""celeba64 with the official GAN-set list (issue 10, item 10): the user's list file, under the
data root or named by $REINV_BENCH_CELEBA_GANSET, is the public data, in the data digest."""

from __future__ import annotations

import pytest

from reinv_bench.api import DataError
from reinv_bench.registry.lookup import load
from reinv_bench.testing import make_celeba


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    make_celeba(root)
    data = _load(root)  # public: the 12 images of the identities outside the 1,000 most frequent
    public, private = _names(data.public.x), _names(data.private_train.x)
    assert len(public) == 12 and not set(public) & set(private)
    return root, public, private


def _load(root):
    return load().get("scenario", "celeba64").load(root)


def _names(images) -> list[str]:
    return [p.rsplit("/", 1)[1] for p in images.paths]


def test_celeba64_uses_the_official_list_when_given(celeba_root, tmp_path, monkeypatch):
    root, public, private = celeba_root
    monkeypatch.delenv("REINV_BENCH_CELEBA_GANSET", raising=False)
    everything = _load(root)

    listed = [public[5], public[0], public[3]]
    ganset = root / "celeba" / "celeba_ganset.txt"
    # PLG-MI's format: one name per line; a label column and blank lines are ignored, .png finds .jpg
    ganset.write_text(f"{listed[0]}\n{listed[1].replace('.jpg', '.png')} 7\n\n{private[0]}\n{listed[2]}\n")
    try:
        data = _load(root)
    finally:
        ganset.unlink()
    assert _names(data.public.x) == listed  # the list's images, in its order
    assert data.public.y is None and len(data.public) == 3
    assert (
        "celeba_ganset.txt" in data.source and "1 listed images of private identities left out" in data.source
    )
    assert data.digest != everything.digest  # results with and without the list are never mixed
    assert data.private_train.x.paths == everything.private_train.x.paths  # the private data do not change
    assert _load(root).digest == everything.digest  # without the file: every other identity again

    elsewhere = tmp_path / "my_ganset.txt"  # the environment variable names a list anywhere
    elsewhere.write_text("\n".join(listed[:2]) + "\n")
    monkeypatch.setenv("REINV_BENCH_CELEBA_GANSET", str(elsewhere))
    assert _names(_load(root).public.x) == listed[:2]


def test_celeba64_refuses_a_list_it_cannot_read(celeba_root, tmp_path, monkeypatch):
    root, public, _ = celeba_root
    bad = tmp_path / "ganset.txt"
    bad.write_text(f"{public[0]}\n999999.jpg\n")
    monkeypatch.setenv("REINV_BENCH_CELEBA_GANSET", str(bad))
    with pytest.raises(DataError, match=r"lists 1 image\(s\) .* not have \(first: 999999.jpg\)"):
        _load(root)
    monkeypatch.setenv("REINV_BENCH_CELEBA_GANSET", str(tmp_path / "absent.txt"))
    with pytest.raises(DataError, match="REINV_BENCH_CELEBA_GANSET names .*absent.txt, which is not a file"):
        _load(root)
