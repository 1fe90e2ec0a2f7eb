"""The native StyleGAN2-ADA generator from NVIDIA's pickles, and the safe file format.

NVIDIA's pickles are read by ``_stylegan2_unpickle.load_pickle`` (restricted and bounded: no code from
the file runs; its names are re-exported here). ``generator_from_pickle(path)`` builds the native
``Generator`` from the ``G_ema`` record's init arguments and loads its parameters and buffers strictly
by name and shape (a 265 MB pickle of two 1024 px generators: 4 s on CPU). Bounded memory, as the
unpickler:

- the generator: its init arguments are checked against ``GENERATOR_ARGS`` (the arguments of
  stylegan2-ada-pytorch's ``training/networks.py`` that ``train.py`` and ``legacy.py`` write:
  resolution a power of two 4..1024, widths <= 1024, mapping layers 1..16, the official configs
  use 512 and 2 or 8) without walking into any value, so shared or nested references in them are
  refused rather than expanded; the record tree is walked at most ``MAX_DEPTH`` modules deep and
  ``MAX_RECORDS``/``MAX_TENSORS`` wide; the generator is first built on the meta device, its
  names and shapes compared, and its parameters allocated only if they fit the file's size.

**Weights.** ``reinv-bench weights add stylegan2-ffhq ffhq.pkl`` (the file from
https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl, which PPA uses)
converts once, through the restricted unpickler, to ``stylegan2-ffhq.pt``: a torch file of the
init kwargs, the state dict and the pickle's SHA-256, read back with ``weights_only=True``
(``load_generator``). NVIDIA publishes no hash, so the SHA-256 of the converted file is recorded
when first added and checked on every use; the generator must have the entry's architecture
(``ENTRY_ARCHITECTURES``: for ``stylegan2-ffhq`` 1024 px RGB, z and w 512, unconditional, 8
mapping layers, channel_base 32768, channel_max 512), else it is refused naming the entry it
fits, if any. ``save_generator`` writes the same format for any
generator (tests register tiny random ones).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from ._stylegan2_net import ACTIVATIONS, Generator
from ._stylegan2_unpickle import (  # noqa: F401 - re-exported: the loader's names stay importable from here
    ITEM_BYTES,
    MAX_INFLATION,
    MAX_ITEMSIZE,
    MAX_TENSOR_BYTES,
    SLACK,
    PersistentRecord,
    RestrictedUnpickler,
    UnsafePickleError,
    _declared_storage_bytes,
    _first_line,
    _legacy_storage_bytes,
    _storage_from_bytes,
    _zip_storage_bytes,
    load_pickle,
)

FORMAT = "reinv-bench/stylegan2-ada-generator/1"  # the "format" field of a converted file

# Bounds of the generator a pickle declares, checked before anything is built

MAX_RESOLUTION = 1024  # img_resolution: a power of two, 4..1024 (NVIDIA's datasets and pickles stop at 1024)
MAX_WIDTH = 1024  # z_dim, w_dim, c_dim, channel_max, mapping widths (official configs: 512 at most)
MAX_MAPPING_LAYERS = 16  # mapping num_layers (official configs: 2 or 8)
MAX_IMG_CHANNELS = 4  # grey, RGB, RGBA
MAX_DEPTH = 8  # module nesting of a network record (the generator: 4, G.synthesis.b1024.conv0.affine)
MAX_RECORDS = 1024  # module records visited in one network (the 1024-px generator: 72)
MAX_TENSORS = 4096  # parameters and buffers of one network (the 1024-px generator: 182)


# ---------------------------------------------------------------------------------------------
# The generator's init arguments, checked before anything is built


def _short(v) -> str:
    """A value for a one-line message, without ever printing a container (it may be huge or deep)."""
    if isinstance(v, bool) or v is None or isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return repr(v) if abs(v) < 10**18 else f"an integer of {v.bit_length()} bits"
    if isinstance(v, str):
        return repr(v[:40]) + ("..." if len(v) > 40 else "")
    return f"a {type(v).__name__}"


def _whole(lo: int, hi: int, power_of_two: bool = False):
    def check(v):
        if type(v) is not int or not lo <= v <= hi or (power_of_two and v & (v - 1)):
            return f"an integer in {lo}..{hi}" + (", a power of two" if power_of_two else "")

    return check


def _real(lo: float, hi: float):
    def check(v):
        if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
            return f"a number in {lo:g}..{hi:g}"

    return check


def _optional(inner):
    return lambda v: None if v is None else inner(v)


def _choice(*options):
    return lambda v: None if isinstance(v, str) and v in options else f"one of {', '.join(options)}"


def _flag(v):
    return None if type(v) is bool else "True or False"


def _taps(v):
    if isinstance(v, (list, tuple)) and 1 <= len(v) <= 8 and not any(_real(-1e6, 1e6)(x) for x in v):
        return None
    return "a list of 1..8 filter taps"


# the init arguments the native Generator takes (those of stylegan2-ada-pytorch's training/networks.py that
# train.py and legacy.py write), with the bounds above
GENERATOR_ARGS = {
    "z_dim": _whole(0, MAX_WIDTH),
    "c_dim": _whole(0, MAX_WIDTH),
    "w_dim": _whole(1, MAX_WIDTH),
    "img_resolution": _whole(4, MAX_RESOLUTION, power_of_two=True),
    "img_channels": _whole(1, MAX_IMG_CHANNELS),
    "mapping_kwargs": {
        "num_layers": _whole(1, MAX_MAPPING_LAYERS),
        "embed_features": _optional(_whole(1, MAX_WIDTH)),
        "layer_features": _optional(_whole(1, MAX_WIDTH)),
        "activation": _choice(*ACTIVATIONS),
        "lr_multiplier": _real(1e-6, 1e3),
        "w_avg_beta": _optional(_real(0, 1)),
    },
    "synthesis_kwargs": {
        "channel_base": _whole(1, 1 << 20),
        "channel_max": _whole(1, MAX_WIDTH),
        "num_fp16_res": _whole(0, 9),
        "conv_clamp": _optional(_real(0, 1e9)),
        "architecture": _choice("orig", "skip", "resnet"),
        "resample_filter": _taps,
        "use_noise": _flag,
        "activation": _choice(*ACTIVATIONS),
        "fp16_channels_last": _flag,
        "channels_last": _flag,
    },
}
_POSITIONAL = tuple(GENERATOR_ARGS)  # Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, ...)
_REQUIRED = _POSITIONAL[:5]


def _plain_scalar(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)) and len(v) <= 8:
        return [x.item() if isinstance(x, np.generic) else x for x in v]
    return v


def check_generator_kwargs(kwargs) -> dict:
    """The Generator init kwargs as plain values, each checked against ``GENERATOR_ARGS`` (what the native
    generator supports, within the bounds above) before anything is built: ``UnsafePickleError`` (one line,
    every problem) otherwise. Never walks into a value: a container where a number belongs is refused."""
    problems: list[str] = []

    def section(d, schema: dict, where: str) -> dict:
        if not isinstance(d, dict):
            problems.append(f"{where or 'the init arguments'} are {_short(d)}, not a dict")
            return {}
        unknown = [k for k in d if k not in schema]
        if unknown:
            more = f" (+{len(unknown) - 4} more)" if len(unknown) > 4 else ""
            problems.append(f"unknown {where}argument {', '.join(map(_short, unknown[:4]))}{more}")
            return {}
        out = {}
        for key, check in schema.items():
            if key not in d:
                continue
            if isinstance(check, dict):
                out[key] = section(d[key], check, f"{key}.")
                continue
            v = _plain_scalar(d[key])
            expected = check(v)
            if expected:
                problems.append(f"{where}{key}={_short(v)} (expected {expected})")
            out[key] = v
        return out

    out = section(kwargs, GENERATOR_ARGS, "")
    missing = [k for k in _REQUIRED if k not in out] if isinstance(kwargs, dict) and not problems else []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if not problems:
        res, syn = out["img_resolution"], out.get("synthesis_kwargs", {})
        if out["z_dim"] + out["c_dim"] == 0:
            problems.append("z_dim and c_dim are both 0 (the mapping network has no input)")
        if min(syn.get("channel_base", 32768) // res, syn.get("channel_max", 512)) < 1:
            problems.append(f"channel_base={syn['channel_base']} leaves no channels at {res} px")
    if problems:
        raise UnsafePickleError(f"refused: Generator init arguments out of bounds: {'; '.join(problems)}")
    return out


# the architecture each generator weights entry must have (``weights add NAME``): the init arguments that fix
# its shapes, defaults filled in. stylegan2-ffhq: NVIDIA's ffhq.pkl, train.py --cfg=paper1024 (fmaps=1:
# channel_base 32768, channel_max 512, map=8) with z_dim = w_dim = 512, 1024 px RGB, unconditional
ENTRY_ARCHITECTURES = {
    "stylegan2-ffhq": dict(
        img_resolution=1024,
        img_channels=3,
        z_dim=512,
        w_dim=512,
        c_dim=0,
        num_layers=8,
        channel_base=32768,
        channel_max=512,
        architecture="skip",
    ),
}


def architecture(kwargs: dict) -> dict:
    """The shape-fixing init arguments of checked kwargs (``ENTRY_ARCHITECTURES``' keys), defaults filled in
    (those of ``Generator``, the same as the reference's)."""
    mapping, syn = kwargs.get("mapping_kwargs", {}), kwargs.get("synthesis_kwargs", {})
    return dict(
        img_resolution=kwargs["img_resolution"],
        img_channels=kwargs["img_channels"],
        z_dim=kwargs["z_dim"],
        w_dim=kwargs["w_dim"],
        c_dim=kwargs["c_dim"],
        num_layers=mapping.get("num_layers", 8),
        channel_base=syn.get("channel_base", 32768),
        channel_max=syn.get("channel_max", 512),
        architecture=syn.get("architecture", "skip"),
    )


def check_entry(name: str, kwargs: dict) -> None:
    """Refuse (one line) a generator whose architecture is not the one weights entry ``name`` stands for,
    naming the entries it would fit."""
    want = ENTRY_ARCHITECTURES.get(name)
    if want is None:
        return
    have = architecture(kwargs)
    differ = [f"{k} {have[k]} (expected {v})" for k, v in want.items() if have[k] != v]
    if not differ:
        return
    fits = [n for n, a in ENTRY_ARCHITECTURES.items() if all(have[k] == v for k, v in a.items())]
    hint = (
        f"it is the {fits[0]} architecture: `reinv-bench weights add {fits[0]} FILE`"
        if fits
        else f"no generator entry has this architecture (entries: {', '.join(ENTRY_ARCHITECTURES)})"
    )
    raise UnsafePickleError(
        f"refused: a {have['img_resolution']}-px generator, not {name}: {'; '.join(differ)}; {hint}"
    )


def generator_kwargs(record: PersistentRecord) -> dict:
    """The ``Generator`` init kwargs of a record (its positional and keyword init arguments), checked."""
    if record.class_name != "Generator":
        raise UnsafePickleError(f"the record is a {record.class_name[:60]}, not a Generator")
    args = record.state.get("_init_args") or ()
    kw = record.state.get("_init_kwargs") or {}
    if not isinstance(args, (tuple, list)) or len(args) > len(_POSITIONAL):
        raise UnsafePickleError(f"refused: Generator record with {_short(args)} as positional init arguments")
    if not isinstance(kw, dict):
        raise UnsafePickleError(f"refused: Generator record with {_short(kw)} as keyword init arguments")
    kwargs = dict(zip(_POSITIONAL, args))
    twice = [k for k in kwargs if k in kw]
    if twice:
        raise UnsafePickleError(f"refused: Generator record gives {', '.join(twice)} twice")
    kwargs.update(kw)
    return check_generator_kwargs(kwargs)


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict (parameters and persistent buffers, by dotted name) of a record tree, at most
    ``MAX_DEPTH`` modules deep, ``MAX_RECORDS`` records and ``MAX_TENSORS`` tensors (shared
    references to one record count each time)."""
    out: dict[str, torch.Tensor] = collections.OrderedDict()
    visits = 0

    def walk(rec: PersistentRecord, prefix: str, depth: int) -> None:
        nonlocal visits
        visits += 1
        if depth > MAX_DEPTH or visits > MAX_RECORDS:
            raise UnsafePickleError(
                f"refused: the network's modules nest deeper than {MAX_DEPTH} or number more than "
                f"{MAX_RECORDS} (a chain or shared references of _modules)"
            )
        state = rec.state
        skip = state.get("_non_persistent_buffers_set") or ()
        if not isinstance(skip, (set, frozenset, list, tuple)):
            raise UnsafePickleError(f"{rec.class_name[:60]}: _non_persistent_buffers_set is {_short(skip)}")
        for kind in ("_parameters", "_buffers", "_modules"):
            entries = state.get(kind) or {}
            if not isinstance(entries, dict):
                raise UnsafePickleError(f"{rec.class_name[:60]}.{kind} is {_short(entries)}, not a dict")
            for name, v in entries.items():
                if not isinstance(name, str):
                    raise UnsafePickleError(f"{rec.class_name[:60]}.{kind} has a {type(name).__name__} name")
                if v is None or (kind == "_buffers" and name in skip):
                    continue
                if kind == "_modules":
                    if not isinstance(v, PersistentRecord):
                        what = f"{rec.class_name[:60]}.{name[:60]} is a {type(v).__name__}"
                        raise UnsafePickleError(f"{what}, not a persistence record")
                    walk(v, f"{prefix}{name}.", depth + 1)
                    continue
                if not isinstance(v, torch.Tensor):
                    raise UnsafePickleError(
                        f"{rec.class_name[:60]}.{name[:60]} is a {type(v).__name__}, not a tensor"
                    )
                if len(out) >= MAX_TENSORS:
                    raise UnsafePickleError(f"refused: the network has more than {MAX_TENSORS} tensors")
                out[prefix + name] = v.detach()

    walk(record, prefix, 0)
    return out


def _plain(v):
    """Init arguments as plain Python values (numpy scalars to numbers, tuples to lists)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise UnsafePickleError(f"unexpected init argument of type {type(v).__name__}")


def generator_from_state(kwargs: dict, state: dict, max_bytes: int | None = None) -> Generator:
    """A native ``Generator`` built with ``kwargs`` (checked first); ``state`` loaded strictly (every
    name, every shape). With ``max_bytes`` (an untrusted pickle's size) the generator is first built
    on the meta device, compared and refused if its parameters need more than ``max_bytes``, before
    any parameter is allocated (the first meta build of a process imports torch's meta kernels, a few
    seconds once); without (a converted file, a cached prior: kwargs within the bounds) on the CPU."""
    kwargs = check_generator_kwargs(kwargs)
    with torch.device("cpu" if max_bytes is None else "meta"):
        G = Generator(**kwargs)
    own = G.state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafePickleError("the state dict is not a dict of tensors")
    names = set(map(str, state))
    missing = sorted(set(own) - names)
    extra = sorted(names - set(own))
    bad = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or bad:

        def few(names):
            return ", ".join(n[:80] for n in names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")

        parts = [
            f"{what}: {few(names)}"
            for what, names in (("missing", missing), ("unexpected", extra), ("shape differs", bad))
            if names
        ]
        raise UnsafePickleError(f"state dict does not fit Generator({kwargs}): {'; '.join(parts)}")
    if max_bytes is not None:
        need = sum(t.numel() * t.element_size() for t in own.values())
        if need > max_bytes:
            raise UnsafePickleError(
                f"refused: the generator's parameters take {need} bytes, more than the file's {max_bytes}"
            )
        G = G.to_empty(device="cpu")
    G.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return G.eval().requires_grad_(False)


def generator_from_pickle(path_or_bytes, key: str = "G_ema", entry: str | None = None) -> Generator:
    """The native generator of a stylegan2-ada-pytorch pickle (``G_ema`` by default), read with
    the restricted unpickler: no code from the pickle runs, every size is checked before it is
    allocated; with ``entry`` (a weights entry's name), its architecture must be that entry's."""
    data = load_pickle(path_or_bytes)
    is_bytes = isinstance(path_or_bytes, (bytes, bytearray))
    where = "pickle" if is_bytes else str(path_or_bytes)
    size = len(path_or_bytes) if is_bytes else Path(path_or_bytes).stat().st_size
    try:
        record = data.get(key) if isinstance(data, dict) else data
        if not isinstance(record, PersistentRecord):
            have = (
                ", ".join(_short(k) for k in itertools.islice(data, 8))
                if isinstance(data, dict)
                else _short(data)
            )
            raise UnsafePickleError(f"no {key!r} network record in the pickle (it holds {have})")
        kwargs = generator_kwargs(record)
        if entry is not None:
            check_entry(entry, kwargs)
        return generator_from_state(kwargs, record_state_dict(record), max_bytes=size)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# The safe file format (kwargs + state dict, loaded with weights_only=True)


def save_generator(G: Generator, path, **extra) -> Path:
    """Write ``G`` as a file ``load_generator`` reads with ``weights_only=True``."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    torch.save({"format": FORMAT, "kwargs": _plain(G.init_kwargs), "state_dict": state, **extra}, path)
    return path


def load_generator(path, device: str | torch.device = "cpu") -> Generator:
    """A generator written by ``save_generator`` or by ``weights add stylegan2-...``

    (never unpickles code)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(data.get("state_dict"), dict)
    ):
        raise UnsafePickleError(f"{path} is not a converted StyleGAN2-ADA generator (format {FORMAT!r})")
    return generator_from_state(data.get("kwargs"), data["state_dict"]).to(device)


def convert_pickle(source, dest, entry: str | None = None) -> Path:
    """Convert an NVIDIA pickle's ``G_ema`` into the safe format (also records the pickle's SHA-256);
    with ``entry``, only a generator of that weights entry's architecture (``ENTRY_ARCHITECTURES``)."""
    source = Path(source)
    G = generator_from_pickle(source, entry=entry)
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return save_generator(G, dest, source={"filename": source.name, "sha256": h.hexdigest()})
