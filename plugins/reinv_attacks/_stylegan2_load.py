"""Reading NVIDIA's StyleGAN2-ADA pickles without running their code, and the safe file format.

**Loading NVIDIA's pickles safely.** ``ffhq.pkl`` and the other stylegan2-ada-pytorch pickles
store each network as a ``torch_utils.persistence`` record: ``_reconstruct_persistent_obj(meta)``
with the *source code of the module* (``meta['module_src']``), the class name and the object's
state; ``pickle.load`` would ``exec`` that source. ``load_pickle`` reads them with a restricted
unpickler (pure-Python ``pickle._Unpickler``) that resolves only

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> a ``PersistentRecord`` holding the
  class name, the state and the source *as a string* (never compiled or run);
- tensor rebuilding: ``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``,
  ``_rebuild_parameter_with_state`` (empty state only), ``torch._tensor._rebuild_from_type_v2``
  (Tensor/Parameter only) and ``torch.storage._load_from_bytes`` (its bytes read by
  ``torch.load(weights_only=True)``), torch dtypes;
- plain values: ``collections.OrderedDict``, ``builtins.set``/``frozenset``,
  ``_codecs.encode`` (latin-1 only), ``dnnlib.util.EasyDict`` (read as a dict), numpy scalars,
  dtypes and arrays (``numpy.core.multiarray.scalar``/``_reconstruct``,
  ``numpy.core.numeric._frombuffer``, ``numpy.dtype``, ``numpy.ndarray``; ``numpy._core`` alike),

and refuses every other global, every persistent id and every object state (``BUILD``) on
anything but numpy dtypes/arrays with ``UnsafePickleError`` (one line naming what was refused).
``generator_from_pickle(path)`` builds the native ``Generator`` from the ``G_ema`` record's init
arguments and loads its parameters and buffers strictly by name and shape (a 265 MB pickle of
two 1024 px generators: 4 s on CPU).

**Weights.** ``reinv-bench weights add stylegan2-ffhq ffhq.pkl`` (the file from
https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl, which PPA uses)
converts once, through the restricted unpickler, to ``stylegan2-ffhq.pt``: a torch file of the
init kwargs, the state dict and the pickle's SHA-256, read back with ``weights_only=True``
(``load_generator``). NVIDIA publishes no hash, so the SHA-256 of the converted file is recorded
when first added and checked on every use. ``save_generator`` writes the same format for any
generator (tests register tiny random ones).
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._stylegan2_net import Generator

FORMAT = "reinv-bench/stylegan2-ada-generator/1"  # the "format" field of a converted file


# ---------------------------------------------------------------------------------------------
# Restricted unpickling of stylegan2-ada-pytorch pickles


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that cannot be read without running code, or cannot be read at all (one line)."""


@dataclass
class PersistentRecord:
    """A ``torch_utils.persistence`` object as plain data: its class, its state (``__dict__``:
    ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``, ``_init_kwargs``, ...) and the
    module source it carried, kept as text and never run."""

    class_name: str
    state: dict
    module_src: str = field(repr=False, default="")
    version: Any = None

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def __setstate__(self, state):  # BUILD is refused before this; belt and braces
        raise UnsafePickleError("refused: object state for a persistence record")


def _reconstruct_persistent_obj(meta) -> PersistentRecord:
    if (
        not isinstance(meta, dict)
        or meta.get("type") != "class"
        or not isinstance(meta.get("class_name"), str)
    ):
        raise UnsafePickleError(
            "refused: a torch_utils.persistence record without the expected meta "
            "(type 'class', class_name, state)"
        )
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise UnsafePickleError(
            f"refused: persistence record {meta['class_name']} has a {type(state).__name__} state"
        )
    src = meta.get("module_src")
    return PersistentRecord(
        meta["class_name"], dict(state), src if isinstance(src, str) else "", meta.get("version")
    )


