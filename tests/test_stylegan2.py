"""Issue 13, first section: the native StyleGAN2-ADA generator and the restricted loader of NVIDIA's
pickles. The pickles here are built in the test with the structure of stylegan2-ada-pytorch's
``torch_utils.persistence`` records (a stand-in ``torch_utils/persistence.py`` and
``dnnlib/util.py`` written to a temp folder): a ``_reconstruct_persistent_obj(meta)`` call per
network whose meta carries module source that would leave a marker file if it ever ran."""

from __future__ import annotations

import collections
import os
import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from reinv_attacks import _stylegan2_load as sg
from reinv_attacks import _stylegan2_net as net
from reinv_attacks._stylegan import GENERATORS
from reinv_attacks._stylegan2_load import UnsafePickleError
from reinv_attacks._stylegan2_net import Generator

WEIGHTS = GENERATORS["stylegan2-ffhq"]

TINY = dict(
    z_dim=32,
    c_dim=0,
    w_dim=32,
    img_resolution=16,
    img_channels=3,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=128, channel_max=16, conv_clamp=256),
)


def tiny(seed=0, **over) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**{**TINY, **over}).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return G


def z_of(n=3, dim=32, seed=1):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# --- the stand-in persistence module and pickles -----------------------------------------------


@pytest.fixture
def fake_nvidia(tmp_path, monkeypatch):
    """Importable ``torch_utils.persistence`` and ``dnnlib.util`` (to pickle with), a marker file
    that any run of pickled code would create, and builders of records and pickles."""
    root = tmp_path / "nvidia"
    marker = tmp_path / "code-ran"
    (root / "torch_utils").mkdir(parents=True)
    (root / "dnnlib").mkdir()
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "dnnlib" / "__init__.py").write_text("from .util import EasyDict\n")
    (root / "dnnlib" / "util.py").write_text(
        textwrap.dedent("""
        class EasyDict(dict):
            def __getattr__(self, name):
                try:
                    return self[name]
                except KeyError:
                    raise AttributeError(name)
            def __setattr__(self, name, value):
                self[name] = value
    """)
    )
    (root / "torch_utils" / "persistence.py").write_text(
        textwrap.dedent(f"""
        def _reconstruct_persistent_obj(meta):  # the real one execs meta['module_src']
            exec(meta['module_src'], {{}})
            open({str(marker)!r}, 'w').write('reconstructed')
    """)
    )
    monkeypatch.syspath_prepend(str(root))
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import dnnlib.util
    from torch_utils import persistence

    evil_src = f"open({str(marker)!r}, 'w').write('module source ran')\n"

    class Persistent:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return persistence._reconstruct_persistent_obj, (self.meta,)

    def record(module: torch.nn.Module, init_args=(), init_kwargs=None):
        """A module as NVIDIA pickles it: its __dict__-like state in a persistence record."""
        state = {
            "training": False,
            "_parameters": collections.OrderedDict(module._parameters),
            "_buffers": collections.OrderedDict(module._buffers),
            "_non_persistent_buffers_set": set(),
            "_modules": collections.OrderedDict((n, record(m)) for n, m in module._modules.items()),
            "_forward_hooks": collections.OrderedDict(),
            "_init_args": tuple(init_args),
            "_init_kwargs": dnnlib.util.EasyDict(init_kwargs or {}),
            "weight_gain": np.float64(0.125),  # NVIDIA's modules keep numpy scalars as attributes
            "block_resolutions": [4, 8, 16],
        }
        meta = dict(
            type="class", version=6, module_src=evil_src, class_name=type(module).__name__, state=state
        )
        return Persistent(meta)

    def network_pickle(G: Generator, protocol=3, **extra_state) -> bytes:
        kw = dict(G.init_kwargs)
        args = [kw.pop(k) for k in ("z_dim", "c_dim", "w_dim")]  # some positional, as a caller may pass them
        kw["mapping_kwargs"] = dnnlib.util.EasyDict(kw["mapping_kwargs"])
        kw["synthesis_kwargs"] = dnnlib.util.EasyDict(kw["synthesis_kwargs"])
        rec = record(G, args, kw)
        rec.meta["state"].update(extra_state)
        data = dict(
            G=rec,
            D=record(torch.nn.Linear(2, 2)),
            G_ema=rec,
            augment_pipe=None,
            training_set_kwargs=dnnlib.util.EasyDict(resolution=16, use_labels=False),
        )
        return pickle.dumps(data, protocol=protocol)

    return type(
        "FakeNvidia",
        (),
        dict(marker=marker, record=staticmethod(record), pickle=staticmethod(network_pickle)),
    )


class RunsSystem:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


