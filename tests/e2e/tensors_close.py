"""tensors_close.py A B TOLERANCE [PREFIX]: the f32 tensors of the safetensors
files A and B (those whose names start with PREFIX, when given; there must be
some) have the same names and differ by at most TOLERANCE; prints the largest
difference. Read with the standard library alone."""
import json
import struct
import sys


def tensors(path, prefix):
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        data = f.read()
    out = {}
    for name, v in header.items():
        if name == "__metadata__" or not name.startswith(prefix) or v["dtype"] != "F32":
            continue
        first, end = v["data_offsets"]
        out[name] = struct.unpack("<%df" % ((end - first) // 4), data[first:end])
    return out


a_path, b_path, tolerance = sys.argv[1], sys.argv[2], float(sys.argv[3])
prefix = sys.argv[4] if len(sys.argv) > 4 else ""
a, b = tensors(a_path, prefix), tensors(b_path, prefix)
assert a and a.keys() == b.keys(), (sorted(a)[:4], sorted(b)[:4])
worst = max(abs(x - y) for name in a for x, y in zip(a[name], b[name]))
print("  worst difference %g over %d tensors" % (worst, len(a)))
sys.exit(worst > tolerance)