def _storage_from_bytes(b):
    if not isinstance(b, (bytes, bytearray)):
        raise UnsafePickleError("refused: torch.storage._load_from_bytes without bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            s = torch.load(io.BytesIO(bytes(b)), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - weights_only refusals and corrupt data alike
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise UnsafePickleError(
                f"refused: a tensor storage that torch.load(weights_only=True) cannot read "
                f"({type(exc).__name__}: {first})"
            ) from None
    if not isinstance(s, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise UnsafePickleError(
            f"refused: torch.storage._load_from_bytes gave a {type(s).__name__}, not a storage"
        )
    return s


def _no_hooks(hooks, what):
    if hooks:
        raise UnsafePickleError(f"refused: {what} with backward hooks")


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise UnsafePickleError(f"refused: a tensor rebuilt from a {type(storage).__name__}, not a storage")
    _no_hooks(backward_hooks, "a tensor")
    return torch._utils._rebuild_tensor_v2(
        storage,
        int(storage_offset),
        tuple(size),
        tuple(stride),
        bool(requires_grad),
        collections.OrderedDict(),
        metadata,
    )


class _NotCallable:
    """A type the pickle may name (as an argument) but not call or instantiate."""

    def __init__(self, cls):
        self.cls = cls

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"refused: the pickle calls {self.cls.__module__}.{self.cls.__qualname__}")

    def __eq__(self, other):
        return other is self.cls or (isinstance(other, _NotCallable) and other.cls is self.cls)

    def __hash__(self):
        return hash(self.cls)


def _rebuild_parameter(data, requires_grad, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("refused: a parameter rebuilt from something other than a tensor")
    _no_hooks(backward_hooks, "a parameter")
    return torch.nn.Parameter(data, bool(requires_grad))


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    if state:
        raise UnsafePickleError("refused: a parameter with Python attributes")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_REBUILDERS = (_rebuild_tensor_v2, _rebuild_parameter, _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
    new_type = getattr(new_type, "cls", new_type)  # find_class hands types out as _NotCallable
    if func not in _REBUILDERS or new_type not in (torch.Tensor, torch.nn.Parameter) or state:
        raise UnsafePickleError(
            "refused: torch._tensor._rebuild_from_type_v2 with another function, a tensor "
            "subclass or Python attributes"
        )
    return func(*args)


def _latin1(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refused: _codecs.encode other than str to latin-1 bytes")
    return text.encode("latin1")


def _numpy_core(module, name):
    core = getattr(np, "_core", None) or np.core
    return getattr(getattr(core, module), name)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    (
        "torch",
        "Tensor",
    ): torch.Tensor,  # only as _rebuild_from_type_v2's type argument: not callable via REDUCE
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1,
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
}
_NUMPY_CORE = {
    ("multiarray", "scalar"),
    ("multiarray", "_reconstruct"),
    ("numeric", "_frombuffer"),
}  # numpy[._]core.
_CLASSES_CALLABLE = {
    collections.OrderedDict,
    set,
    frozenset,
    dict,
    np.dtype,
}  # harmless to call with plain data


def _empty(state) -> bool:
    """Whether an object state sets nothing (None, {}, or a (dict, slots) pair of those)."""
    if state is None or (isinstance(state, dict) and not state):
        return True
    return isinstance(state, tuple) and len(state) == 2 and all(_empty(x) for x in state)


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles tensors, plain values and ``torch_utils.persistence`` records, nothing else:
    every other global, persistent ids, and object state (BUILD) on anything but numpy
    dtypes/arrays raise ``UnsafePickleError``. Nothing from the file is imported or run."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names (protocols 0-2), as pickle itself maps them
            import _compat_pickle

            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in _ALLOWED:
            obj = _ALLOWED[(module, name)]
        elif (
            module.startswith(("numpy.core.", "numpy._core.")) and (module.split(".")[2], name) in _NUMPY_CORE
        ):
            obj = _numpy_core(module.split(".")[2], name)
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            obj = getattr(torch, name)
        else:
            what = f"{module}.{name}"
            raise UnsafePickleError(
                f"refused: the pickle references {what}, which is not a tensor, a plain value "
                "or a torch_utils.persistence record (nothing from it was run)"
            )
        if isinstance(obj, type) and obj not in _CLASSES_CALLABLE and obj is not np.ndarray:
            return _NotCallable(obj)
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(
            "refused: the pickle uses persistent ids (a torch.save file? read it with "
            "torch.load(weights_only=True))"
        )

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, (np.dtype, np.ndarray)):
            inst.__setstate__(state)
        elif not _empty(state):
            raise UnsafePickleError(f"refused: the pickle sets the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = _load_build


def load_pickle(path_or_bytes) -> Any:
    """The contents of a stylegan2-ada-pytorch pickle (or any pickle of tensors and plain
    values) with persistence records as ``PersistentRecord``; ``UnsafePickleError`` otherwise."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        f, where = io.BytesIO(path_or_bytes), "pickle"
    else:
        path = Path(path_or_bytes)
        if path.is_file() and path.stat().st_size == 0:
            raise UnsafePickleError(f"{path}: file is empty")
        f, where = open(path, "rb"), str(path)  # noqa: SIM115 - closed below
    try:
        return RestrictedUnpickler(f).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{where}: {exc}") from None
    except EOFError:
        raise UnsafePickleError(f"{where}: file is truncated (the pickle ends early)") from None
    except Exception as exc:  # noqa: BLE001 - malformed data: one line, whatever raised
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        if "truncated" in text or "ran out of input" in text.lower():
            raise UnsafePickleError(f"{where}: file is truncated (the pickle ends early)") from None
        raise UnsafePickleError(f"{where}: not a readable pickle ({type(exc).__name__}: {text})") from None
    finally:
        f.close()


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict (parameters and persistent buffers, by dotted name) of a record tree."""
    state = record.state
    out: dict[str, torch.Tensor] = collections.OrderedDict()
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise UnsafePickleError(f"{record.class_name}.{name} is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t.detach()
    for name, sub in (state.get("_modules") or {}).items():
        if sub is None:
            continue
        if not isinstance(sub, PersistentRecord):
            raise UnsafePickleError(
                f"{record.class_name}.{name} is a {type(sub).__name__}, not a persistence record"
            )
        out.update(record_state_dict(sub, f"{prefix}{name}."))
    return out


_GENERATOR_ARGS = (
    "z_dim",
    "c_dim",
    "w_dim",
    "img_resolution",
    "img_channels",
    "mapping_kwargs",
    "synthesis_kwargs",
)


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


def generator_kwargs(record: PersistentRecord) -> dict:
    """The ``Generator`` init kwargs of a record (its positional and keyword init arguments)."""
    if record.class_name != "Generator":
        raise UnsafePickleError(f"the record is a {record.class_name}, not a Generator")
    args = record.init_args
    if len(args) > len(_GENERATOR_ARGS):
        raise UnsafePickleError(f"Generator record with {len(args)} positional init arguments")
    kwargs = dict(zip(_GENERATOR_ARGS, args))
    kwargs.update(record.init_kwargs)
    unknown = set(kwargs) - set(_GENERATOR_ARGS)
    if unknown:
        raise UnsafePickleError(f"Generator record with unknown init arguments: {', '.join(sorted(unknown))}")
    return _plain(kwargs)


def generator_from_state(kwargs: dict, state: dict) -> Generator:
    """A native ``Generator`` built with ``kwargs``; ``state`` loaded strictly (every name, every shape)."""
    G = Generator(**kwargs)
    own = G.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or bad:

        def few(names):
            return ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")

        parts = [
            f"{what}: {few(names)}"
            for what, names in (("missing", missing), ("unexpected", extra), ("shape differs", bad))
            if names
        ]
        raise UnsafePickleError(f"state dict does not fit Generator({kwargs}): {'; '.join(parts)}")
    G.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return G.eval().requires_grad_(False)


def generator_from_pickle(path_or_bytes, key: str = "G_ema") -> Generator:
    """The native generator of a stylegan2-ada-pytorch pickle (``G_ema`` by default), read with
    the restricted unpickler: no code from the pickle runs."""
    data = load_pickle(path_or_bytes)
    record = data.get(key) if isinstance(data, dict) else data
    if not isinstance(record, PersistentRecord):
        have = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise UnsafePickleError(f"no {key!r} network record in the pickle (it holds {have})")
    return generator_from_state(generator_kwargs(record), record_state_dict(record))


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
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UnsafePickleError(f"{path} is not a converted StyleGAN2-ADA generator (format {FORMAT!r})")
    return generator_from_state(data["kwargs"], data["state_dict"]).to(device)


def convert_pickle(source, dest) -> Path:
    """Convert an NVIDIA pickle's ``G_ema`` into the safe format (also records the pickle's SHA-256)."""
    source = Path(source)
    G = generator_from_pickle(source)
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return save_generator(G, dest, source={"filename": source.name, "sha256": h.hexdigest()})