# --- the restricted loader ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_persistence_pickle_loads_into_the_native_generator_without_running_its_code(fake_nvidia, protocol):
    G = tiny()
    data = fake_nvidia.pickle(G, protocol)
    raw = sg.load_pickle(data)
    assert not fake_nvidia.marker.exists()
    rec = raw["G_ema"]
    assert isinstance(rec, sg.PersistentRecord) and rec.class_name == "Generator"
    assert "module source ran" in rec.module_src  # kept as text, never run
    assert raw["training_set_kwargs"] == {"resolution": 16, "use_labels": False}
    assert type(raw["training_set_kwargs"]) is dict  # EasyDict read as a plain dict
    assert sg.generator_kwargs(rec) == G.init_kwargs
    assert set(sg.record_state_dict(rec)) == set(G.state_dict())

    loaded = sg.generator_from_pickle(data)
    assert not fake_nvidia.marker.exists()
    z = z_of()
    with torch.no_grad():
        want = G(z, None, truncation_psi=0.7, truncation_cutoff=2, noise_mode="const")
        got = loaded(z, None, truncation_psi=0.7, truncation_cutoff=2, noise_mode="const")
    assert torch.equal(want, got)


def test_a_record_that_runs_code_is_refused_and_nothing_runs(fake_nvidia, tmp_path):
    target = tmp_path / "pwned"
    data = fake_nvidia.pickle(tiny(), evil=RunsSystem(f"touch {target}"))
    assert b"system" in data
    with pytest.raises(UnsafePickleError) as exc:
        sg.load_pickle(data)
    message = str(exc.value)
    assert "refused" in message and "system" in message and "\n" not in message
    assert not target.exists() and not fake_nvidia.marker.exists()
    with pytest.raises(UnsafePickleError):
        sg.generator_from_pickle(data)
    assert not target.exists()


@pytest.mark.parametrize(
    "payload, says",
    [
        (lambda t: RunsSystem(f"touch {t}"), "system"),
        (
            lambda t: type("R", (), {"__reduce__": lambda self: (eval, (f"open({str(t)!r}, 'w')",))})(),
            "builtins.eval",
        ),
        (
            lambda t: type("R", (), {"__reduce__": lambda self: (collections.OrderedDict, (), {"x": 1})})(),
            "state of",
        ),
        (
            lambda t: torch.nn.Linear(2, 2),
            "torch.nn.modules.linear.Linear",
        ),  # an ordinary (non-record) module
    ],
)
def test_anything_but_tensors_plain_values_and_records_is_refused(tmp_path, payload, says):
    target = tmp_path / "pwned"
    data = pickle.dumps({"x": payload(target)}, protocol=2)
    with pytest.raises(UnsafePickleError, match=says):
        sg.load_pickle(data)
    assert not target.exists()


def test_persistent_ids_and_bad_files_are_one_line_errors(tmp_path):
    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, str) and obj == "ref" else None

    import io

    buf = io.BytesIO()
    WithIds(buf, protocol=2).dump({"a": "ref"})
    with pytest.raises(UnsafePickleError, match="persistent ids"):
        sg.load_pickle(buf.getvalue())

    good = pickle.dumps({"w": torch.randn(64, 64)}, protocol=3)
    (tmp_path / "cut.pkl").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.pkl").write_bytes(b"")
    torch.save({"w": torch.zeros(2)}, tmp_path / "zip.pt")
    for name, says in [
        ("cut.pkl", "truncated"),
        ("empty.pkl", "file is empty"),
        ("zip.pt", "not a readable pickle"),
    ]:
        with pytest.raises(UnsafePickleError, match=says) as exc:
            sg.load_pickle(tmp_path / name)
        assert "\n" not in str(exc.value) and name in str(exc.value)


def test_plain_tensors_and_values_round_trip():
    obj = {
        "t": torch.arange(6.0).reshape(2, 3)[:, 1:],
        "p": torch.nn.Parameter(torch.ones(2), requires_grad=False),
        "s": {1, 2},
        "od": collections.OrderedDict(a=1),
        "f": np.float64(0.5),
        "a": np.arange(3, dtype=np.int16),
        "b": b"\x00\xff",
        "dt": torch.float16,
    }
    for protocol in (2, 3, 5):
        back = sg.load_pickle(pickle.dumps(obj, protocol=protocol))
        assert torch.equal(back["t"], obj["t"]) and isinstance(back["p"], torch.nn.Parameter)
        assert (
            back["s"] == {1, 2} and back["od"] == {"a": 1} and back["f"] == 0.5 and back["b"] == b"\x00\xff"
        )
        assert back["a"].tolist() == [0, 1, 2] and back["a"].dtype == np.int16 and back["dt"] is torch.float16


