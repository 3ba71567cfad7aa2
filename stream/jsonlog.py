"""The observations log (JSON lines) and the summary file of a camera, written durably.

Write errors (a full disk) surface as :class:`OSError` naming the file; the pipeline turns them into
the camera's error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class JsonLinesWriter:
    """JSON lines, one file per run (a re-run starts it afresh), flushed per frame so a crash loses
    nothing already processed. Write errors (a full disk) surface as :class:`OSError` naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("w", encoding="utf-8")

    def _guard(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except OSError as exc:
            if not exc.filename:
                exc.filename = str(self.path)
            raise

    def write(self, record: dict[str, Any]) -> None:
        self._guard(lambda: self._file.write(json.dumps(record, separators=(",", ":")) + "\n"))

    def write_frame(self, records: list[dict[str, Any]]) -> None:
        """One frame's records, flushed together."""
        if records:
            self._guard(lambda: self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)))
            self.flush()

    def flush(self) -> None:
        self._guard(self._file.flush)

    def close(self) -> None:
        """Flush and close; the file is closed even when the last flush fails (the error is raised)."""
        if self._file.closed:
            return
        try:
            self._guard(self._file.flush)
            os.fsync(self._file.fileno())
        finally:
            try:
                self._file.close()
            except OSError:
                pass


def truncate_jsonl_after(path: Path, last_frame_index: int, key: str = "frame_index") -> list[dict[str, Any]]:
    """Cut a frame-ordered observations log after ``last_frame_index``; returns the records removed.

    Used when the video ended short of what was processed, so that no observation claims a frame
    the video does not hold. A torn last line (a crash mid-write) goes too. ``key="output_frame"``
    counts in frames of the video (what the file holds); a record without that key falls back to
    its ``frame_index``, and one whose output frame is ``null`` (left out of the video) claims no
    frame: it stays when it comes before the cut.
    """
    removed: list[dict[str, Any]] = []
    cut: int | None = None
    if not Path(path).is_file():  # a device (e.g. /dev/full) cannot be cut, and reading one may never end
        return removed
    with open(path, "rb+") as fh:
        offset = 0
        for line in fh:
            try:
                record = json.loads(line)
                value = record.get(key, record.get("frame_index", -1))
                beyond = value is not None and int(value) > last_frame_index
            except (ValueError, TypeError):
                record, beyond = None, True
            if beyond or cut is not None:  # everything after the cut goes, and is reported
                if cut is None:
                    cut = offset
                if record is not None:
                    removed.append(record)
            offset += len(line)
        if cut is not None:
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
    return removed


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically and durably: temp file, fsync, rename, fsync of the folder.

    A summary is never half-written, and when writing fails (a full disk) the temp file is removed,
    so nothing empty is left behind; the :class:`OSError` is raised for the caller to report.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    payload = (json.dumps(data, indent=2) + "\n").encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # the rename happened; a folder that cannot be synced (some file systems) is not an error
