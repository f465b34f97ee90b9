"""Atomic publishing of files and directories, shared by the lake export, lake compaction, the
training set and the market report.

Each of them writes under a temporary name on the same filesystem as the target (a rename is
atomic only within one) and renames the complete result over the final name, so a reader, or a
run restarted after a kill -9, finds the old version or the new one, never a torn file. Leftover
temporary names are never read; each writer sweeps its own (the lake its .staging directory under
the dataset lock, the report its hidden directories older than an hour).

`fsync` flushes the new file to disk before the rename. A writer needs it where the rename makes
the file the only copy of its rows (compaction deletes the hour files next); the other writers
keep their rows elsewhere (the export's stay in DuckDB; the training set and the report are
rebuilt by their next run) and pass fsync=False, so the once-a-second live export pays no flush
per hour file. A kill -9 of the process loses nothing either way: written pages survive it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush the bytes of `path` to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_file(tmp: Path, final: Path, *, fsync: bool = True) -> Path:
    """Rename the complete file `tmp` over `final` (same filesystem), flushing it first if `fsync`."""
    if fsync:
        fsync_file(tmp)
    os.replace(tmp, final)
    return final


@contextmanager
def atomic_write(final: Path, *, tmp: Path | None = None, fsync: bool = True) -> Iterator[Path]:
    """Yield the temporary path to write `final`'s new content to; publish it over `final` when the
    block ends, delete it if the block (or the publishing) raises. The default temporary name is
    `.<name>.tmp` beside `final`: for a single writer, whose killed write the next one overwrites."""
    tmp = tmp if tmp is not None else final.with_name(f".{final.name}.tmp")
    try:
        yield tmp
        publish_file(tmp, final, fsync=fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A new directory `parent/<prefix><8 hex>` to build a directory tree in, deleted if the block
    raises; the block renames it into place (`publish_dir`) once it is complete."""
    tmp = parent / f"{prefix}{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: Path, final: Path) -> Path:
    """Rename the complete directory `tmp` to `final`, which must not exist or be empty (a
    directory cannot be renamed over a non-empty one)."""
    os.rename(tmp, final)
    return final


def link_or_copy(src: str, dst: str) -> str:
    """A hard link to `src` at `dst`, or a copy where links are not possible (another filesystem,
    no link support); a `copy_function` for shutil.copytree."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