def test_a_state_dict_that_does_not_fit_is_refused(fake_nvidia):
    G = tiny()
    rec = sg.load_pickle(fake_nvidia.pickle(G))["G_ema"]
    kwargs = sg.generator_kwargs(rec)
    kwargs["synthesis_kwargs"]["channel_max"] = 8
    with pytest.raises(UnsafePickleError, match="shape differs"):
        sg.generator_from_state(kwargs, sg.record_state_dict(rec))
    state = dict(sg.record_state_dict(rec))
    del state["mapping.w_avg"]
    with pytest.raises(UnsafePickleError, match="missing: mapping.w_avg"):
        sg.generator_from_state(sg.generator_kwargs(rec), state)


# --- the native generator ----------------------------------------------------------------------


def test_shapes_and_nvlabs_names():
    G = tiny()
    assert G.num_ws == 6  # b4: conv1 + b8, b16: conv0 + conv1, and the last toRGB
    z = z_of(5)
    ws = G.mapping(z, None)
    assert ws.shape == (5, 6, 32)
    img = G.synthesis(ws, noise_mode="const")
    assert img.shape == (5, 3, 16, 16) and torch.isfinite(img).all()
    names = set(G.state_dict())
    for name in [
        "mapping.fc0.weight",
        "mapping.fc1.bias",
        "mapping.w_avg",
        "synthesis.b4.const",
        "synthesis.b4.resample_filter",
        "synthesis.b4.conv1.weight",
        "synthesis.b4.conv1.noise_const",
        "synthesis.b4.conv1.noise_strength",
        "synthesis.b4.conv1.affine.weight",
        "synthesis.b8.conv0.resample_filter",
        "synthesis.b8.conv0.affine.bias",
        "synthesis.b8.torgb.weight",
        "synthesis.b16.conv1.bias",
        "synthesis.b16.torgb.affine.weight",
    ]:
        assert name in names, name
    assert "synthesis.b4.conv0.weight" not in names
    assert G.state_dict()["synthesis.b8.resample_filter"].shape == (4, 4)  # [1,3,3,1] outer product / 64
    assert torch.allclose(G.state_dict()["synthesis.b8.resample_filter"].sum(), torch.tensor(1.0))
    assert G.mapping.w_avg.shape == (32,)


def test_noise_modes():
    G = tiny()
    ws = G.mapping(z_of(), None)
    with torch.no_grad():
        a, b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
        r1, r2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        n1, n2 = G.synthesis(ws, noise_mode="none"), G.synthesis(ws, noise_mode="none")
    assert torch.equal(a, b) and torch.equal(n1, n2)
    assert not torch.equal(r1, r2) and not torch.equal(a, n1)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


def test_truncation():
    G = tiny()
    z = z_of()
    with torch.no_grad():
        plain = G.mapping(z, None)
        assert torch.equal(G.mapping(z, None, truncation_psi=1), plain)
        assert torch.equal(G.mapping(z, None, truncation_psi=1, truncation_cutoff=2), plain)
        avg = G.mapping(z, None, truncation_psi=0)
        assert torch.allclose(avg, G.mapping.w_avg.expand_as(avg))
        cut = G.mapping(z, None, truncation_psi=0, truncation_cutoff=2)
        assert torch.allclose(cut[:, :2], G.mapping.w_avg.expand(3, 2, -1)) and torch.equal(
            cut[:, 2:], plain[:, 2:]
        )
        half = G.mapping(z, None, truncation_psi=0.5)
        assert torch.allclose(half, G.mapping.w_avg + 0.5 * (plain - G.mapping.w_avg), atol=1e-6)
        assert torch.equal(
            G(z, None, truncation_psi=0.5, noise_mode="const"), G.synthesis(half, noise_mode="const")
        )


def test_deterministic_given_seed_and_gradients_reach_ws():
    a, b = tiny(seed=3), tiny(seed=3)
    z = z_of()
    with torch.no_grad():
        assert torch.equal(a(z, None, noise_mode="const"), b(z, None, noise_mode="const"))
    ws = a.mapping(z, None).detach().requires_grad_(True)
    a.synthesis(ws, noise_mode="const").square().mean().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0


def test_fused_and_unfused_modulation_agree_and_other_architectures_run():
    G = tiny()
    ws = G.mapping(z_of(), None)
    with torch.no_grad():
        fused = G.synthesis(ws, noise_mode="const", fused_modconv=True)
        unfused = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    assert torch.allclose(fused, unfused, atol=1e-5)
    for arch in ("orig", "resnet"):
        H = tiny(synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture=arch))
        assert H(z_of(), None, noise_mode="const").shape == (3, 3, 16, 16)
    C = tiny(c_dim=4)
    c = torch.eye(4)[:3]
    assert C(z_of(), c, noise_mode="const").shape == (3, 3, 16, 16)
    assert "mapping.embed.weight" in C.state_dict()


