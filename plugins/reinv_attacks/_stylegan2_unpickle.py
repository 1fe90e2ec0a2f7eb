"""Reading NVIDIA's StyleGAN2-ADA pickles without running their code (the restricted, bounded unpickler;
``_stylegan2_load`` builds the generator from what it reads and holds the safe file format).

**Loading NVIDIA's pickles safely.** ``ffhq.pkl`` and the other stylegan2-ada-pytorch pickles
store each network as a ``torch_utils.persistence`` record: ``_reconstruct_persistent_obj(meta)``
with the *source code of the module* (``meta['module_src']``), the class name and the object's
state; ``pickle.load`` would ``exec`` that source (``torch_utils/persistence.py``,
``_src_to_module``), then call the class's ``__new__`` and ``__setstate__``. ``load_pickle`` reads
them with a restricted unpickler (pure-Python ``pickle._Unpickler``) that resolves only

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

**Bounded memory.** Every size the pickle declares is checked before anything of that size is
allocated (the ``MAX_*`` constants of ``_stylegan2_bounds``, which holds the bounded unpickler
and the scan of storage records; a refusal is one ``UnsafePickleError`` line):

- reads: a record (``BINBYTES8``, ``FRAME``, ``BYTEARRAY8`` ...) longer than what is left of the
  file is refused before it is read (CPython allocates a read's declared length up front);
- tensor storages: each ``_load_from_bytes`` record is scanned for the storages it declares
  (torch's legacy format: the sizes in its persistent ids against the bytes that follow; zip:
  the records' declared sizes, a compressed one at most ``MAX_INFLATION``:1) before
  ``torch.load(weights_only=True)`` allocates them, and all tensor data (storages, numpy arrays)
  together may not exceed the file's own size (nor ``MAX_TENSOR_BYTES``): a pickle reusing one
  storage record through the memo cannot multiply it. Copies the pickle asks for (sets, dicts,
  latin-1 strings) are metered the same way (file size + ``SLACK``);
- objects: every object an opcode creates (containers, numbers, memo entries, stack slots) is
  counted at its shallow size against the file's size + ``SLACK`` (20 MB of one-byte ``EMPTY_SET``
  opcodes would build 3.6 GB of sets), and containers (call results counted as deep as their
  arguments) nest at most ``MAX_NESTING`` deep (hashing a 10^6-deep tuple overflows the C stack);
- tensor views: a tensor's size, stride and offset must be whole, non-negative and address only
  elements inside its storage, checked before torch sees them (``Tensor.set_`` grows a storage too
  small, allocating the declared size first).

**Embedded code.** NVIDIA's loader runs each record's module source; ``load_pickle`` never does,
but parses it (``load_time_code``, in ``_stylegan2_code``) and warns (``EmbeddedCodeWarning``, once
per file) when it carries code that would run on load beyond imports and definitions, so that
nobody opens the file with NVIDIA's code unwarned.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._stylegan2_bounds import (  # noqa: F401 - re-exported: the bounds stay importable from here
    ITEM_BYTES,
    MAX_DIMS,
    MAX_INFLATION,
    MAX_ITEMSIZE,
    MAX_NESTING,
    MAX_TENSOR_BYTES,
    SLACK,
    UnsafePickleError,
    _BoundedUnpickler,
    _declared_storage_bytes,
    _legacy_storage_bytes,
    _metered,
    _zip_storage_bytes,
)
from ._stylegan2_code import EmbeddedCodeWarning, _warn_embedded_code, load_time_code  # noqa: F401

# ---------------------------------------------------------------------------------------------
# Restricted unpickling of stylegan2-ada-pytorch pickles


@dataclass
class PersistentRecord:
    """A ``torch_utils.persistence`` object as plain data: its class, its state (``__dict__``:
    ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``, ``_init_kwargs``, ...) and the
    module source it carried, kept as text and never run."""

    class_name: str
    state: dict = field(repr=False)
    module_src: str = field(repr=False, default="")
    version: Any = None

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
            f"refused: persistence record {meta['class_name'][:60]} has a {type(state).__name__} state"
        )
    src = meta.get("module_src")
    return PersistentRecord(
        meta["class_name"], dict(state), src if isinstance(src, str) else "", meta.get("version")
    )


def _storage_from_bytes(b):
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
    """A view of a storage already read: its shape, stride and offset are checked to stay inside the
    storage before torch sees them (``Tensor.set_`` would grow a storage too small, allocating the
    declared size first), so it allocates nothing."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise UnsafePickleError(f"refused: a tensor rebuilt from a {type(storage).__name__}, not a storage")
    _no_hooks(backward_hooks, "a tensor")
    size, stride, offset = _view_inside(storage, storage_offset, size, stride)
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, bool(requires_grad), collections.OrderedDict(), metadata
    )


