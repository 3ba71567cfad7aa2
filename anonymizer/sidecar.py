"""Lossless sidecar of protected crops, written next to an anonymized video for full-quality recovery.

A video codec smooths exactly the fine detail in which G hides what G_R needs to restore the
person, so recovery from decoded video frames is lossy. The pipeline can optionally write every
protected crop, losslessly (PNG), to a sidecar file; ``anonymizer.recover --sidecar`` then uses
those crops instead of the decoded pixels. The sidecar only holds *protected* crops, so it is as
sensitive as the anonymized video itself, not more.

Two kinds of record: ``native`` (G's output at the bundle's input size, the best source for G_R)
and ``region`` (the crop as pasted into the frame, at the region's size).

File layout: the magic line ``PRIVREID-CROPS 1\\n`` then records, each
``uint32 little-endian header length ‖ JSON header ‖ PNG bytes`` (header: frame_index, track_id,
region, kind, shape, png_bytes, and ``sealed_seed`` in hex for a scrambled native crop: the
key holder opens it to undo the scramble, :mod:`anonymizer.scramble`). Writing is crash-tolerant:
a truncated last record is ignored.

A sidecar belongs to one video: the pipeline overwrites the video on a re-run, so the writer
starts the sidecar afresh too (a stale record of the previous run would otherwise be taken, by
its (frame, region) key, as a crop of the new video). ``append=True`` keeps an existing file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAGIC = b"PRIVREID-CROPS 1\n"


@dataclass
class SidecarRecord:
    frame_index: int
    track_id: int | str
    region: list[int]
    kind: str  # 'native' | 'region'
    crop: np.ndarray  # BGR uint8
    sealed_seed: bytes | None = None  # a scrambled crop's seed, sealed to the key holder (anonymizer.scramble)


class SidecarWriter:
    """Write protected crops to a sidecar file, started afresh with its magic line unless ``append``."""

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not append or not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "wb" if new else "ab")
        if new:
            self._fh.write(MAGIC)

    def write(
        self,
        frame_index: int,
        track_id: int | str,
        region: Sequence[int],
        crop: np.ndarray,
        kind: str = "region",
        sealed_seed: bytes | None = None,
    ) -> None:
        if kind not in ("native", "region"):
            raise ValueError(f"sidecar record kind must be 'native' or 'region', got '{kind}'")
        ok, png = cv2.imencode(".png", crop, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise RuntimeError("PNG encoding of a protected crop failed")
        data = png.tobytes()
        fields: dict = {
            "frame_index": int(frame_index),
            "track_id": track_id,
            "region": [int(v) for v in region],
            "kind": kind,
            "shape": list(crop.shape),
            "png_bytes": len(data),
        }
        if sealed_seed is not None:
            fields["sealed_seed"] = bytes(sealed_seed).hex()
        header = json.dumps(fields).encode()
        self._fh.write(struct.pack("<I", len(header)) + header + data)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        """Flush and close; the file is closed even when the last flush fails (the error is raised)."""
        if self._fh.closed:
            return
        try:
            self._fh.flush()
        finally:
            try:
                self._fh.close()
            except OSError:
                pass

    def __enter__(self) -> SidecarWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_sidecar(path: str | Path) -> Iterator[SidecarRecord]:
    """Records of a sidecar file in write order; stops quietly at a truncated tail."""
    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a privreid protected-crop sidecar")
        while True:
            raw = fh.read(4)
            if len(raw) < 4:
                return
            (hlen,) = struct.unpack("<I", raw)
            header_bytes = fh.read(hlen)
            if len(header_bytes) < hlen:
                return
            header = json.loads(header_bytes)
            data = fh.read(header["png_bytes"])
            if len(data) < header["png_bytes"]:
                return
            crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if crop is None:  # a damaged record must not become a None crop far from here
                raise ValueError(f"{path}: the crop of frame {header['frame_index']} is not a decodable PNG")
            seed = header.get("sealed_seed")
            try:
                sealed = bytes.fromhex(seed) if seed is not None else None
            except (TypeError, ValueError):
                raise ValueError(f"{path}: the sealed seed of frame {header['frame_index']} is not hex") from None
            yield SidecarRecord(
                header["frame_index"], header["track_id"], header["region"], header["kind"], crop, sealed
            )


SidecarKey = tuple[int, tuple[int, int, int, int]]


def sidecar_key(frame_index: int, region: Sequence[float]) -> SidecarKey:
    """Records are found by (frame, region), not (frame, track id): regions do not overlap within a
    frame once redacted, while every untracked detection shares track id -1."""
    return int(frame_index), tuple(int(round(float(v))) for v in region[:4])  # type: ignore[return-value]


def read_sidecar(path: str | Path) -> dict[SidecarKey, dict[str, SidecarRecord]]:
    """Index ``sidecar_key(frame_index, region) → {kind: record}`` (last write wins)."""
    index: dict[SidecarKey, dict[str, SidecarRecord]] = {}
    for rec in iter_sidecar(path):
        index.setdefault(sidecar_key(rec.frame_index, rec.region), {})[rec.kind] = rec
    return index
