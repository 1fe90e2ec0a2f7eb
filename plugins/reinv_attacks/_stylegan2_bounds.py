"""The bounds of reading a StyleGAN2-ADA pickle (``_stylegan2_unpickle``'s module docstring says
why each exists): the sizes every pickle is checked against, the bounded pure-Python unpickler
that meters every object an opcode creates and the nesting of containers, and the scan of a tensor
storage record for the bytes it declares before torch allocates them."""

from __future__ import annotations

import io
import pickle
import struct
import sys
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

# ---------------------------------------------------------------------------------------------
# Bounds: every size a pickle declares is checked against these before anything is allocated

MAX_TENSOR_BYTES = 4 << 30  # tensor data of one pickle (ffhq.pkl: 363 MB for G, D and G_ema)
MAX_INFLATION = 4  # declared inflation ratio of a compressed zip record (torch.save never compresses)
MAX_ITEMSIZE = 1024  # bytes per element of a numpy dtype
SLACK = 1 << 20  # bytes of copies (containers, strings) the pickle may build beyond its own size
ITEM_BYTES = 16  # what one item of a set or dict copy is counted as (about its hash-table entry)
MAX_NESTING = 100  # containers inside containers (a generator pickle: ~30, persistence records included)
MAX_DIMS = 64  # dimensions of one tensor


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that cannot be read without running code, that declares sizes beyond the bounds above
    or that cannot be read at all (one line)."""


class _Reader:
    """``read``/``readline`` of a file that refuse to read, and so to allocate, more than it has left
    (CPython's buffered ``read(n)`` allocates ``n`` bytes before reading)."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else n
        if n > self.left:
            raise UnsafePickleError(
                f"file is truncated or forged: a record of {n} bytes where {self.left} remain"
            )
        b = self.f.read(n)
        self.left -= len(b)
        return b

    def readline(self) -> bytes:
        b = self.f.readline()
        self.left -= len(b)
        return b


_SIZE = sys.getsizeof
_P = pickle
# bytes an opcode's new objects take beyond the bytes it reads from the file (shallow sizes; 8: a stack slot)
_OBJECT_BYTES = {
    **dict.fromkeys([_P.EMPTY_SET, _P.FROZENSET], _SIZE(set())),
    **dict.fromkeys([_P.EMPTY_DICT, _P.DICT], _SIZE({})),
    **dict.fromkeys([_P.EMPTY_LIST, _P.LIST, _P.MARK], _SIZE([])),
    **dict.fromkeys([_P.TUPLE, _P.TUPLE1, _P.TUPLE2, _P.TUPLE3], _SIZE((0, 0, 0))),
    **dict.fromkeys([_P.FLOAT, _P.BINFLOAT], _SIZE(0.5)),
    **dict.fromkeys([_P.INT, _P.BININT, _P.BININT2, _P.LONG, _P.LONG1, _P.LONG4], _SIZE(1 << 40)),
    **dict.fromkeys([_P.PUT, _P.BINPUT, _P.LONG_BINPUT, _P.MEMOIZE], _SIZE(1 << 40) + ITEM_BYTES),
    **dict.fromkeys(
        [_P.STRING, _P.BINSTRING, _P.SHORT_BINSTRING, _P.UNICODE, _P.BINUNICODE, _P.SHORT_BINUNICODE],
        _SIZE(""),
    ),
    **dict.fromkeys([_P.BINUNICODE8, _P.BINBYTES, _P.SHORT_BINBYTES, _P.BINBYTES8], _SIZE(b"")),
    _P.BYTEARRAY8: _SIZE(bytearray()),
}
_OBJECT_BYTES = {op[0]: n + 8 for op, n in _OBJECT_BYTES.items()}
_ITEM_BYTES = {  # per item an opcode adds to a container
    **dict.fromkeys([_P.TUPLE, _P.LIST, _P.APPEND, _P.APPENDS], 8),
    **dict.fromkeys([_P.DICT, _P.SETITEM, _P.SETITEMS, _P.ADDITEMS, _P.FROZENSET], ITEM_BYTES),
}
_ITEM_BYTES = {op[0]: n for op, n in _ITEM_BYTES.items()}
# where an opcode finds the items it puts into the object it leaves on top of the stack (before it runs),
# and how much deeper that object is than its deepest item (1: a container; 0: a call's result)
_MARKED = lambda u: u.stack  # noqa: E731 - the items since the last MARK
_NESTS = {
    **{op[0]: (_MARKED, 1) for op in (_P.TUPLE, _P.LIST, _P.DICT, _P.FROZENSET)},
    **{op[0]: (_MARKED, 1) for op in (_P.APPENDS, _P.SETITEMS, _P.ADDITEMS)},
    _P.TUPLE1[0]: (lambda u: u.stack[-1:], 1),
    _P.TUPLE2[0]: (lambda u: u.stack[-2:], 1),
    _P.TUPLE3[0]: (lambda u: u.stack[-3:], 1),
    _P.APPEND[0]: (lambda u: u.stack[-1:], 1),
    _P.SETITEM[0]: (lambda u: u.stack[-2:], 1),
    **{op[0]: (lambda u: (), 1) for op in (_P.EMPTY_TUPLE, _P.EMPTY_LIST, _P.EMPTY_DICT, _P.EMPTY_SET)},
    **{op[0]: (lambda u: u.stack[-1:], 0) for op in (_P.REDUCE, _P.NEWOBJ)},
    _P.NEWOBJ_EX[0]: (lambda u: u.stack[-2:], 0),
}


def _metered(dispatch: dict) -> dict:
    """``dispatch`` with every opcode charged for the objects it creates (``_OBJECT_BYTES``, ``_ITEM_BYTES``)
    and the nesting of every container and call result it leaves on the stack tracked."""

    def step(op, run):
        cost, per_item = _OBJECT_BYTES.get(op, 8), _ITEM_BYTES.get(op, 0)
        items_of, deeper = _NESTS.get(op, (None, 0))

        def metered(self):
            items = items_of(self) if items_of else ()
            run(self)
            self._count_objects(cost + per_item * len(items))
            if items_of:
                self._nest(self.stack[-1], items, deeper)

        return metered

    return {op: step(op, run) for op, run in dispatch.items()}


class _BoundedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, except that ``BYTEARRAY8`` (which allocates its declared length before
    reading it) is refused beyond the size of the data, every object it creates is counted against the
    file's size (``_OBJECT_BYTES``: 20 MB of ``EMPTY_SET`` would otherwise build 3.6 GB of sets) and
    containers nest at most ``MAX_NESTING`` deep (hashing a 10^6-deep tuple overflows the C stack);
    nothing else is allowed by default."""

    _steps = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, size: int):
        super().__init__(_Reader(file, size))
        self.size = size
        self.budget = {"objects": size + SLACK}
        self.depth: dict[int, tuple[int, Any]] = {}  # id -> (nesting, the object, kept alive while read)

    def find_class(self, module: str, name: str):
        raise UnsafePickleError(f"refused: the pickle references {module[:80]}.{name[:80]}")

    def persistent_load(self, pid):
        raise UnsafePickleError(
            "refused: the pickle uses persistent ids (a torch.save file? read it with "
            "torch.load(weights_only=True))"
        )

    def _charge(self, kind: str, n: int, what: str) -> None:
        self.budget[kind] -= n
        if self.budget[kind] < 0:
            limit = (
                f"the loader's limit of {MAX_TENSOR_BYTES} bytes"
                if kind == "tensor" and self.size > MAX_TENSOR_BYTES
                else f"the file's size ({self.size} bytes)"
            )
            noun, why = _KINDS[kind]
            raise UnsafePickleError(f"refused: {what} takes the pickle's {noun} beyond {limit} ({why})")

    def _count_objects(self, n: int) -> None:
        self._charge("objects", n, "the objects the pickle creates (containers, numbers, memo entries)")

    def _nest(self, obj, items, deeper: int) -> None:
        depth = self.depth.get(id(obj), (0,))[0]
        for x in items:
            depth = max(depth, self.depth.get(id(x), (0,))[0] + deeper)
        if depth > MAX_NESTING:
            raise UnsafePickleError(f"refused: containers nested deeper than {MAX_NESTING} (a forged pickle)")
        if depth:
            self.depth[id(obj)] = (depth, obj)

    def _load_bytearray8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self.size:
            raise UnsafePickleError(f"file is truncated or forged: a {n}-byte bytearray in {self.size} bytes")
        b = bytearray(n)
        self.readinto(b)
        self.append(b)

    _steps[pickle.BYTEARRAY8[0]] = _load_bytearray8
    dispatch = _metered(_steps)


_KINDS = {  # what each meter counts, and why a pickle goes beyond it
    "tensor": ("tensor data", "forged sizes or shared references"),
    "copy": ("copies", "forged sizes or shared references"),
    "objects": ("objects", "a forged pickle: many objects from few bytes"),
}


@dataclass(frozen=True)
class _StorageType:
    """``torch.FloatStorage`` & co. in a storage record: only its dtype is read (never called)."""

    dtype: torch.dtype


_TORCH_MAGIC, _TORCH_LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001  # torch.serialization's legacy header


class _StorageScan(_BoundedUnpickler):
    """Reads the pickles of a legacy ``torch.save`` blob (what ``TypedStorage.__reduce__`` writes) only to
    learn the storages it declares, by key and size in bytes; builds none of them."""

    def __init__(self, file, size: int):
        super().__init__(file, size)
        self.declared: dict[Any, int] = {}

    def find_class(self, module: str, name: str):
        if module in ("torch", "torch.storage") and name == "UntypedStorage":
            return _StorageType(torch.uint8)
        cls = getattr(torch, name, None) if module == "torch" else None
        if not (isinstance(cls, type) and issubclass(cls, torch.storage._LegacyStorage)):
            raise UnsafePickleError(f"refused: a tensor storage record references {module[:80]}.{name[:80]}")
        with warnings.catch_warnings():  # "TypedStorage is deprecated"
            warnings.simplefilter("ignore")
            return _StorageType(cls.dtype)

    def persistent_load(self, pid):
        ok = isinstance(pid, tuple) and len(pid) == 6 and pid[0] in ("storage", b"storage")
        _, kind, key, _location, numel, view = pid if ok else (None,) * 6
        if not (
            ok
            and isinstance(kind, _StorageType)
            and isinstance(key, (str, bytes))
            and type(numel) is int
            and numel >= 0
            and view is None
        ):
            raise UnsafePickleError("refused: a tensor storage record with a malformed storage id")
        nbytes = numel * kind.dtype.itemsize
        if self.declared.setdefault(key, nbytes) != nbytes:
            raise UnsafePickleError("refused: a tensor storage record declares one storage with two sizes")


def _legacy_storage_bytes(b: bytes) -> int:
    """The bytes the storages of a legacy ``torch.save`` blob declare (what ``torch.load`` allocates before
    reading them), checked against the data the blob holds: header, pickle, keys, then per storage an
    8-byte count and its bytes (``torch.serialization._legacy_load``)."""
    f = io.BytesIO(b)
    scan = _StorageScan(f, len(b))
    if scan.load() != _TORCH_MAGIC or scan.load() != _TORCH_LEGACY_PROTOCOL:
        raise UnsafePickleError("refused: a tensor storage that is not in torch's legacy format")
    scan.load()  # sys_info
    scan.load()  # the storage itself (its persistent id)
    keys = scan.load()
    if not isinstance(keys, list) or set(keys) != set(scan.declared) or len(keys) != len(scan.declared):
        raise UnsafePickleError("refused: a tensor storage record whose keys do not match its storages")
    need = sum(scan.declared.values())
    held = len(b) - f.tell() - 8 * len(keys)
    if need > held:
        raise UnsafePickleError(
            f"refused: a tensor storage declares {need} bytes but its record holds {max(held, 0)}"
        )
    return need


def _zip_storage_bytes(b: bytes) -> int:
    """The bytes a zip ``torch.save`` blob's records declare (what torch's reader allocates per record);
    a compressed record may not declare more than ``MAX_INFLATION`` times its compressed size."""
    with zipfile.ZipFile(io.BytesIO(b)) as z:
        infos = z.infolist()
    for i in infos:
        if i.compress_type != zipfile.ZIP_STORED and i.file_size > MAX_INFLATION * max(i.compress_size, 1):
            raise UnsafePickleError(
                f"refused: a compressed tensor record declares {i.file_size} bytes from "
                f"{i.compress_size} ({i.file_size // max(i.compress_size, 1)}:1, the bound is "
                f"{MAX_INFLATION}:1; torch.save writes records uncompressed)"
            )
    return sum(i.file_size for i in infos)


def _declared_storage_bytes(b) -> int:
    if not isinstance(b, (bytes, bytearray)):
        raise UnsafePickleError("refused: torch.storage._load_from_bytes without bytes")
    try:
        return (_zip_storage_bytes if bytes(b[:4]) == b"PK\x03\x04" else _legacy_storage_bytes)(bytes(b))
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt record, whatever raised
        raise UnsafePickleError(
            f"refused: a tensor storage record that cannot be read ({type(exc).__name__})"
        ) from None
