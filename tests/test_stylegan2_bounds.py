"""Issue 30, items 16 and 19: the StyleGAN pickle loader meters every object the unpickler creates (not only
tensor data and copies), bounds how deep containers nest, refuses a tensor view that does not fit its
storage before torch sees it, and warns when a record's embedded source carries code that NVIDIA's own
loader would run. The pickles are written opcode by opcode (``Asm`` of test_stylegan2_hostile)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
from pathlib import Path

import pytest
import torch
from test_stylegan2 import fake_nvidia, tiny  # noqa: F401 - the fixture, reused
from test_stylegan2_hostile import Asm, Call, legacy_blob

from reinv_attacks import _stylegan2_load as sg
from reinv_attacks import _stylegan2_unpickle as unpickle
from reinv_attacks._stylegan2_load import UnsafePickleError

ROOT = Path(__file__).resolve().parents[1]


def empty_sets(n: int) -> bytes:
    """``n`` one-byte EMPTY_SET opcodes: ~216 bytes of set each."""
    return pickle.PROTO + b"\x04" + pickle.EMPTY_SET * n + pickle.STOP


def deep_tuple_key(depth: int) -> bytes:
    """A dict whose key is a tuple ``depth`` deep: setting it hashes the tuple recursively in C."""
    return (
        pickle.PROTO
        + b"\x04"
        + pickle.EMPTY_DICT
        + pickle.EMPTY_TUPLE
        + pickle.TUPLE1 * depth
        + pickle.NONE
        + pickle.SETITEM
        + pickle.STOP
    )


def test_an_empty_set_flood_is_refused_with_memory_bounded():
    data = empty_sets(1 << 20)  # 1 MiB of opcodes: 216 MiB of sets unmetered
    tracemalloc.start()
    try:
        with pytest.raises(UnsafePickleError) as exc:
            sg.load_pickle(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "the objects the pickle creates" in str(exc.value) and "beyond the file's size" in str(exc.value)
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB"


def test_deep_nesting_is_refused_not_hashed():
    with pytest.raises(UnsafePickleError, match=r"containers nested deeper than 100"):
        sg.load_pickle(deep_tuple_key(unpickle.MAX_NESTING + 1))
    assert sg.load_pickle(deep_tuple_key(50)) is not None  # what a real pickle nests is fine


@pytest.mark.integration  # slow: tests/integration tier (pyproject)
def test_weights_add_of_a_million_deep_tuple_is_one_line_and_leaves_no_temporary_folder(tmp_path):
    """A fresh process (the unmetered loader segfaulted hashing the key, leaving ``weights/tmp*``)."""
    pkl = tmp_path / "deep.pkl"
    pkl.write_bytes(deep_tuple_key(10**6))
    home = tmp_path / "weights"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
        "REINV_BENCH_WEIGHTS": str(home),
        "OMP_NUM_THREADS": "1",
    }
    run = subprocess.run(
        [sys.executable, "-c", "from reinv_bench.cli import main; main()", "weights", "add"]
        + ["stylegan2-ffhq", str(pkl)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
    assert len(lines) == 1 and "containers nested deeper than 100" in lines[0], lines
    assert not list(home.glob("tmp*"))


def test_a_genuine_generator_pickle_nests_well_within_the_bound(fake_nvidia):  # noqa: F811
    data = fake_nvidia.pickle(tiny())
    u = unpickle.RestrictedUnpickler(__import__("io").BytesIO(data), len(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.load()
    deepest = max(d for d, _ in u.depth.values())
    assert 10 < deepest <= unpickle.MAX_NESTING // 2, deepest
    assert u.budget["objects"] > 0


# --- tensor views that do not fit their storage -------------------------------------------------


def view(size, stride, offset=0) -> bytes:
    storage = Call("torch.storage", "_load_from_bytes", legacy_blob(3, b"\0" * 12))  # 3 floats
    args = (storage, offset, size, stride, False, Call("collections", "OrderedDict"))
    return Asm().done({"w": Call("torch._utils", "_rebuild_tensor_v2", *args)})


FORGED_VIEWS = {
    "2**40 elements": ((1 << 40,), (1,), 0),
    "overflowing product": ((1 << 62, 1 << 62), (1, 1), 0),
    "negative size": ((-5,), (1,), 0),
    "negative stride": ((3,), (-1,), 0),
    "expanded 2**40 elements": ((1 << 20, 1 << 20), (0, 0), 0),
    "past the end": ((2,), (1,), 2),
    "more strides than sizes": ((3,), (1, 1), 0),
}


@pytest.mark.parametrize("name", list(FORGED_VIEWS))
def test_a_view_outside_its_storage_is_refused_before_torch_sees_it(name, monkeypatch):
    calls = []
    monkeypatch.setattr(torch._utils, "_rebuild_tensor_v2", lambda *a, **k: calls.append(a))
    size, stride, offset = FORGED_VIEWS[name]
    with pytest.raises(UnsafePickleError) as exc:
        sg.load_pickle(view(size, stride, offset))
    message = str(exc.value)
    assert "does not fit its storage of 3 elements (forged sizes)" in message, message
    assert "allocate" not in message and "\n" not in message and len(message) < 300
    assert calls == []


def test_a_view_inside_its_storage_still_loads():
    t = sg.load_pickle(view((1, 2), (2, 1), 1))["w"]
    assert t.shape == (1, 2) and t.storage_offset() == 1


# --- embedded source that NVIDIA's loader would run -----------------------------------------------

NETWORKS_LIKE = textwrap.dedent('''
    """A module shaped as stylegan2-ada-pytorch's training/networks.py: imports and definitions only."""
    import numpy as np
    import torch
    from torch_utils import misc
    from torch_utils import persistence

    SCALE = 2

    @misc.profiled_function
    def normalize(x, dim=1, eps=1e-8):
        return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()

    @persistence.persistent_class
    class Generator(torch.nn.Module):
        def __init__(self, z_dim, filt=[1, 3, 3, 1], clamp=None):
            super().__init__()
            self.z_dim = z_dim

        def forward(self, z):
            return normalize(z) * np.float32(SCALE)