def test_upsampling_keeps_a_constant_image_constant_inside():
    f = net.setup_filter([1, 3, 3, 1])
    up = net.upsample2d(torch.ones(1, 2, 8, 8), f)
    assert up.shape == (1, 2, 16, 16)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.ones(1, 2, 12, 12))


def test_state_dict_round_trips_by_name_and_through_the_safe_file(tmp_path):
    G = tiny(seed=1)
    other = Generator(**TINY).eval()
    other.load_state_dict(G.state_dict(), strict=True)
    z = z_of()
    with torch.no_grad():
        want = G(z, None, truncation_psi=0.6, noise_mode="const")
        assert torch.equal(other(z, None, truncation_psi=0.6, noise_mode="const"), want)
    path = sg.save_generator(G, tmp_path / "g.pt")
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == sg.FORMAT and raw["kwargs"] == G.init_kwargs
    back = sg.load_generator(path)
    with torch.no_grad():
        assert torch.equal(back(z, None, truncation_psi=0.6, noise_mode="const"), want)
    torch.save({"state_dict": G.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(UnsafePickleError, match="not a converted StyleGAN2-ADA generator"):
        sg.load_generator(tmp_path / "plain.pt")


def test_saved_activation_count_on_the_meta_device():
    G = tiny()
    one, four = net.saved_activation_bytes(G, 1), net.saved_activation_bytes(G, 4)
    assert 0 < one < four
    assert next(G.parameters()).device.type == "cpu"  # the generator itself is left alone


# --- weights add -------------------------------------------------------------------------------


def test_weights_add_converts_the_pickle_once_and_records_the_converted_file(
    fake_nvidia, tmp_path, monkeypatch
):
    from reinv_bench.cli import State, cli
    from reinv_bench.contract import weights

    monkeypatch.setenv("REINV_BENCH_WEIGHTS", str(tmp_path / "rb"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    G = tiny(seed=2)
    # the entry stands for the 1024-px FFHQ architecture (tests/test_stylegan2_hostile.py checks that a
    # tiny generator is refused); here it stands for the tiny one, to test the conversion itself
    monkeypatch.setitem(sg.ENTRY_ARCHITECTURES, "stylegan2-ffhq", sg.architecture(G.init_kwargs))
    pkl = tmp_path / "ffhq.pkl"
    pkl.write_bytes(fake_nvidia.pickle(G))

    ok = CliRunner().invoke(cli, ["weights", "add", "stylegan2-ffhq", str(pkl)], obj=State(()))
    assert ok.exit_code == 0, ok.output
    dest = tmp_path / "rb" / "stylegan2-ffhq.pt"
    assert dest.is_file() and not fake_nvidia.marker.exists()
    assert sorted(p.name for p in (tmp_path / "rb").iterdir()) == [
        "stylegan2-ffhq.pt",
        "stylegan2-ffhq.pt.sha256",
    ]
    assert weights.recorded(WEIGHTS) == weights.sha256_of(dest)
    assert torch.load(dest, weights_only=True)["source"]["sha256"] == weights.sha256_of(pkl)
    listing = CliRunner().invoke(cli, ["weights"], obj=State(()))
    assert "stylegan2-ffhq" in listing.output and "unverified (recorded sha256" in listing.output

    with pytest.warns(weights.UnverifiedWeightsWarning):
        path = weights.locate(WEIGHTS)
    z = z_of()
    with torch.no_grad():
        assert torch.equal(
            sg.load_generator(path)(z, None, noise_mode="const"), G(z, None, noise_mode="const")
        )

    again = CliRunner().invoke(cli, ["weights", "add", "stylegan2-ffhq", str(pkl)], obj=State(()))
    assert again.exit_code == 0, again.output  # the conversion is byte-for-byte reproducible

    other = tmp_path / "other.pkl"
    other.write_bytes(fake_nvidia.pickle(tiny(seed=5)))
    bad = CliRunner().invoke(cli, ["weights", "add", "stylegan2-ffhq", str(other)], obj=State(()))
    assert bad.exit_code != 0 and "recorded" in bad.output and f"{other} (converted)" in bad.output

    evil = tmp_path / "evil.pkl"
    target = tmp_path / "pwned"
    evil.write_bytes(fake_nvidia.pickle(G, evil=RunsSystem(f"touch {target}")))
    refused = CliRunner().invoke(cli, ["weights", "add", "stylegan2-ffhq", str(evil)], obj=State(()))
    assert refused.exit_code != 0 and "refused" in refused.output and "system" in refused.output
    assert not target.exists() and not fake_nvidia.marker.exists()
    assert weights.recorded(WEIGHTS) == weights.sha256_of(dest)  # the installed file is untouched
    assert sorted(p.name for p in (tmp_path / "rb").iterdir()) == [
        "stylegan2-ffhq.pt",
        "stylegan2-ffhq.pt.sha256",
    ]
