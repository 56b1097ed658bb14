"""Reading a checkpoint's archive at the cost its metadata declares.

A checkpoint is a zip archive of ``.npy`` members, as :func:`numpy.savez` writes them
(uncompressed). These functions read one member at a time, and only after checking,
from the zip directory and the member's ``.npy`` header, that it is stored uncompressed
and that its size is exactly what was declared for it: so no member costs more memory
or time than its declaration (and no declaration more than the file's own bytes), and
nothing is read that no declaration refers to. The metadata itself (JSON) is read
within fixed limits: its size, its nesting depth and the size of its numbers.
"""

import json
import math
import zipfile

import numpy as np

__all__ = ["MAX_METADATA_BYTES", "MAX_JSON_DEPTH", "member_info", "read_array", "read_declared", "parse_json"]

MAX_METADATA_BYTES = 16 << 20  # a fit's metadata is a few KiB
MAX_JSON_DEPTH = 64  # a fit's metadata nests about 15 deep
MAX_HEADER_BYTES = 4096  # numpy writes 64- to a few hundred-byte headers
_CHUNK = 1 << 20


def member_info(zf, name):
    """The zip directory's entry for ``name``, checked: present, stored uncompressed, not
    encrypted (``save`` writes no other kind)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"member {name!r} is missing") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"member {name!r} is compressed (method {info.compress_type}): checkpoints are "
                         "written uncompressed, and no other kind is read")
    if info.flag_bits & 0x1:
        raise ValueError(f"member {name!r} is encrypted")
    if info.compress_size != info.file_size:
        raise ValueError(f"member {name!r} declares {info.file_size} bytes but stores {info.compress_size}")
    return info


def _read_header(f, name):
    """``(shape, fortran_order, dtype, header length)`` of the ``.npy`` member open in ``f``."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_HEADER_BYTES)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_HEADER_BYTES)
    else:
        raise ValueError(f"member {name!r} has .npy format version {version}")
    return shape, fortran, dtype, f.tell()


def _nbytes(shape, dtype):
    return math.prod(shape) * dtype.itemsize


def _read_data(f, shape, dtype):
    out = np.empty(shape, dtype)
    flat = out.reshape(-1).view(np.uint8)
    pos = 0
    while pos < flat.size:
        chunk = f.read(min(_CHUNK, flat.size - pos))
        if not chunk:
            raise EOFError("the member ends before its data")
        flat[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
        pos += len(chunk)
    if f.read(1):  # at the end: the zip module has checked the member's CRC-32
        raise ValueError("the member is longer than its data")
    return out


def read_array(zf, name, dtype, shape):
    """The array member ``name``, declared as ``dtype`` and ``shape``: its size in the zip
    directory and its header are checked against the declaration before anything else
    is read."""
    info = member_info(zf, name)
    nbytes = _nbytes(shape, dtype)
    if not 10 <= info.file_size - nbytes <= MAX_HEADER_BYTES + 12:
        raise ValueError(f"member {name!r} holds {info.file_size} bytes, but the metadata declares "
                         f"{dtype.str} {list(shape)} ({nbytes} bytes of data)")
    with zf.open(info) as f:
        got_shape, fortran, got_dtype, header = _read_header(f, name)
        if got_dtype != dtype or tuple(got_shape) != tuple(shape) or fortran:
            raise ValueError(f"member {name!r} holds {got_dtype.str} {list(got_shape)}, but the metadata "
                             f"declares {dtype.str} {list(shape)}")
        if header + nbytes != info.file_size:
            raise ValueError(f"member {name!r} holds {info.file_size} bytes, not its header and data's "
                             f"{header + nbytes}")
        return _read_data(f, shape, dtype)


def read_declared(zf, name, max_bytes, accept):
    """A small member whose declaration is its own header (the metadata, the checksum):
    at most ``max_bytes`` in all, its header accepted by ``accept(shape, dtype)``."""
    info = member_info(zf, name)
    if info.file_size > max_bytes + MAX_HEADER_BYTES + 12:
        raise ValueError(f"member {name!r} holds {info.file_size} bytes, more than the {max_bytes} allowed")
    with zf.open(info) as f:
        shape, fortran, dtype, header = _read_header(f, name)
        if fortran or not accept(tuple(shape), dtype) or header + _nbytes(shape, dtype) != info.file_size:
            raise ValueError(f"member {name!r} is not what a checkpoint holds there ({dtype.str} {list(shape)})")
        return _read_data(f, shape, dtype)


def _int(text):
    if len(text) > 30:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def _float(text):
    value = float(text)
    if not math.isfinite(value) or len(text) > 40:
        raise ValueError(f"a number out of range ({text[:40]})")
    return value


def _constant(text):
    raise ValueError(f"a non-standard JSON constant ({text})")


def _depth(obj):
    """The nesting depth of a parsed JSON value (without recursion)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def parse_json(data):
    """The JSON object in ``data`` (bytes), within the limits: UTF-8, numbers of at most 30
    digits and finite, nesting at most :data:`MAX_JSON_DEPTH` deep, an object at the top;
    anything else raises ``ValueError``."""
    try:
        text = bytes(data).decode("utf-8")
        obj = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except UnicodeDecodeError as e:
        raise ValueError(f"the metadata is not UTF-8 text ({e})") from None
    except RecursionError:
        raise ValueError(f"the metadata nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # json.JSONDecodeError and the limits above
        raise ValueError(f"the metadata is not valid JSON: {e}") from None
    if _depth(obj) > MAX_JSON_DEPTH:
        raise ValueError(f"the metadata nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(obj, dict):
        raise ValueError(f"the metadata is a JSON {type(obj).__name__}, not an object")
    return obj