''')


def record_pickle(src: str) -> bytes:
    meta = {"type": "class", "version": 6, "module_src": src, "class_name": "Generator", "state": {}}
    return Asm().done({"G_ema": Call("torch_utils.persistence", "_reconstruct_persistent_obj", meta)})


@pytest.mark.parametrize(
    "extra, says",
    [
        ("import os\nos.system('id')\n", "a statement run at import"),
        (
            "@persistence.persistent_class\nclass G:\n    def __setstate__(self, s):\n        pass\n",
            "__setstate__",
        ),
        ("def f(x=open('/etc/passwd').read()):\n    pass\n", "a computed default value of f"),
        ("@__import__('os').system\ndef f():\n    pass\n", "decorator of f"),
        ("class C:\n    print('hi')\n", "a statement run at the definition of class C"),
    ],
)
def test_embedded_source_that_runs_code_on_load_is_warned_about(extra, says, tmp_path):
    path = tmp_path / "network.pkl"
    path.write_bytes(record_pickle(NETWORKS_LIKE + extra))
    with pytest.warns(unpickle.EmbeddedCodeWarning) as seen:
        rec = sg.load_pickle(path)["G_ema"]
    message = str(seen[0].message)
    assert says in message and str(path) in message and "would run on load" in message, message
    assert "did not run it" in message and "\n" not in message
    assert isinstance(rec, sg.PersistentRecord)  # still loaded as data


def test_a_networks_like_source_loads_without_a_word():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sg.load_pickle(record_pickle(NETWORKS_LIKE))
    assert unpickle.load_time_code(NETWORKS_LIKE) == []


def test_the_fake_nvidia_pickle_is_warned_about_once(fake_nvidia):  # noqa: F811
    """Its records carry ``open(marker).write(...)`` at module level: one warning for the whole file."""
    with pytest.warns(unpickle.EmbeddedCodeWarning) as seen:
        sg.generator_from_pickle(fake_nvidia.pickle(tiny()))
    assert len([w for w in seen if w.category is unpickle.EmbeddedCodeWarning]) == 1
    assert not fake_nvidia.marker.exists()
