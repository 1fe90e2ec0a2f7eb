"""--precision fp32|bf16|tf32 (issue 11): keys, rows and the leaderboard (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from reinv_bench import hookimpl
from reinv_bench.api import ConfigError, Scenario, ScenarioData, Split, TrainRecipe
from reinv_bench.engine.plan import Request, expand
from reinv_bench.results.aggregate import aggregate, comparison_key, declared_columns


def _plan(registry, **kw):
    return expand(
        Request(
            ["meanimg"],
            ["re"],
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            metrics=["attack_acc"],
            **kw,
        ),
        registry,
        data_digest=lambda s: "d",
    )


def test_fp32_keys_are_those_of_a_plan_without_the_field(registry):
    default, fp32 = _plan(registry), _plan(registry, precision="fp32")
    assert list(fp32.steps) == list(default.steps)
    assert [c.cell_id for c in fp32.cells] == [c.cell_id for c in default.cells]
    assert all("precision" not in s.spec for s in fp32.steps.values())
    assert {c.config["precision"] for c in fp32.cells} == {"fp32"}


def test_bf16_and_tf32_give_other_keys_for_targets_priors_and_inversions(registry):
    fp32, bf16, tf32 = (_plan(registry, precision=p) for p in ("fp32", "bf16", "tf32"))
    for other, name in ((bf16, "bf16"), (tf32, "tf32")):
        changed = {s.kind for k, s in other.steps.items() if k not in fp32.steps}
        assert changed == {"target", "prior", "invert"}
        assert {s.kind for k, s in other.steps.items() if k in fp32.steps} == {"eval"}  # the judge stays fp32
        assert not {c.cell_id for c in other.cells} & {c.cell_id for c in fp32.cells}
        assert {c.config["precision"] for c in other.cells} == {name}
    assert not set(bf16.steps) & set(tf32.steps) - set(fp32.steps)


def test_an_unknown_precision_is_a_one_line_error(registry, tmp_path):
    import reinv_bench

    with pytest.raises(ConfigError, match=r"precision 'fp16': give one of fp32, bf16, tf32") as exc:
        _plan(registry, precision="fp16")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="precision 'half'"):
        reinv_bench.run(
            attacks=["meanimg"],
            defenses=["re"],
            archs=["tiny"],
            eval_arch="tiny",
            budget="smoke",
            registry=registry,
            workdir=tmp_path,
            device="cpu",
            precision="half",
        )


def test_a_bf16_run_stores_its_precision_and_is_ranked_apart_from_fp32(registry, tmp_path):
    import reinv_bench

    kw = dict(
        attacks=["meanimg"],
        defenses=["re"],
        archs=["tiny"],
        eval_arch="tiny",
        budget="smoke",
        metrics=["attack_acc"],
        registry=registry,
        workdir=tmp_path,
        device="cpu",
    )
    fp32 = reinv_bench.run(**kw)
    bf16 = reinv_bench.run(**kw, precision="bf16")
    assert not fp32.summary.failed and not bf16.summary.failed
    assert {s.kind for s in bf16.summary.ran} == {"target", "prior", "invert"}  # the eval model is reused
    assert {r["config"]["precision"] for r in bf16.rows} == {"bf16"}
    assert {r["config"]["precision"] for r in fp32.rows} == {"fp32"}
    from reinv_bench.engine.artifacts import Artifacts

    art = Artifacts(tmp_path)
    key = {r["defense"]: r["artifacts"]["target"] for r in fp32.rows}
    key16 = {r["defense"]: r["artifacts"]["target"] for r in bf16.rows}
    w32, w16 = art.load(key["re"])["state_dict"], art.load(key16["re"])["state_dict"]
    assert all(v.dtype == w32[k].dtype for k, v in w16.items())  # weights (and optimizer) stay fp32
    assert any(not torch.equal(v, w32[k]) for k, v in w16.items() if v.is_floating_point())  # autocast ran
    from reinv_bench.registry.lookup import load as load_registry

    cols = declared_columns(load_registry())
    entries = aggregate(fp32.rows + bf16.rows, columns=cols)
    assert len(entries) == 4  # none and re, at each precision
    groups = {comparison_key(e) for e in entries}
    assert len(groups) == 2
    for e in entries:  # each compared with the baseline of its own precision
        assert e["precision"] == (e.config["precision"])
        same = [o for o in entries if comparison_key(o) == comparison_key(e)]
        assert {o["precision"] for o in same} == {e["precision"]}
        assert ("bf16" in e["variant"]) == (e["precision"] == "bf16")
    # rows from before --precision (no precision in their config) are fp32 rows
    old = [{**r, "config": {k: v for k, v in r["config"].items() if k != "precision"}} for r in fp32.rows]
    assert len(aggregate(fp32.rows + old, columns=cols)) == 2


def test_a_grid_file_gives_the_precision(tmp_path):
    from reinv_bench.engine.grid import load

    (tmp_path / "g.toml").write_text('attacks = ["gmi"]\nprecision = "bf16"\n')
    assert load(tmp_path / "g.toml")["precision"] == "bf16"
    (tmp_path / "bad.toml").write_text("precision = 16\n")
    with pytest.raises(ConfigError, match="precision must be str"):
        load(tmp_path / "bad.toml")


# ---- one owner of precision (issue 17, item 1): what the row says is what ran -------------------


class ToyRGB(Scenario):
    """48 random RGB images of 16 px in 3 classes: a scenario ppa can attack in seconds."""

    name = "toy-rgb16"
    num_classes = eval_num_classes = 3
    image_shape = (3, 16, 16)
    default_arch = eval_arch = "tiny"
    protocol = "toy-rgb16"

    def load(self, data_root):
        x = torch.rand(48, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
        y = torch.arange(48) % 3
        train, test = Split(x[:36], y[:36]), Split(x[36:], y[36:])
        return ScenarioData(train, test, Split(x, None), train, test, digest="toy-rgb16", source="random")

    def recipe(self, role, budget, arch=""):
        return TrainRecipe(epochs=1, batch_size=16)


@hookimpl
def register_datasets():
    return [ToyRGB()]


def _ppa_dtypes(tmp_path, monkeypatch, precision):
    """Run ``ppa`` through the harness at ``precision`` (inline, a tiny registered generator) and
    return the output dtypes of the generator's synthesis layers and of the target's layers,
    recorded by forward hooks during the attack only, and the loss's input dtype and autocast
    state."""
    import sys

    import reinv_bench
    from reinv_attacks import _stylegan, ppa
    from reinv_attacks._stylegan2_load import save_generator
    from reinv_attacks._stylegan2_net import Generator, SynthesisLayer, ToRGBLayer
    from reinv_bench.registry.lookup import load

    weights = tmp_path / "weights"
    if not weights.exists():
        weights.mkdir()
        torch.manual_seed(0)
        G = Generator(
            z_dim=16,
            c_dim=0,
            w_dim=16,
            img_resolution=8,
            img_channels=3,
            mapping_kwargs={"num_layers": 2},
            synthesis_kwargs={"channel_base": 128, "channel_max": 16},
        )
        save_generator(G, weights / "stylegan2-ffhq.pt")
    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(weights))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))

    seen: dict[str, set] = {"synthesis": set(), "target": set(), "loss": set()}
    attacking = []

    def hook(module, args, out):
        if not attacking or not isinstance(out, torch.Tensor):
            return
        if isinstance(module, (SynthesisLayer, ToRGBLayer)):
            seen["synthesis"].add(out.dtype)
        elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):  # the generator has none: the target's
            seen["target"].add(out.dtype)

    def attack(self, *args, **kwargs):
        attacking.append(1)
        try:
            return original(self, *args, **kwargs)
        finally:
            attacking.pop()

    def loss(logits, y, xi=1e-4):
        seen["loss"].add((logits.dtype, torch.is_autocast_enabled("cpu")))
        return poincare(logits, y, xi)

    original, poincare = ppa.PPA.attack, _stylegan.poincare_loss
    monkeypatch.setattr(ppa.PPA, "attack", attack)
    monkeypatch.setattr(_stylegan, "poincare_loss", loss)
    registry = load(extra=(sys.modules["conftest"], sys.modules[__name__]))
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        res = reinv_bench.run(
            attacks=["ppa"],
            defenses=["none"],
            scenarios=["toy-rgb16"],
            budget="smoke",
            metrics=["attack_acc"],
            registry=registry,
            workdir=tmp_path / "w",
            device="cpu",
            precision=precision,
        )
    finally:
        handle.remove()
    assert not res.summary.failed, res.summary.failed
    assert [r["config"]["precision"] for r in res.rows] == [precision]
    return seen


@pytest.mark.filterwarnings("ignore::reinv_bench.contract.weights.UnverifiedWeightsWarning")
def test_ppa_synthesis_and_target_run_at_the_runs_precision(tmp_path, monkeypatch):
    """--precision bf16: the generator's synthesis and the target's forward passes of the attack
    run in bf16 (before, ppa's own precision=fp32 parameter switched autocast off around them
    while the row said bf16); the loss is computed in float32 with autocast off. --precision
    fp32: nothing runs in bf16."""
    fp32 = _ppa_dtypes(tmp_path, monkeypatch, "fp32")
    assert fp32["synthesis"] == fp32["target"] == {torch.float32}
    assert fp32["loss"] == {(torch.float32, False)}
    bf16 = _ppa_dtypes(tmp_path, monkeypatch, "bf16")
    assert bf16["synthesis"] == bf16["target"] == {torch.bfloat16}
    assert bf16["loss"] == {(torch.float32, False)}


def test_ppa_and_ifgmi_take_the_precision_from_the_run_only():
    from reinv_attacks.ifgmi import IFGMI
    from reinv_attacks.ppa import PPA

    for cls in (PPA, IFGMI):
        assert "precision" not in cls.params and "precision" not in cls().config
        with pytest.raises(ConfigError, match=r"the run's precision applies, give --precision bf16") as exc:
            cls({"precision": "bf16"})
        assert "\n" not in str(exc.value)


def test_the_attack_context_carries_the_runs_precision():
    from reinv_bench.api import AttackContext

    cpu = torch.device("cpu")
    x = torch.randn(2, 4)
    for precision, dtype in (("fp32", torch.float32), ("tf32", torch.float32), ("bf16", torch.bfloat16)):
        ctx = AttackContext(None, None, None, cpu, 0, precision=precision)
        with ctx.autocast():
            assert (x @ x.T).dtype == dtype
            with ctx.fp32():
                assert (x @ x.T).dtype == torch.float32
