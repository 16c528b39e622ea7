"""The openpi wire format: msgpack with numpy arrays, and nothing else (no pickle).

Arrays travel as maps ``{b"__ndarray__": True, b"data": <bytes>, b"dtype": <dtype.str>,
b"shape": [..]}`` and numpy scalars as ``{b"__npgeneric__": True, b"data": <value>,
b"dtype": <dtype.str>}``, the encoding openpi's ``msgpack_numpy`` uses, so openpi clients
and servers interoperate with ours. Object, void and complex dtypes are refused in both
directions (they could smuggle Python objects or do not round-trip), as are arrays whose
byte count disagrees with their shape. A message may hold at most :data:`MAX_CONTAINERS`
maps and arrays.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

_REFUSED_KINDS = ("O", "V", "c")


class WireError(ValueError):
    """A message that is not valid msgpack-numpy."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise WireError(f"unsupported dtype {obj.dtype} (object, void and complex arrays are not sent)")
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            shape = tuple(int(s) for s in obj[b"shape"])
            data = obj[b"data"]
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed array ({exc})") from None
        if dtype.kind in _REFUSED_KINDS:
            raise WireError(f"unsupported dtype {dtype}")
        if not isinstance(data, (bytes, bytearray)) or any(s < 0 for s in shape) \
                or len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise WireError(f"array data does not match shape {shape} and dtype {dtype}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()  # writable, owns its memory
    if b"__npgeneric__" in obj:
        try:
            return np.dtype(obj[b"dtype"]).type(obj[b"data"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed numpy scalar ({exc})") from None
    return obj


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


MAX_CONTAINERS = 100_000
"""Most maps + arrays one message may hold: an observation has a few dozen; a message of
millions of empty arrays fits any byte limit but costs seconds and a gigabyte to decode."""


def unpack(data: bytes, max_containers: int = MAX_CONTAINERS) -> Any:
    """Decode a message; raises :class:`WireError` for anything that is not msgpack-numpy,
    or that holds more than ``max_containers`` maps and arrays (counted while decoding)."""
    count = [0]

    def _counted(obj: Any) -> Any:
        count[0] += 1
        if count[0] > max_containers:
            raise WireError(f"message holds more than {max_containers} maps and arrays")
        return _decode(obj) if isinstance(obj, dict) else obj

    try:
        return msgpack.unpackb(data, object_hook=_counted, list_hook=_counted, raw=False, strict_map_key=False,
                               max_array_len=max_containers, max_map_len=max_containers)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several error types for corrupt input
        raise WireError(f"not a msgpack message ({type(exc).__name__}: {exc})") from None
