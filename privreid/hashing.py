"""File digests: one streaming sha256 for model files, bundles, snapshots and recovery inputs.

Kept on the foundation layer and free of numpy/cv2 so that anything that checks a file's identity
(the matcher's trust rules, the bundle loader, the snapshot store) can use it without pulling in
heavy imports.
"""

from __future__ import annotations

import hashlib
import os

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (model files do not have to fit in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()
