"""Read the records of an offline W&B run (`wandb/offline-run-*/run-*.wandb`) without uploading it.

The file is W&B's 7-byte header followed by LevelDB-log-framed protobuf `Record`s: 32 KiB blocks, each record
chunk prefixed by crc32c (4 bytes), length (2, little endian) and type (1: full, 2: first, 3: middle, 4: last).
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def history(path: Path) -> list[dict]:
    """Every logged step as {key: value}."""
    steps = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            steps.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                          for item in record.history.item})
    return steps


def config(path: Path) -> dict:
    out = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
