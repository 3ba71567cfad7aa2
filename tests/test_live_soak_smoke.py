"""CI smoke run of benchmarks/live_soak.py: two real RTSP cameras, one outage, SIGTERM at the end.

Half a minute cannot show a slow leak; it shows that the soak itself works (servers, outage,
scrapes, memory samples, graceful stop, the results JSON), so that the 10-minute run is not the
first time it is tried, and that the pipeline comes back from a camera outage under load.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, vtest_path
from tests.test_rtsp import _gst_available

pytestmark = pytest.mark.slow  # a half-minute soak


@pytest.mark.timeout(180)
def test_half_minute_soak_reconnects_camera_b_and_reports_memory(tmp_path):
    if not _gst_available():
        pytest.skip("needs Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 (scripts/setup.sh installs them)")
    vtest_path()  # skips without OpenCV's sample video
    out = tmp_path / "soak"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "live_soak.py"),
            "--minutes",
            "0.5",
            "--outage-s",
            "4",
            "--out",
            str(out),
        ],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "live_soak.json").read_text())  # standard JSON: no NaN
    assert result["benchmark"] == "live_soak" and result["command"].startswith("python benchmarks/live_soak.py")
    assert set(result["cameras"]) == {"a", "b"}
    assert result["exit_code"] == 0 and result["stop_s"] < 25 and not result["killed_after_sigterm"]
    for cam in result["cameras"].values():
        assert cam["error"] is None and cam["stopped_early"] is True
        assert cam["frames_processed"] > 0 and cam["latency_ms_summary"]["p50"] > 0
        assert cam["latency_ms_histogram"]["frames"] > 0
    assert result["cameras"]["b"]["reconnects"] >= 1 and result["cameras"]["b"]["gap_s"]
    mem = result["memory"]
    for key in ("rss_main", "rss_tree"):
        assert mem[key]["start_mb"] > 0 and mem[key]["end_mb"] > 0 and mem[key]["growth_pct"] is not None
    assert mem["rss_tree"]["end_mb"] >= mem["rss_main"]["end_mb"]
    assert len(result["samples"]) >= 4
    assert "Live soak" in proc.stdout  # the table, printed; --out leaves docs/benchmarks.md alone
