#!/usr/bin/python3
"""An independent reader for safetensors files, to check the ones shortlong writes.

It uses only struct, json and numpy (Debian's /usr/bin/python3 has numpy; the `safetensors`
package is not needed), follows the format as huggingface/safetensors specifies it, and checks
what the reference implementation checks: the header length, the JSON, each tensor's dtype and
byte size, and that the data_offsets tile the data region exactly.

    /usr/bin/python3 tests/safetensors_read.py FILE [FILE...]

prints the metadata, then one line per tensor in file order:

    name  dtype  shape  sum  weighted_sum  sha256

where sum = x_0 + x_1 + ... and weighted_sum = 1 x_0 + 2 x_1 + ..., each accumulated in float64
from left to right (so a C loop gives the same digits), and sha256 is the first 16 hex digits
of the hash of the tensor's raw bytes. Exits with status 1 and a message on a malformed file.
"""
import hashlib
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_HEADER = 100_000_000  # the reference implementation's limit


def read(path):
    """Returns (metadata dict, list of (name, dtype tag, numpy array, raw bytes))."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError("%d bytes: too short for the header length" % len(raw))
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER or 8 + n > len(raw):
        raise ValueError("header length %d does not fit the file (%d bytes)" % (n, len(raw)))
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("metadata values must be strings")
    data = raw[8 + n:]
    tensors, spans = [], []
    for name, info in header.items():
        tag, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        dtype = np.dtype(DTYPES[tag])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or end > len(data):
            raise ValueError("tensor %r: offsets [%d, %d] do not hold %s %s" %
                             (name, begin, end, tag, shape))
        array = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
        tensors.append((name, tag, array, data[begin:end]))
        spans.append((begin, end, name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise ValueError("tensor %r starts at %d, expected %d" % (name, begin, pos))
        pos = end
    if pos != len(data):
        raise ValueError("the tensors cover %d of %d data bytes" % (pos, len(data)))
    return meta, tensors


def sequential_sums(array):
    x = array.astype(np.float64).ravel()
    if x.size == 0:
        return 0.0, 0.0
    weights = np.arange(1, x.size + 1, dtype=np.float64)
    return np.add.accumulate(x)[-1], np.add.accumulate(weights * x)[-1]


def main(paths):
    for path in paths:
        try:
            meta, tensors = read(path)
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            print("%s: %s" % (path, e), file=sys.stderr)
            return 1
        print("%s: %d tensors, %d metadata keys" % (path, len(tensors), len(meta)))
        for key in sorted(meta):
            print("  meta %s = %s" % (key, meta[key]))
        for name, tag, array, raw in tensors:
            s, w = sequential_sums(array)
            shape = "[" + ",".join(str(d) for d in array.shape) + "]"
            print("  %s %s %s %.17g %.17g %s" %
                  (name, tag, shape, s, w, hashlib.sha256(raw).hexdigest()[:16]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