def _view_inside(storage, offset, size, stride) -> tuple[tuple, tuple, int]:
    """``(size, stride, offset)`` of a tensor view, refused (one line, the same for every way of getting it
    wrong) unless they are whole numbers, as many strides as sizes, none negative, and every element they
    address lies inside ``storage``: no more elements than the storage holds (an expanded view of a
    tiny storage would be copied full size later)."""
    held = storage.size() if isinstance(storage, torch.storage.TypedStorage) else storage.nbytes()
    ok = (
        isinstance(size, (tuple, list))
        and isinstance(stride, (tuple, list))
        and len(size) == len(stride) <= MAX_DIMS
        and all(type(x) is int and x >= 0 for x in (*size, *stride, offset))
    )
    numel = math.prod(size) if ok else -1
    last = offset + sum((n - 1) * st for n, st in zip(size, stride)) if ok and numel else offset - 1
    if not ok or numel > held or last >= held:
        shown = [_few(size), _few(stride), offset if type(offset) is int else "?"]
        raise UnsafePickleError(
            f"refused: a tensor of size {shown[0]}, stride {shown[1]} at offset {shown[2]} does not fit "
            f"its storage of {held} elements (forged sizes)"
        )
    return tuple(size), tuple(stride), offset


def _few(v) -> str:
    """A size or stride for a one-line message, whatever the pickle put there."""
    if not isinstance(v, (tuple, list)):
        return f"a {type(v).__name__}"
    shown = ", ".join(str(x) if type(x) is int and abs(x) < 10**20 else "?" for x in v[:6])
    return f"({shown}{', ...' if len(v) > 6 else ''})"


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


def _numpy_core(module, name):
    core = getattr(np, "_core", None) or np.core
    return getattr(getattr(core, module), name)


# what each allowed global is; a string names the RestrictedUnpickler method that meters it
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): "_record",
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): "_storage",
    ("torch", "Tensor"): torch.Tensor,  # only as _rebuild_from_type_v2's type argument
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): "_latin1",
    ("dnnlib.util", "EasyDict"): dict,
    ("dnnlib", "EasyDict"): dict,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,  # only as _reconstruct's type argument
}
_NUMPY_CORE = {
    ("multiarray", "scalar"): "_np_scalar",
    ("multiarray", "_reconstruct"): "_np_reconstruct",
    ("numeric", "_frombuffer"): "_np_frombuffer",
}  # numpy[._]core.
_COPIES = (collections.OrderedDict, set, frozenset, dict)  # callable: they copy their argument (metered)


def _nothing(state) -> bool:
    return state is None or (isinstance(state, dict) and not state)


def _empty(state) -> bool:
    """Whether an object state sets nothing (None, {}, or a (dict, slots) pair of those)."""
    return _nothing(state) or (isinstance(state, tuple) and len(state) == 2 and all(map(_nothing, state)))


