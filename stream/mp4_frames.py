"""What a fragmented MP4 really holds, read from its box headers (no decoding, so fast on long videos).

After a crash or a dead encoder the pipeline counts the frames in the file and cuts a torn last
fragment (:func:`cut_torn_fragment`), so that the observations log never claims a frame the video
does not hold.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path


def _boxes(fh, start: int, end: int) -> Iterable[tuple[bytes, int, int]]:
    """(type, payload offset, box end) of the boxes between ``start`` and ``end``; stops at a torn box."""
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            return
        size, kind = struct.unpack(">I4s", head)
        header = 8
        if size == 1:
            big = fh.read(8)
            if len(big) < 8:
                return
            size, header = struct.unpack(">Q", big)[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, pos + size
        pos += size


def _video_track_ids(fh, start: int, end: int) -> tuple[set[int], bool]:
    """The moov's video track ids, and whether the file is fragmented (the moov has an mvex)."""
    ids: set[int] = set()
    fragmented = False
    for kind, off, box_end in _boxes(fh, start, end):
        fragmented = fragmented or kind == b"mvex"
        if kind != b"trak":
            continue
        track_id, handler = None, None
        for k, o, e in _boxes(fh, off, box_end):
            if k == b"tkhd":
                fh.seek(o)
                version = fh.read(1)[0]
                fh.seek(o + (20 if version == 1 else 12))
                track_id = struct.unpack(">I", fh.read(4))[0]
            elif k == b"mdia":
                for k2, o2, _ in _boxes(fh, o, e):
                    if k2 == b"hdlr":
                        fh.seek(o2 + 8)
                        handler = fh.read(4)
        if track_id is not None and handler == b"vide":
            ids.add(track_id)
    return ids, fragmented


def _fragment_samples(fh, start: int, end: int, video_ids: set[int]) -> int:
    count = 0
    for kind, off, box_end in _boxes(fh, start, end):
        if kind != b"traf":
            continue
        track_id, samples = None, 0
        for k, o, _ in _boxes(fh, off, box_end):
            if k == b"tfhd":
                fh.seek(o + 4)
                track_id = struct.unpack(">I", fh.read(4))[0]
            elif k == b"trun":
                fh.seek(o + 4)
                samples += struct.unpack(">I", fh.read(4))[0]
        if track_id in video_ids:
            count += samples
    return count


def mp4_complete_frames(path: str | Path) -> tuple[int, int] | None:
    """(video frames held by complete fragments, byte length of the file's complete part) of a
    fragmented MP4, from box headers only (no decoding, so fast on long videos).

    A fragment counts only when its media data is wholly in the file, so the count never exceeds
    what a player can decode. (0, ...) when the encoder died before writing its header; ``None`` when
    ``path`` is not a regular file (e.g. a device) or not a fragmented MP4 with a video track.
    """
    path = Path(path)
    try:
        if not path.is_file():
            return None
        size = path.stat().st_size
        with path.open("rb") as fh:
            video_ids: set[int] | None = None
            frames, pending, good_end = 0, 0, 0
            for kind, off, box_end in _boxes(fh, 0, size):
                if box_end > size:
                    break  # a torn box at the end: the fragment it belongs to was cut short
                if kind == b"moov":
                    video_ids, fragmented = _video_track_ids(fh, off, box_end)
                    if not fragmented:
                        return None
                    good_end = box_end
                elif kind == b"moof":
                    pending = _fragment_samples(fh, off, box_end, video_ids) if video_ids else 0
                elif kind == b"mdat":
                    frames, pending, good_end = frames + pending, 0, box_end
                elif not pending:
                    good_end = box_end  # ftyp, mfra, ...
            if video_ids is None:
                return 0, good_end  # the encoder died before its header: nothing is playable
            return (frames, good_end) if video_ids else None
    except (OSError, struct.error, IndexError):
        return None


def count_mp4_video_frames(path: str | Path) -> int | None:
    """Video frames in the complete fragments of a fragmented MP4 (see :func:`mp4_complete_frames`)."""
    found = mp4_complete_frames(path)
    return None if found is None else found[0]


def cut_torn_fragment(path: str | Path) -> int | None:
    """Frames in a fragmented MP4 whose encoder died, after cutting off a torn last fragment.

    Then every decoder sees exactly the frames counted, and nothing half-written stays at the end.
    ``None`` when the file cannot be read as a fragmented MP4 (left as it is).
    """
    found = mp4_complete_frames(path)
    if found is None:
        return None
    frames, good_end = found
    path = Path(path)
    if path.stat().st_size > good_end:
        os.truncate(path, good_end)
    return frames
