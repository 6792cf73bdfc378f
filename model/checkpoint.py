"""Read a PyTorch checkpoint (a state_dict) into numpy arrays, without torch.

The EfficientNet-Lite0 weights ship in PyTorch's legacy serialisation format: a few
pickles (magic number, protocol version, system info, the state_dict whose tensors point
at storages by key, the list of storage keys) followed by each storage's raw
little-endian bytes, prefixed with its element count. Torch stays a non-dependency:
cluster nodes only need TensorFlow.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointFormatError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands."""


@dataclass
class _Storage:
    dtype: type
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple
    stride: tuple

    def materialise(self) -> np.ndarray:
        if self.storage.data is None:
            raise CheckpointFormatError("tensor refers to a storage that was never read")
        flat = self.storage.data
        itemsize = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
        )
        return np.array(view)  # copy: detach from the shared storage buffer


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


class _StorageType:
    def __init__(self, name: str):
        if name not in STORAGE_DTYPES:
            raise CheckpointFormatError(f"unsupported storage type {name}")
        self.dtype = STORAGE_DTYPES[name]


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise CheckpointFormatError(f"checkpoint needs {module}.{name}, which this reader refuses")

    def persistent_load(self, saved_id):
        kind, storage_type, key, _location, *rest = saved_id
        if kind != "storage":
            raise CheckpointFormatError(f"unknown persistent id {kind!r}")
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"unsupported storage {storage_type!r}")
        dtype = storage_type.dtype
        if key not in self.storages:
            numel = rest[0] if rest else 0
            self.storages[key] = _Storage(dtype, numel)
        return self.storages[key]


def _read_legacy(f) -> dict[str, np.ndarray]:
    if pickle.load(f) != LEGACY_MAGIC:
        raise CheckpointFormatError("not a PyTorch legacy checkpoint (bad magic number)")
    pickle.load(f)  # protocol version
    pickle.load(f)  # system info (endianness, type sizes)
    storages: dict[str, _Storage] = {}
    state = _Unpickler(f, storages).load()
    for key in pickle.load(f):
        storage = storages[key]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * np.dtype(storage.dtype).itemsize
        storage.data = np.frombuffer(f.read(nbytes), dtype=storage.dtype, count=numel)
    return {name: ref.materialise() for name, ref in state.items()}


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the checkpoint's tensors as numpy arrays, keyed by parameter name."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        raise CheckpointFormatError(f"{path} is a zip-format checkpoint; only the legacy format is supported")
    with open(path, "rb") as raw:
        return _read_legacy(io.BufferedReader(raw))
