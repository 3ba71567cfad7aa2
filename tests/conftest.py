"""Shared test fixtures: where the offline data lives, and skips with a reason when it does not.

``../shared/data`` (override: ``PRIVREID_SHARED_DATA``) holds research-only data and third-party
models; a user's fresh clone has none of it, so tests that need it skip and say why.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = Path(os.environ.get("PRIVREID_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
VTEST_CANDIDATES = [
    Path(os.environ.get("PRIVREID_DATA", Path.home() / ".cache" / "privreid" / "data")) / "vtest.avi",
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
]

pytest_plugins = [p for p in ("tests.kafka_fixtures",) if (REPO_ROOT / (p.replace(".", "/") + ".py")).exists()]


def shared_path(relative: str) -> Path:
    """Path inside ``../shared/data``; skips the calling test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs {relative} from the offline data folder ({SHARED_DATA}), which is absent")
    return path


def vtest_path() -> Path:
    """OpenCV's sample video, fetched by scripts/setup.sh; skips when it is absent."""
    for candidate in VTEST_CANDIDATES:
        if candidate.is_file():
            return candidate
    pytest.skip("needs OpenCV's vtest.avi (run scripts/setup.sh, which unpacks Debian's opencv-doc)")


@pytest.fixture
def vtest() -> Path:
    return vtest_path()
