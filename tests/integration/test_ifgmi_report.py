"""Issue 19: IF-GMI's ``report=best`` (the official ``intermediate_attack.py`` reports the layer with
the best evaluation-model top-1 accuracy) beside the default ``report=last``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_ppa import (
    OfficialIntermediateSynthesis,
    official_if_optimize,
    tiny_generator,
    toy_target,
)

from reinv_bench.api import AttackContext


def official_best_layer(accs):
    """final-solution/IF-GMI ``intermediate_attack.py`` (transcribed): ``best_layer_result = [0]``;
    per layer ``if acc_top1 > best_layer_result[0]: best_layer_result = [acc_top1, ..., i]``;
    ``best_layer = best_layer_result[-1]``."""
    best_layer_result = [0]
    for i in range(len(accs)):
        acc_top1 = accs[i]
        if acc_top1 > best_layer_result[0]:
            best_layer_result = [acc_top1, i]
    return best_layer_result[-1]


def test_best_layer_is_the_official_choice():
    from reinv_attacks.ifgmi import best_layer

    for accs in ([0.1, 0.5, 0.3], [0.2, 0.2, 0.1], [0.0, 0.0], [0.3, 0.1, 0.6, 0.6], [0.0, 0.4]):
        assert best_layer(accs) == official_best_layer(accs), accs


def test_each_phase_hands_over_the_official_layer_images():
    from reinv_attacks._stylegan import attack_transforms
    from reinv_attacks.ifgmi import layer_search

    G, target = tiny_generator(), toy_target()
    torch.manual_seed(0)
    w0, y = torch.randn(3, 1, G.w_dim), torch.tensor([0, 2, 2])
    transform = attack_transforms(16, 32, 800, (0.9, 1.0))
    steps, radii = (3, 2), (0.05, 0.05)
    seen = {}
    torch.manual_seed(4)
    layer_search(
        G,
        target,
        w0,
        y,
        steps=steps,
        radius_w=radii,
        radius_mid=radii,
        lr=0.005,
        betas=(0.1, 0.1),
        transform=transform,
        on_phase=lambda p, imgs: seen.__setitem__(p, imgs.clone()),
    )
    torch.manual_seed(4)
    _, imgs_off = official_if_optimize(
        OfficialIntermediateSynthesis(G.synthesis),
        target,
        transform,
        G.num_ws,
        w0.clone(),
        y,
        steps,
        radii,
        radii,
        2,
        0.005,
        [0.1, 0.1],
    )
    assert sorted(seen) == [0, 1]
    for p in seen:  # the official intermediate_imgs[layer]
        torch.testing.assert_close(seen[p], imgs_off[p])


class Constant(torch.nn.Module):
    """An evaluation model that says class 0 to everything."""

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 6).float().to(x.device)


def test_report_best_reruns_to_the_best_layer_and_says_so(tmp_path, monkeypatch):
    from reinv_attacks import _stylegan2_load as stylegan2
    from reinv_attacks.ifgmi import IFGMI

    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path))
    stylegan2.save_generator(tiny_generator(), tmp_path / "stylegan2-ffhq.pt")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = IFGMI({}, "smoke").prepare(None, "stylegan2")
    ctx = AttackContext(SimpleNamespace(image_shape=(3, 32, 32)), None, toy_target(6), torch.device("cpu"), 0)
    ctx.eval_model = Constant()
    classes, cfg = [0, 2, 5], {"candidates": "2"}
    best = IFGMI({**cfg, "report": "best"}, "smoke")
    assert best.uses_eval_model() and not IFGMI(cfg, "smoke").uses_eval_model()
    assert best.selection().startswith("report=best")
    inv = best.invert(ctx, {"stylegan2": prior}, classes)
    # every layer: the 2 candidates of class 0 of 6 are hits; a tie keeps the first layer
    assert inv.info["eval_acc_layer0"] == inv.info["eval_acc_layer1"] == 2 / 6
    assert inv.info["report"] == "best" and inv.info["reported_layer"] == 0
    first_only = IFGMI({**cfg, "steps": "2", "radius_w": "1000", "radius_mid": "1000"}, "smoke")
    torch.testing.assert_close(inv.images, first_only.invert(ctx, {"stylegan2": prior}, classes).images)
    last = IFGMI(cfg, "smoke").invert(ctx, {"stylegan2": prior}, classes)
    assert last.info["report"] == "last" and last.info["reported_layer"] == 1
    assert not torch.equal(last.images, inv.images)


@pytest.mark.filterwarnings("ignore::reinv_bench.contract.weights.UnverifiedWeightsWarning")
def test_cli_report_best_depends_on_the_evaluation_model(tmp_path, monkeypatch, registry):
    """``run -a "ifgmi[report=best]" -a ppa`` on the fake FaceScrub tree: the inversion is one step
    (no chunks) that depends on the evaluation model; the rows say the report and PPA's selection."""
    from conftest import cli_invoke

    from reinv_attacks import _stylegan2_load as stylegan2
    from reinv_bench.results.store import Store
    from reinv_bench.testing import make_facescrub, make_ffhq

    root = tmp_path / "data"
    make_facescrub(root, per_person=2)
    make_ffhq(root, "images1024x1024", 1, 1024)
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(weights))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    stylegan2.save_generator(tiny_generator(res=8), weights / "stylegan2-ffhq.pt")
    common = ["-d", "none", "--scenario", "facescrub224-ffhq", "--arch", "tiny", "--eval-arch", "tiny"]
    common += [
        "--budget",
        "smoke",
        "--data-root",
        root,
        "--workdir",
        tmp_path / "w",
        "--metric",
        "attack_acc",
    ]
    args = [
        "run",
        "-a",
        "ifgmi[report=best,candidates=2]",
        "-a",
        "ppa",
        *common,
        "--class-chunk",
        "2",
        "--quiet",
    ]
    cli_invoke(*args, registry=registry, ok=True)
    rows = {r.attack: r for r in Store(tmp_path / "w" / "results.db").rows() if r.status == "ok"}
    best = rows["ifgmi[report=best,candidates=2]"]
    assert best.config["attack"]["config"]["report"] == "best"
    assert best.config["attacked"]["selection"].startswith("report=best")
    from reinv_attacks.ppa import PPA
    from reinv_bench.engine.artifacts import Artifacts

    ppa = rows["ppa"].config["attacked"]
    assert ppa["per_class"] == 1 and ppa["selection"] == PPA(None, "smoke").selection()  # 1 of 2
    # one inversion step over every class (no merge of chunks), keyed by the evaluation model
    art = Artifacts(tmp_path / "w")
    assert "chunks" in art.load(rows["ppa"].artifacts["invert"])  # --class-chunk 2 splits ppa's
    assert "chunks" not in art.load(best.artifacts["invert"])
    assert len(best.outcomes) == 2 * best.config["attacked"]["classes"] > 4
