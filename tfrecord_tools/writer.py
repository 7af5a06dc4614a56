"""Atomic sharded TFRecord writing and the manifest beside the shards."""

from __future__ import annotations

import glob
import json
import os
import re

from tfrecord_tools import schema


class ShardedWriter:
    """Writes records round-robin into ``NAME-0000i-of-0000N.tfrecord``.

    Record ``i`` goes to shard ``i % N``, so shards are balanced and the
    output depends only on the order of records. Shards are written under
    hidden temporary names and renamed only by :meth:`commit`; leaving the
    ``with`` block without committing (an error, Ctrl-C) deletes them, so a
    final shard name always holds a complete shard.

    Committing also removes older shards of the same split with another
    shard count, so ``NAME-*.tfrecord`` never mixes two conversions.
    """

    def __init__(self, output_dir: str, split: str, num_shards: int):
        if num_shards < 1:
            raise ValueError("num_shards must be at least 1")
        self.output_dir = output_dir
        self.split = split
        self.num_shards = num_shards
        self.names = [schema.shard_name(split, index, num_shards) for index in range(num_shards)]
        self._temporary = [
            os.path.join(output_dir, f".{name}.tmp-{os.getpid()}") for name in self.names
        ]
        self.counts = [0] * num_shards
        self._streams = []
        self._written = 0
        self._committed = False

    def __enter__(self) -> "ShardedWriter":
        os.makedirs(self.output_dir, exist_ok=True)
        # Unbuffered: records are whole writes, and copy_range works on the descriptor.
        self._streams = [open(path, "wb", buffering=0) for path in self._temporary]
        return self

    def _next_shard(self) -> int:
        shard = self._written % self.num_shards
        self.counts[shard] += 1
        self._written += 1
        return shard

    def write(self, framed_record: bytes) -> None:
        """Appends one record, already framed (``tfrecord_io.frame_record``)."""
        self._streams[self._next_shard()].write(framed_record)

    def copy_range(self, source_fd: int, offset: int, size: int) -> None:
        """Appends one framed record that sits at ``offset`` in another file."""
        copy_file_range(source_fd, self._streams[self._next_shard()].fileno(), offset, size)

    @property
    def records_written(self) -> int:
        return self._written

    def commit(self) -> list[dict]:
        """Closes and renames the shards; returns ``[{"file", "records"}]``."""
        # Closed, then renamed: a final name only ever holds a complete shard,
        # whatever interrupts the process. No fsync: durability against power
        # loss is the file system's (tf.io.TFRecordWriter does not sync either),
        # and syncing 100s of MB doubled the cost of small conversions.
        for stream in self._streams:
            stream.close()
        pattern = re.compile(re.escape(self.split) + r"-\d{5}-of-\d{5}\.tfrecord")
        for stale in glob.glob(os.path.join(glob.escape(self.output_dir), f"{glob.escape(self.split)}-*.tfrecord")):
            if pattern.fullmatch(os.path.basename(stale)) and os.path.basename(stale) not in self.names:
                os.remove(stale)
        for temporary, name in zip(self._temporary, self.names):
            os.replace(temporary, os.path.join(self.output_dir, name))
        self._committed = True
        return [{"file": name, "records": count} for name, count in zip(self.names, self.counts)]

    def __exit__(self, *exc_info) -> None:
        if self._committed:
            return
        for stream in self._streams:
            stream.close()
        for temporary in self._temporary:
            if os.path.exists(temporary):
                os.remove(temporary)


def copy_file_range(source_fd: int, target_fd: int, offset: int, size: int) -> None:
    """Copies ``size`` bytes at ``offset`` of one file to the position of another.

    In the kernel where it can (``os.copy_file_range``), so the bytes never
    enter Python; through ``pread``/``write`` where the system cannot.
    """
    while size:
        try:
            copied = os.copy_file_range(source_fd, target_fd, size, offset)
        except (AttributeError, OSError):  # no such call, or not across these files
            data = os.pread(source_fd, size, offset)
            copied = os.write(target_fd, data)
        if copied <= 0:
            raise OSError(f"could not copy {size} bytes at offset {offset}")
        offset += copied
        size -= copied


def write_json_atomic(path: str, data: dict) -> None:
    """Writes JSON under a temporary name and renames it into place."""
    temporary = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    os.replace(temporary, path)