class RestrictedUnpickler(_BoundedUnpickler):
    """Unpickles tensors, plain values and ``torch_utils.persistence`` records, nothing else:
    every other global, persistent ids, and object state (BUILD) on anything but numpy
    dtypes/arrays raise ``UnsafePickleError``. Nothing from the file is imported or run.

    Bounded: every call the pickle makes goes through ``_call``, which meters what it builds against
    the file's size ``size``: tensor data (storages, numpy arrays) may total at most the file's size
    (and ``MAX_TENSOR_BYTES``), each storage checked by the sizes it declares before torch allocates
    it; copies (sets, dicts, latin-1 strings) at most the file's size plus ``SLACK``. So memo
    references (a pickle reusing one object many times) cannot multiply memory."""

    _steps = dict(_BoundedUnpickler._steps)

    def __init__(self, file, size: int):
        super().__init__(file, size)
        self.budget.update({"tensor": min(size, MAX_TENSOR_BYTES), "copy": size + SLACK})
        self.embedded_code: dict[str, list[str]] = {}  # class name -> what NVIDIA's loader would run
        self.scanned: set[str] = set()  # module sources already scanned

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
            obj = _NUMPY_CORE[(module.split(".")[2], name)]
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            obj = getattr(torch, name)
        else:
            raise UnsafePickleError(
                f"refused: the pickle references {module[:80]}.{name[:80]}, which is not a tensor, a plain "
                "value or a torch_utils.persistence record (nothing from it was run)"
            )
        if isinstance(obj, str):
            return getattr(self, obj)
        if isinstance(obj, type) and obj not in _COPIES and obj is not np.dtype:
            return _NotCallable(obj)
        return obj

    # every call and instantiation of the pickle (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ) goes through _call

    def _call(self, func, args, kwargs=None, new: bool = False):
        if not isinstance(args, tuple) or kwargs:
            raise UnsafePickleError("refused: a call with keyword arguments or without an argument tuple")
        if any(func is c for c in _COPIES):
            if len(args) > 1 or (args and not hasattr(type(args[0]), "__len__")):
                raise UnsafePickleError(f"refused: {func.__name__} called with {len(args)} arguments")
            if args:
                self._charge("copy", ITEM_BYTES * len(args[0]), f"a {func.__name__} of {len(args[0])} items")
        elif func is np.dtype:
            if new or not args or not isinstance(args[0], str) or len(args[0]) > 16 or len(args) > 3:
                raise UnsafePickleError("refused: numpy.dtype other than from a short type string")
        elif new:
            raise UnsafePickleError(
                f"refused: the pickle creates a {getattr(func, 'cls', type(func)).__name__}"
            )
        return func.__new__(func, *args) if new else func(*args)

    def _load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def _load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, new=True))

    def _load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args, kwargs, new=True))

    def _instantiate(self, klass, args):  # INST and OBJ (protocols 0 and 1)
        self.append(self._call(klass, tuple(args)))

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.ndarray):
            self._np_state(inst, state)
        elif isinstance(inst, np.dtype):
            inst.__setstate__(state)
            if inst.itemsize > MAX_ITEMSIZE or inst.fields is not None:
                raise UnsafePickleError("refused: a numpy dtype with fields or wider than 1024 bytes")
        elif not _empty(state):
            raise UnsafePickleError(f"refused: the pickle sets the state of a {type(inst).__name__}")

    _steps[pickle.REDUCE[0]] = _load_reduce
    _steps[pickle.NEWOBJ[0]] = _load_newobj
    _steps[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    _steps[pickle.BUILD[0]] = _load_build
    dispatch = _metered(_steps)

    # the allowed functions that allocate, metered

    def _storage(self, b):
        """``torch.storage._load_from_bytes``: the storage sizes its record declares are checked against the
        record and charged before ``torch.load(weights_only=True)`` allocates them."""
        declared = _declared_storage_bytes(b)
        self._charge("tensor", declared, f"a tensor storage of {declared} bytes")
        s = _storage_from_bytes(b)
        if s.nbytes() > declared:
            raise UnsafePickleError(
                f"refused: a tensor storage of {s.nbytes()} bytes from {declared} declared"
            )
        return s

    def _record(self, meta) -> PersistentRecord:
        """``torch_utils.persistence._reconstruct_persistent_obj``: the record, its module source kept as
        text; what NVIDIA's loader would run of that source is noted once per distinct source."""
        rec = _reconstruct_persistent_obj(meta)
        if rec.module_src and rec.module_src not in self.scanned:
            self.scanned.add(rec.module_src)
            found = load_time_code(rec.module_src)
            if found:
                self.embedded_code.setdefault(rec.class_name[:60], found)
        return rec

    def _latin1(self, text, encoding="latin1"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError("refused: _codecs.encode other than str to latin-1 bytes")
        self._charge("copy", len(text), f"a string of {len(text)} characters")
        return text.encode("latin1")

    def _np_reconstruct(self, subtype, shape, dtype):
        """``numpy.core.multiarray._reconstruct``: an empty array (its data comes with BUILD)."""
        if (
            getattr(subtype, "cls", None) is not np.ndarray
            or not (isinstance(shape, tuple) and shape == (0,))
            or not (isinstance(dtype, (bytes, str)) and len(dtype) <= 8)
        ):
            raise UnsafePickleError("refused: numpy _reconstruct other than an empty ndarray")
        return _numpy_core("multiarray", "_reconstruct")(np.ndarray, (0,), dtype)

    def _np_scalar(self, dtype, *data):
        if not isinstance(dtype, np.dtype) or dtype.itemsize > MAX_ITEMSIZE or len(data) > 1:
            raise UnsafePickleError("refused: a numpy scalar of a dtype wider than 1024 bytes")
        return _numpy_core("multiarray", "scalar")(dtype, *data)

    def _np_frombuffer(self, buf, dtype, shape, order):  # a view of bytes already read: allocates nothing
        return _numpy_core("numeric", "_frombuffer")(buf, dtype, shape, order)

    def _np_state(self, arr: np.ndarray, state) -> None:
        """An array's data (``ndarray.__setstate__``), its declared size checked against the data given."""
        ok = isinstance(state, tuple) and len(state) in (4, 5)
        shape, dtype, _fortran, raw = state[-4:] if ok else (None,) * 4
        ok = (
            ok
            and isinstance(shape, tuple)
            and len(shape) <= 64
            and all(type(d) is int and d >= 0 for d in shape)
            and isinstance(dtype, np.dtype)
        )
        n = math.prod(shape) if ok else 0
        if not ok or not (
            (isinstance(raw, list) and len(raw) == n)
            if dtype.hasobject
            else (isinstance(raw, (bytes, bytearray)) and len(raw) == n * dtype.itemsize)
        ):
            raise UnsafePickleError("refused: a numpy array whose declared shape does not match its data")
        self._charge("tensor", n * dtype.itemsize, f"a numpy array of {n * dtype.itemsize} bytes")
        arr.__setstate__(state)


def load_pickle(path_or_bytes) -> Any:
    """The contents of a stylegan2-ada-pytorch pickle (or any pickle of tensors and plain
    values) with persistence records as ``PersistentRecord``; ``UnsafePickleError`` otherwise."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        f, size, where = io.BytesIO(path_or_bytes), len(path_or_bytes), "pickle"
    else:
        path = Path(path_or_bytes)
        f, where = open(path, "rb"), str(path)  # noqa: SIM115 - closed below
        size = Path(path).stat().st_size
    try:
        if size == 0:
            raise UnsafePickleError("file is empty")
        unpickler = RestrictedUnpickler(f, size)
        try:
            return unpickler.load()
        finally:  # its metered functions in the memo make a cycle: free the memo (the file's bytes) now
            unpickler.memo.clear()
            unpickler.stack = unpickler.metastack = []
            unpickler.depth.clear()
            _warn_embedded_code(where, unpickler.embedded_code)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{where}: {exc}") from None
    except EOFError:
        raise UnsafePickleError(f"{where}: file is truncated (the pickle ends early)") from None
    except Exception as exc:  # noqa: BLE001 - malformed data: one line, whatever raised
        text = _first_line(exc)
        if "truncated" in text or "ran out of input" in text.lower():
            raise UnsafePickleError(f"{where}: file is truncated (the pickle ends early)") from None
        raise UnsafePickleError(f"{where}: not a readable pickle ({type(exc).__name__}: {text})") from None
    finally:
        f.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else ""
