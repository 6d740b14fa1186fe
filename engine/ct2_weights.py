"""Read a CTranslate2 `model.bin` into numpy arrays, without CTranslate2.

The format, as `ctranslate2.specs.model_spec.ModelSpec._serialize` writes it (little endian):

    u32 binary_version            (this reader knows 1 to 6)
    str spec_name, u32 revision   (version >= 2)
    u32 n_variables, then per variable:
        str name, u8 rank, u32 dims[rank],
        u8 dtype_id, u32 n_bytes  (version >= 4; dtype order: float32 int8 int16 int32 float16 bfloat16)
        u8 item_size, u32 n_items (version < 4: 4 bytes means float32, 2 int16, 1 int8)
        bytes
    u32 n_aliases, then per alias: str alias, str target   (version >= 3)

where `str` is a u16 length (counting a trailing NUL) and the bytes. Quantized weights
(int8, int16) come with a `<name>_scale` variable: `dequantized()` divides them back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelError

MAX_BINARY_VERSION = 6
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_OLD_ITEM_TYPES = {4: "float32", 2: "int16", 1: "int8"}


@dataclass(frozen=True)
class CT2Weights:
    """The variables of one model.bin: `arrays` by name (aliases resolved), and what wrote them."""

    spec: str
    revision: int
    binary_version: int
    arrays: dict[str, np.ndarray]
    aliases: dict[str, str]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def scalar(self, name: str, default=None):
        """A scalar variable (such as `decoder/num_heads`) as a Python number."""
        if name not in self.arrays:
            return default
        return self.arrays[name].reshape(-1)[0].item()

    def dequantized(self, name: str, dtype=np.float32) -> np.ndarray:
        """The weight `name` as floats: int8/int16 weights are divided by their per-row scale."""
        value = self.arrays[name]
        target = self.aliases.get(name, name)  # an alias shares its target's scale
        scale = self.arrays.get(f"{name}_scale", self.arrays.get(f"{target}_scale"))
        if scale is None or value.dtype.kind == "f":
            return value.astype(dtype, copy=False)
        scale = np.asarray(scale, dtype=np.float32)
        rows = value.reshape(value.shape[0], -1).astype(np.float32)
        rows /= scale.reshape(-1, 1) if scale.ndim else scale
        return rows.reshape(value.shape).astype(dtype, copy=False)


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelError(str(self.path.parent), f"{self.path.name} is truncated at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.unpack("H")))
        return raw.rstrip(b"\0").decode("utf-8")


def _array(raw: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bfloat16: widen to float32 by shifting the bits
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_model_bin(path: str | Path) -> CT2Weights:
    """Parse `path` (a model.bin, or a folder holding one); arrays are read-only views of the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise ModelError(str(path.parent), f"cannot read {path.name}: {exc}") from exc
    r = _Reader(data, path)
    version = r.unpack("I")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise ModelError(str(path.parent), f"{path.name} has binary version {version} "
                                           f"(this reader knows 1 to {MAX_BINARY_VERSION})")
    spec, revision = ("", 1)
    if version >= 2:
        spec, revision = r.string(), r.unpack("I")
    arrays: dict[str, np.ndarray] = {}
    for _ in range(r.unpack("I")):
        name = r.string()
        shape = tuple(r.unpack("I") for _ in range(r.unpack("B")))
        if version >= 4:
            type_id, n_bytes = r.unpack("B"), r.unpack("I")
            if type_id >= len(_DTYPES):
                raise ModelError(str(path.parent), f"variable {name} has unknown dtype id {type_id}")
            dtype = _DTYPES[type_id]
        else:
            item_size, n_items = r.unpack("B"), r.unpack("I")
            dtype, n_bytes = _OLD_ITEM_TYPES[item_size], item_size * n_items
        arrays[name] = _array(r.take(n_bytes), dtype, shape)
    aliases: dict[str, str] = {}
    if version >= 3 and r.pos < len(data):
        for _ in range(r.unpack("I")):
            alias, target = r.string(), r.string()
            aliases[alias] = target
    for alias, target in aliases.items():
        arrays[alias] = arrays[target]
    return CT2Weights(spec, revision, version, arrays, aliases)


__all__ = ["CT2Weights", "read_model_bin", "MAX_BINARY_VERSION"]
