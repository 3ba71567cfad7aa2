"""The gallery's snapshot files: ``<base>.json`` + ``<base>.<generation>.npz``, no pickle anywhere.

Split from :mod:`reid.gallery`, which is pure in-memory logic: this is the durable format only (atomic
replace, checksums, shapes checked on reading). What a service does with a snapshot (adopt it or not,
never overwrite a newer one) is ``reid/service/snapshots.py``'s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from privreid.hashing import sha256_file as _sha256

SNAPSHOT_FORMAT = "privreid-gallery"
SNAPSHOT_VERSION = 1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_snapshot(base: str | os.PathLike[str], meta: dict[str, Any], means: np.ndarray) -> Path:
    """Write ``<base>.json`` + ``<base>.<generation>.npz`` atomically (no pickle anywhere).

    The npz is written and fsync-ed first under a new name, then the JSON (which names the npz and
    its sha256) replaces the old JSON by rename: a crash at any moment leaves either the old or the
    new snapshot complete.
    """
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    gen = int(meta.get("generation", 0)) + 1
    npz = base.parent / f"{base.name}.{gen}.npz"
    tmp_npz = npz.with_name(npz.name + ".tmp")
    with open(tmp_npz, "wb") as f:
        np.savez(f, means=np.ascontiguousarray(means, dtype=np.float32))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_npz, npz)
    meta = {
        **meta,
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "generation": gen,
        "npz": npz.name,
        "npz_sha256": _sha256(npz),
    }
    js = base.parent / f"{base.name}.json"
    tmp_js = js.with_name(js.name + ".tmp")
    with open(tmp_js, "w") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_js, js)
    _fsync_dir(base.parent)
    for old in base.parent.glob(f"{base.name}.*.npz"):
        if old.name != npz.name:
            old.unlink(missing_ok=True)
    return js


def load_snapshot(base: str | os.PathLike[str]) -> tuple[dict[str, Any], np.ndarray] | None:
    """Read a snapshot written by :func:`save_snapshot`; ``None`` if there is none.

    Raises ``ValueError`` naming the file when it is damaged (wrong format, checksum, shapes).
    """
    base = Path(base)
    js = base.parent / f"{base.name}.json"
    if not js.is_file():
        return None
    try:
        meta = json.loads(js.read_text())
    except ValueError as exc:
        raise ValueError(f"gallery snapshot {js} is not valid JSON: {exc}") from exc
    if meta.get("format") != SNAPSHOT_FORMAT or meta.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"{js} is not a version {SNAPSHOT_VERSION} gallery snapshot")
    npz = base.parent / str(meta.get("npz", ""))
    if not npz.is_file() or _sha256(npz) != meta.get("npz_sha256"):
        raise ValueError(f"gallery snapshot {js}: its embeddings file {npz.name} is missing or damaged")
    with np.load(npz, allow_pickle=False) as data:
        means = np.asarray(data["means"], dtype=np.float32)
    if means.ndim != 2 or means.shape[0] != len(meta.get("entries", [])):
        raise ValueError(
            f"gallery snapshot {js}: {means.shape[0]} embeddings for {len(meta.get('entries', []))} entries"
        )
    return meta, means
