#!/usr/bin/env python3
"""Writes a LLaMA-Factory-style multimodal data folder, as its mllm_demo is laid
out, with the images made here (PNG, Python's standard library only):

    python3 make_vl_data.py FOLDER [RECORDS]

FOLDER/dataset_info.json names the dataset vl_demo (sharegpt `messages` with an
`images` column); FOLDER/vl_demo.json holds RECORDS records (default 24), each
asking the colour of a square (some two squares, two <image> placeholders)
in images of several sizes; FOLDER/images/ holds the pictures."""
import json
import os
import struct
import sys
import zlib

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SIZES = [(84, 56), (56, 112), (70, 70), (140, 84)]


def write_png(path, width, height, colour):
    """A square of colour on a grey background."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            inside = width // 4 <= x < 3 * width // 4 and height // 4 <= y < 3 * height // 4
            row += bytes(colour if inside else (128, 128, 128))
        rows.append(bytes(row))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                + chunk(b"IEND", b""))


def main():
    folder = sys.argv[1]
    n_records = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    names = list(COLOURS)
    records = []
    for i in range(n_records):
        colour = names[i % len(names)]
        width, height = SIZES[i % len(SIZES)]
        image = "images/%s_%dx%d.png" % (colour, width, height)
        write_png(os.path.join(folder, image), width, height, COLOURS[colour])
        if i % 3 == 2:  # two images, as mllm_demo's first record has
            other = names[(i + 1) % len(names)]
            second = "images/%s_%dx%d.png" % (other, height, width)
            write_png(os.path.join(folder, second), height, width, COLOURS[other])
            messages = [{"role": "user", "content": "<image><image>Which colours are the two squares?"},
                        {"role": "assistant", "content": "%s and %s" % (colour, other)}]
            records.append({"messages": messages, "images": [image, second]})
        else:
            messages = [{"role": "user", "content": "<image>What colour is the square?"},
                        {"role": "assistant", "content": colour}]
            records.append({"messages": messages, "images": [image]})
    with open(os.path.join(folder, "vl_demo.json"), "w") as f:
        json.dump(records, f, indent=1)
    info = {"vl_demo": {"file_name": "vl_demo.json", "formatting": "sharegpt",
                        "columns": {"messages": "messages", "images": "images"},
                        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                 "assistant_tag": "assistant"}}}
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
