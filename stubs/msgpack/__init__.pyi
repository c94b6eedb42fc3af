# Type stubs for the part of msgpack that privgrid uses: msgpack ships no type information.
# Signatures follow msgpack 1.x (msgpack/__init__.py, msgpack/fallback.py,
# msgpack/exceptions.py); the keyword options are the ones privgrid passes.

from collections.abc import Callable
from typing import Any

class UnpackException(Exception): ...
class BufferFull(UnpackException): ...
class OutOfData(UnpackException): ...
class FormatError(ValueError, UnpackException): ...
class StackError(ValueError, UnpackException): ...

UnpackValueError = ValueError

class ExtraData(UnpackValueError):
    unpacked: object
    extra: bytes
    def __init__(self, unpacked: object, extra: bytes) -> None: ...

class ExtType:
    code: int
    data: bytes
    def __init__(self, code: int, data: bytes) -> None: ...

def packb(
    o: Any,
    *,
    default: Callable[[Any], Any] | None = None,
    use_single_float: bool = False,
    use_bin_type: bool = True,
    strict_types: bool = False,
    datetime: bool = False,
    unicode_errors: str | None = None,
) -> bytes: ...
def unpackb(
    packed: bytes | bytearray | memoryview,
    *,
    raw: bool = False,
    use_list: bool = True,
    strict_map_key: bool = True,
    object_hook: Callable[[dict[Any, Any]], Any] | None = None,
    object_pairs_hook: Callable[[list[tuple[Any, Any]]], Any] | None = None,
    list_hook: Callable[[list[Any]], Any] | None = None,
    ext_hook: Callable[[int, bytes], Any] = ...,
    unicode_errors: str | None = None,
    max_buffer_size: int = 100 * 1024 * 1024,
    max_str_len: int = -1,
    max_bin_len: int = -1,
    max_array_len: int = -1,
    max_map_len: int = -1,
    max_ext_len: int = -1,
    timestamp: int = 0,
) -> Any: ...
