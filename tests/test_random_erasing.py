import pytest
import torch

from reinv_bench.api import ConfigError
from reinv_bench.engine.train import train_classifier
from reinv_bench.registry.lookup import load

VALUE = 0.449  # one-channel fill: mean of (0.485, 0.456, 0.406)


def _re(**params):
    return load().get("defense", "re")(params)


def _erased(before, after):
    return (before != after).squeeze(1)


def test_defaults_are_the_seed_papers():
    c = _re().config
    assert c.p == 1.0 and c.scale == (0.1, 0.4) and c.ratio == (1.0, 1.0) and c.value == (0.485, 0.456, 0.406)


def test_p1_always_erases_a_square_within_scale_filled_with_value():
    torch.manual_seed(0)
    x = torch.full((200, 1, 32, 32), -1.0)  # nothing equals the fill value
    out = _re().train_transform(x)
    mask = _erased(x, out)
    for m, img in zip(mask, out):
        rows, cols = m.any(1).nonzero().squeeze(1), m.any(0).nonzero().squeeze(1)
        h, w = len(rows), len(cols)
        assert h > 0, "p=1 must erase every image"
        assert m.sum() == h * w, "erased region is a rectangle"
        assert h == w, "ratio (1, 1) gives squares"
        assert 0.1 * 1024 - 2 * 32 <= h * w <= 0.4 * 1024 + 1
        assert torch.allclose(img[0][m], torch.tensor(VALUE))
    # each image gets its own position
    assert len({tuple(m.nonzero()[0].tolist()) for m in mask}) > 20


def test_p0_and_range_parameters_from_the_cli_syntax():
    x = torch.randn(16, 1, 32, 32).clamp(-1, 1)
    assert torch.equal(_re(p="0").train_transform(x), x)
    big = _re(scale="0.7-0.8")
    mask = _erased(x, big.train_transform(x))
    assert (mask.flatten(1).sum(1) >= 0.69 * 1024 - 64).all()
    rgb = _re(value="0.1/0.2/0.3").train_transform(torch.full((2, 3, 32, 32), -1.0))
    vals = rgb[0, 1].unique()
    assert len(vals) == 2 and vals[0] == -1.0 and vals[1].item() == pytest.approx(0.2)


def test_bad_parameters_are_clear_errors():
    with pytest.raises(ConfigError, match="did you mean 'scale'|Did you mean 'scale'"):
        _re(scal="0.1-0.2")
    with pytest.raises(ConfigError, match="out of range"):
        _re(p="1.5")
    with pytest.raises(ConfigError, match="lo <= hi"):
        _re(scale="0.5-0.2")


def test_never_applied_at_test_time(monkeypatch):
    """The training loop calls train_transform; evaluation and attacks call the model directly."""
    from reinv_bench.api import Split, TrainRecipe
    from reinv_bench.engine.train import predict

    reg = load()
    calls = []
    re = reg.get("defense", "re")()
    original = re.train_transform
    re.train_transform = lambda x: calls.append(len(x)) or original(x)
    model = reg.get("architecture", "cnn").build(10, (1, 32, 32))
    data = Split(torch.randn(40, 1, 32, 32).clamp(-1, 1), torch.randint(0, 10, (40,)))
    train_classifier(
        model, data, TrainRecipe(epochs=1, batch_size=20), re, device=torch.device("cpu"), seed=0
    )
    assert calls == [20, 20]
    predict(model, data.x, torch.device("cpu"))
    assert calls == [20, 20]


def test_batched_sampling_has_torchvisions_distribution():
    """Erased-area and position statistics of the batched sampler match torchvision's own
    RandomErasing (same parameters) on 4,000 images."""
    from torchvision.transforms import RandomErasing as TV

    torch.manual_seed(0)
    x = torch.full((4000, 1, 32, 32), -1.0)
    for scale, ratio in (((0.1, 0.4), (1.0, 1.0)), ((0.02, 0.33), (0.3, 3.3))):
        ours = _erased(
            x, _re(scale=f"{scale[0]}-{scale[1]}", ratio=f"{ratio[0]}-{ratio[1]}").train_transform(x)
        )
        tv = TV(p=1.0, scale=scale, ratio=ratio, value=[VALUE])
        theirs = torch.stack([_erased(img[None], tv(img)[None])[0] for img in x])
        for stat in (
            lambda m: m.flatten(1).sum(1).float(),  # area
            lambda m: m.any(2).float().argmax(1).float(),  # top row
            lambda m: m.any(1).float().argmax(1).float(),
        ):  # left column
            a, b = stat(ours), stat(theirs)
            assert abs(a.mean() - b.mean()) < 0.05 * b.mean() + 0.3
            assert abs(a.std() - b.std()) < 0.08 * b.std() + 0.3
        assert abs(ours.any(2).any(1).float().mean() - theirs.any(2).any(1).float().mean()) < 0.02
