"""Live soak: two looping RTSP cameras through ``run_pipeline.py`` for minutes, one forced outage.

    python benchmarks/live_soak.py [--minutes 10] [--outage-s 10] [--detector auto|hog|MODEL]
        [--out DIR] [KEY VALUE ...]

Short benchmarks cannot show what only time does: memory that creeps up frame after frame,
latency that drifts as queues fill, a reconnect that leaks an encoder or a thread. This runs the
real command an operator runs (``run_pipeline.py`` with ``--metrics-port``) against two real
GStreamer RTSP servers (``tests/rtsp_server.py``) playing ``vtest.avi`` in a loop, kills camera b's
server at a third of the run for ``--outage-s`` and restarts it on the same port, scrapes
``/metrics`` and the process tree's resident memory every ``--scrape-s`` seconds, then stops the
pipeline with SIGTERM as a supervisor would and reads both summaries.

Why one file of this length: a benchmark here is one script an operator can copy and run on its
own; its parts (servers, outage, scraping, memory sampling, the report) only make sense together
and none is used elsewhere.

Memory is compared from the end of a warm-up (1 min, or 20 % of a shorter run: models, buffers and
the motion net's background settle first) to the end; goal: flat within 10 %. Writes
``benchmarks/results/live_soak.json`` and the "Live soak" section of ``docs/benchmarks.md``; with
``--out DIR`` (CI smoke runs) everything, the JSON included, goes to DIR and the docs are left alone.

Why one file of this length: it is a script run by hand (and by one smoke test), whose parts
(servers, sampler, report) only make sense together; splitting it would only spread one
experiment over several modules.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import REPO_ROOT, RESULTS_DIR, command_line, git_commit, machine, machine_line, publish_table  # noqa: E402

SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's, with python3-gi and gst-rtsp-server (the venv has neither)
RTSP_SERVER = REPO_ROOT / "tests" / "rtsp_server.py"
VTEST_CANDIDATES = [  # the same places tests/conftest.py looks
    Path(os.environ.get("PRIVREID_DATA", Path.home() / ".cache" / "privreid" / "data")) / "vtest.avi",
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
]
SHARED_DATA = Path(os.environ.get("PRIVREID_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
YOLO_INT8 = SHARED_DATA / "detector_models" / "ultralytics" / "yolov8n_int8_openvino_model"
VTEST_SECONDS = 79.5  # 795 frames at 10 fps: one pass of the file at the server's rate
RSS_GOAL_PCT = 10.0
LATENCY_METRIC = "privreid_capture_to_output_seconds"
# What an operator of two live cameras on 2 cores would change from the file-oriented defaults: the
# queue (8) and the detector batch (8) each hold about a second of frames at the rate this CPU
# keeps up with, so the defaults add ~2 s of latency to every frame and buy no throughput (stale
# frames are dropped either way). KEY VALUE pairs on the command line come later and win.
LIVE_SETTINGS = ["SOURCE.QUEUE_SIZE", "2", "DETECTOR.BATCH", "2"]


class SoakError(RuntimeError):
    """The soak could not be set up (no GStreamer, no video, a server or the pipeline did not start)."""


def log(msg: str) -> None:
    """Operator-readable progress on stderr, with the wall-clock time: the soak runs for minutes."""
    print(f"{datetime.now().strftime('%H:%M:%S')} live_soak: {msg}", file=sys.stderr, flush=True)


def find_vtest() -> Path | None:
    return next((p for p in VTEST_CANDIDATES if p.is_file()), None)


def gst_available() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    probe = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
        ],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def free_port() -> int:
    """A free listening port below the kernel's ephemeral range.

    Why not ``bind(0)``: that hands out an ephemeral port, which the pipeline's own outgoing
    connections (RTSP clients, FFmpeg) may take before the metrics server or a restarted RTSP
    server binds it ("Address already in use" seen in CI)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, min(low, 32768)))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SoakError("no free port found in 20000..ephemeral range")


def looped_video(vtest: Path, seconds: float, workdir: Path) -> tuple[Path, int]:
    """The RTSP server plays its file once: make one long enough that no camera ends by itself
    (a stream copy, so it takes a fraction of a second and decodes exactly like the original)."""
    loops = max(1, math.ceil(seconds / VTEST_SECONDS) + 1)
    out = workdir / "long.avi"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(vtest), "-c", "copy", str(out)],
        check=True,
    )
    return out, loops


class Camera:
    """One ``tests/rtsp_server.py`` that can be killed and started again on the same port, as in
    tests/test_live_reconnect.py. Its output goes to a log file: a pipe nobody reads would fill up
    and stall the server in the middle of the soak."""

    def __init__(self, name: str, video: Path, fps: int, logdir: Path) -> None:
        self.name, self.video, self.fps = name, video, fps
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.log_path = logdir / f"rtsp_{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        with self.log_path.open("a") as fh:
            fh.write(f"--- start {datetime.now().isoformat(timespec='seconds')}\n")
            fh.flush()
            start_at = fh.tell()
            self.proc = subprocess.Popen(
                [
                    str(SYSTEM_PYTHON),
                    str(RTSP_SERVER),
                    "--file",
                    str(self.video),
                    "--port",
                    str(self.port),
                    "--mount",
                    "/cam",
                    "--fps",
                    str(self.fps),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                text=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.log_path.open() as fh:
                fh.seek(start_at)
                text = fh.read()
            if "READY" in text:
                return
            if "ERROR" in text or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        raise SoakError(f"RTSP server {self.name} did not start on port {self.port}: see {self.log_path}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# ---- what is sampled every few seconds --------------------------------------------------------------------
def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0  # gone, or a zombie (no VmRSS line)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the FFmpeg encoders are the pipeline's children), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory(pid: int) -> dict[str, Any]:
    """Resident memory of the pipeline's process and of its whole tree, in MB (the tree double-counts
    shared pages; it is the number a container's memory limit comes closest to)."""
    kids = _descendants(pid)
    main = _rss_kb(pid)
    return {
        "rss_main_mb": round(main / 1024, 1),
        "rss_tree_mb": round((main + sum(_rss_kb(k) for k in kids)) / 1024, 1),
        "children": len(kids),
    }


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat)
    except (OSError, ValueError, IndexError):
        return None


def system_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores), to tell the pipeline's share from other work."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


class CpuMeter:
    """Cores in use between two samples: the pipeline's tree, the RTSP servers, and everything else
    on this shared machine (a soak's latency means little without knowing what it competed with).
    Per process, so that a restarted server (a new pid) is counted from its start, not as a drop."""

    def __init__(self) -> None:
        self._seen: dict[int, float] = {}
        self._last: tuple[float, float] | None = None

    def _delta(self, pids: Sequence[int], seen: dict[int, float]) -> float:
        total = 0.0
        for pid in pids:
            now = cpu_seconds(pid)
            if now is not None:
                total += max(0.0, now - self._seen.get(pid, 0.0))
                seen[pid] = now
        return total

    def sample(self, pipeline_pids: Sequence[int], server_pids: Sequence[int]) -> dict[str, float | None]:
        seen: dict[int, float] = {}
        pipe, rtsp = self._delta(pipeline_pids, seen), self._delta(server_pids, seen)
        now = (time.monotonic(), system_busy_seconds())
        last, self._last, self._seen = self._last, now, seen
        if last is None or now[0] - last[0] <= 0:
            return {"cpu_pipeline": None, "cpu_rtsp": None, "cpu_other": None}
        dt = now[0] - last[0]
        pipe, rtsp, busy = pipe / dt, rtsp / dt, max(0.0, now[1] - last[1]) / dt
        return {
            "cpu_pipeline": round(pipe, 2),
            "cpu_rtsp": round(rtsp, 2),
            "cpu_other": round(max(0.0, busy - pipe - rtsp), 2),
        }


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _metric(m: dict, name: str, camera: str, **labels: str) -> float | None:
    return m.get((name, tuple(sorted({"camera": camera, **labels}.items()))))


def camera_sample(m: dict, camera: str) -> dict[str, Any]:
    def count(name: str) -> int:
        return int(_metric(m, f"privreid_{name}_total", camera) or 0)

    from stream.metrics import CAMERA_STATES

    state = next((s for s in CAMERA_STATES if _metric(m, "privreid_camera_state", camera, state=s) == 1), None)
    return {
        "frames_in": count("frames_in"),
        "frames_processed": count("frames_processed"),
        "frames_dropped": count("frames_dropped"),
        "reconnects": count("reconnects"),
        "queue_depth": int(_metric(m, "privreid_queue_depth", camera) or 0),
        "state": state,
        "latency_count": int(_metric(m, f"{LATENCY_METRIC}_count", camera) or 0),
    }


def histogram_buckets(m: dict, camera: str) -> list[tuple[float, float]]:
    """(upper bound s, cumulative count) of the capture-to-output histogram, +Inf last."""
    rows = [
        (float(dict(labels)["le"]), value)
        for (name, labels), value in m.items()
        if name == f"{LATENCY_METRIC}_bucket" and dict(labels).get("camera") == camera
    ]
    return sorted(rows)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket the rank falls in; the highest
    finite bound when it falls in +Inf. In ms; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return round(lower_bound * 1000, 1)
            width = count - lower_count
            frac = (rank - lower_count) / width if width > 0 else 1.0
            return round((lower_bound + (bound - lower_bound) * frac) * 1000, 1)
        lower_bound, lower_count = bound, count
    return None


def histogram_summary(buckets: Sequence[tuple[float, float]]) -> dict[str, Any]:
    total = buckets[-1][1] if buckets else 0
    over_1s = total - next((c for b, c in buckets if b == 1.0), total) if buckets else 0
    return {
        "p50": histogram_quantile(0.5, buckets),
        "p95": histogram_quantile(0.95, buckets),
        "p99": histogram_quantile(0.99, buckets),
        "frames": int(total),
        "over_1s": int(over_1s),
    }


def bucket_delta(end: Sequence[tuple[float, float]], start: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Buckets of the observations between two scrapes (counters only grow)."""
    before = dict(start)
    return [(b, c - before.get(b, 0.0)) for b, c in end]


# ---- the run -----------------------------------------------------------------------------------------------
def choose_detector(requested: str) -> tuple[str, list[str], str]:
    """What an operator of this 2-core CPU would run: YOLOv8n INT8 (OpenVINO) when the offline data
    has it, otherwise HOG on the frame as it comes (HOG_UPSCALE 1.0: the default 1.5 enlargement
    costs over twice the time and two 10 fps cameras would mostly be dropped frames)."""
    if requested == "auto":
        requested = str(YOLO_INT8) if YOLO_INT8.is_dir() else "hog"
    if requested == "hog":
        return "hog", ["DETECTOR.HOG_UPSCALE", "1.0"], "OpenCV HOG at HOG_UPSCALE 1.0"
    return requested, [], Path(requested.rstrip("/")).name


def wait_until_streaming(
    proc: subprocess.Popen, port: int, cameras: Sequence[str], timeout_s: float, pipeline_log: Path
) -> dict:
    """Until both cameras have processed a frame: model loading and the RTSP handshakes are not the soak."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SoakError(f"the pipeline exited with {proc.returncode} before streaming: {tail(pipeline_log)}")
        try:
            m = scrape(port)
            if all(camera_sample(m, c)["frames_processed"] > 0 for c in cameras):
                return m
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    raise SoakError(f"the cameras were not streaming {timeout_s:.0f} s after the start: {tail(pipeline_log)}")


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def run_soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if not gst_available():
        raise SoakError("needs Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 (scripts/setup.sh installs them)")
    vtest = find_vtest()
    if vtest is None:
        raise SoakError("needs OpenCV's vtest.avi (scripts/setup.sh unpacks Debian's opencv-doc)")
    run_s = args.minutes * 60.0
    warmup_s = args.warmup_s if args.warmup_s is not None else min(60.0, 0.2 * run_s)
    outage_at_s = run_s / 3.0
    video, loops = looped_video(vtest, run_s + 120.0, workdir)  # + start-up and the restarted server's head start
    out = workdir / "pipeline_out"
    if out.is_dir():  # a previous soak's files in the same --out: the summaries read below must be this run's
        shutil.rmtree(out)
    pipeline_log = workdir / "pipeline.log"
    detector, detector_overrides, detector_desc = choose_detector(args.detector)
    cams = {"a": Camera("a", video, args.fps, workdir), "b": Camera("b", video, args.fps, workdir)}
    metrics_port = free_port()
    cmd = [
        sys.executable,
        str(REPO_ROOT / "run_pipeline.py"),
        "--source",
        cams["a"].url,
        "--source",
        cams["b"].url,
        "--camera-id",
        "a",
        "--camera-id",
        "b",
        "--output",
        str(out),
        "--detector",
        detector,
        "--anonymizer",
        args.anonymizer,
        "--metrics-port",
        str(metrics_port),
        "LOG.PROGRESS",
        "False",
        *LIVE_SETTINGS,
        *detector_overrides,
        *args.overrides,
    ]
    log(
        f"{vtest.name} looped {loops}x -> {video}; cameras at {args.fps} fps; detector {detector_desc}; "
        f"anonymizer {args.anonymizer}; {args.minutes:g} min after both stream, camera b down at "
        f"{outage_at_s:.0f} s for {args.outage_s:g} s; memory baseline at {warmup_s:.0f} s"
    )
    samples: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    proc: subprocess.Popen | None = None
    load_start = round(os.getloadavg()[0], 2)
    try:
        for cam in cams.values():
            cam.start()
        log(f"RTSP servers ready: a {cams['a'].url}, b {cams['b'].url}; starting the pipeline (log: {pipeline_log})")
        launched = time.monotonic()
        with pipeline_log.open("w") as fh:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
            )
        first = wait_until_streaming(proc, metrics_port, list(cams), args.start_timeout_s, pipeline_log)
        t0 = time.monotonic()
        startup_s = round(t0 - launched, 1)
        log(f"both cameras streaming {startup_s} s after launch (pid {proc.pid}, metrics on :{metrics_port})")
        warmup_buckets = {c: histogram_buckets(first, c) for c in cams}
        outage_state = "pending"  # pending -> down -> restarted
        down_at = killed_ms = restarted_ms = 0.0
        waiting_logged = False
        last_print = -1e9
        next_sample = 0.0
        last_metrics = first
        cpu = CpuMeter()
        while True:
            now = time.monotonic() - t0
            if outage_state == "pending" and now >= outage_at_s:
                cams["b"].kill()
                events.append({"t_s": round(now, 1), "event": "camera b server killed"})
                log(f"t={now:.0f} s: killed camera b's RTSP server (outage of {args.outage_s:g} s)")
                outage_state, down_at, killed_ms = "down", now, time.time() * 1000
            elif outage_state == "down" and now >= down_at + args.outage_s:
                cams["b"].start()
                events.append({"t_s": round(time.monotonic() - t0, 1), "event": "camera b server restarted"})
                log(f"t={now:.0f} s: camera b's RTSP server is back on port {cams['b'].port}")
                outage_state, restarted_ms = "restarted", time.time() * 1000
            if now >= next_sample:
                if proc.poll() is not None:
                    raise SoakError(f"the pipeline exited with {proc.returncode} during the soak: {tail(pipeline_log)}")
                try:
                    m = scrape(metrics_port)
                except (OSError, urllib.error.URLError) as exc:
                    log(f"t={now:.0f} s: scrape failed ({exc}); trying again at the next sample")
                    m = None
                sample: dict[str, Any] = {
                    "t_s": round(now, 1),
                    **memory(proc.pid),
                    **cpu.sample(
                        [proc.pid, *_descendants(proc.pid)], [c.proc.pid for c in cams.values() if c.proc is not None]
                    ),
                }
                if m is not None:
                    last_metrics = m
                    sample["cameras"] = {c: camera_sample(m, c) for c in cams}
                    if samples and "cameras" in samples[-1]:
                        was = samples[-1]["cameras"]["b"]["reconnects"]
                        if sample["cameras"]["b"]["reconnects"] > was:
                            events.append({"t_s": sample["t_s"], "event": "camera b reconnected (metrics)"})
                            log(f"t={now:.0f} s: camera b reconnected")
                    if now < warmup_s or not any(s["t_s"] >= warmup_s for s in samples):
                        warmup_buckets = {c: histogram_buckets(m, c) for c in cams}
                samples.append(sample)
                next_sample += args.scrape_s
                if now - last_print >= args.print_every_s:
                    last_print = now
                    log(
                        f"t={now:4.0f}/{run_s:.0f} s  rss {sample['rss_main_mb']:.0f} MB (tree "
                        f"{sample['rss_tree_mb']:.0f} MB, {sample['children']} children)  cores: pipeline "
                        f"{_fmt(sample['cpu_pipeline'])} servers {_fmt(sample['cpu_rtsp'])} other "
                        f"{_fmt(sample['cpu_other'])}  "
                        + "  ".join(
                            f"{c}: {s['state']} in {s['frames_in']} done {s['frames_processed']} dropped "
                            f"{s['frames_dropped']} q {s['queue_depth']}"
                            for c, s in sample.get("cameras", {}).items()
                        )
                    )
            if now >= run_s and outage_state == "restarted":
                recovered = any(x.get("cameras", {}).get("b", {}).get("reconnects", 0) >= 1 for x in samples[-1:])
                if recovered or now >= run_s + args.recovery_grace_s:
                    break
                if not waiting_logged:
                    log(
                        f"t={now:.0f} s: camera b has not reconnected yet; waiting up to {args.recovery_grace_s:g} s "
                        f"more (stopping now would measure nothing of the recovery)"
                    )
                    waiting_logged = True
            time.sleep(max(0.05, min(0.5, next_sample - (time.monotonic() - t0))))

        end_buckets = {c: histogram_buckets(last_metrics, c) for c in cams}
        log(f"t={time.monotonic() - t0:.0f} s: SIGTERM to the pipeline")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        killed = False
        try:
            proc.wait(timeout=args.stop_timeout_s)
        except subprocess.TimeoutExpired:
            killed = True
            proc.kill()
            proc.wait()
        stop_s = round(time.monotonic() - sent, 2)
        exit_code = proc.returncode
        log(
            f"pipeline exited with {exit_code} {stop_s} s after SIGTERM"
            + (" (killed: it did not stop)" if killed else "")
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for cam in cams.values():
            cam.kill()
    summaries = {}
    for c in cams:
        path = out / f"{c}.summary.json"
        summaries[c] = json.loads(path.read_text()) if path.is_file() else None
    return analyse(
        args,
        samples,
        events,
        summaries,
        warmup_buckets,
        end_buckets,
        {
            "run_s": run_s,
            "warmup_s": warmup_s,
            "outage_at_s": round(outage_at_s, 1),
            "outage_s": args.outage_s,
            "camera_fps": args.fps,
            "video": f"{vtest.name} looped {loops}x",
            "detector": detector_desc,
            "anonymizer": args.anonymizer,
            "live_settings": " ".join(LIVE_SETTINGS),
            "startup_s": startup_s,
            "outage": outage_timing(summaries.get("b"), down_at, killed_ms, restarted_ms),
            "stop_s": stop_s,
            "exit_code": exit_code,
            "killed_after_sigterm": killed,
            "load_avg_1m_start": load_start,
            "load_avg_1m_end": round(os.getloadavg()[0], 2),
            "pipeline_command": _shown(cmd),
        },
    )


def outage_timing(summary: dict | None, killed_at_s: float, killed_ms: float, restarted_ms: float) -> dict[str, Any]:
    """When camera b's loss was noticed and when it was back, relative to the kill and the restart
    (wall-clock ms on both sides: the summary's gaps are in wall-clock time). A client that reads
    slower than the camera sends keeps reading its backlog after the server is gone, so
    ``noticed_after_kill_s`` shows (at most) the backlog the RTSP client held at the kill."""
    gaps = [g for g in (summary or {}).get("gaps", []) if g.get("lost_at_ms", 0) >= killed_ms - 1000]
    if not killed_ms or not gaps:
        return {
            "killed_at_s": round(killed_at_s, 1),
            "noticed_after_kill_s": None,
            "gap_s": None,
            "back_after_restart_s": None,
        }
    g = gaps[0]
    return {
        "killed_at_s": round(killed_at_s, 1),
        "noticed_after_kill_s": round((g["lost_at_ms"] - killed_ms) / 1000, 1),
        "gap_s": round((g["back_at_ms"] - g["lost_at_ms"]) / 1000, 1),
        "back_after_restart_s": round((g["back_at_ms"] - restarted_ms) / 1000, 1),
    }


def _shown(cmd: Sequence[str]) -> str:
    """The pipeline's command as an operator would type it (no venv or repo paths)."""
    shown = ["python", "run_pipeline.py", *cmd[2:]]
    return " ".join(shown)


def analyse(
    args: argparse.Namespace,
    samples: list[dict],
    events: list[dict],
    summaries: dict[str, dict | None],
    warmup_buckets: dict,
    end_buckets: dict,
    run: dict[str, Any],
) -> dict[str, Any]:
    warm = next((s for s in samples if s["t_s"] >= run["warmup_s"]), samples[0] if samples else None)
    end = samples[-1] if samples else None
    run["soaked_s"] = end["t_s"] if end else 0.0
    mem: dict[str, Any] = {}
    if warm and end:
        after = [s for s in samples if s["t_s"] >= warm["t_s"]]
        for key in ("rss_main_mb", "rss_tree_mb"):
            growth = 100.0 * (end[key] - warm[key]) / warm[key] if warm[key] else None
            mem[key.removesuffix("_mb")] = {
                "start_mb": warm[key],
                "end_mb": end[key],
                "peak_mb": max(s[key] for s in after),
                "growth_pct": None if growth is None else round(growth, 1),
            }
        mem["baseline_t_s"], mem["end_t_s"] = warm["t_s"], end["t_s"]
        mem["children_start"], mem["children_end"] = warm["children"], end["children"]
        growths = [m["growth_pct"] for k, m in mem.items() if k in ("rss_main", "rss_tree")]
        mem["goal_pct"] = RSS_GOAL_PCT
        mem["goal_met"] = all(g is not None and g <= RSS_GOAL_PCT for g in growths)
    cameras: dict[str, Any] = {}
    for c, summary in summaries.items():
        last = next((s["cameras"][c] for s in reversed(samples) if "cameras" in s), {})
        s = summary or {}
        cameras[c] = {
            "frames_in": last.get("frames_in"),  # the last scrape, just before SIGTERM
            "frames_processed": s.get("frames_processed"),
            "frames_written": s.get("frames"),
            "dropped_frames": s.get("dropped_frames"),
            "reconnects": s.get("reconnects"),
            "gaps": s.get("gaps", []),
            "gap_s": [
                round((g["back_at_ms"] - g["lost_at_ms"]) / 1000, 1)
                for g in s.get("gaps", [])
                if "back_at_ms" in g and "lost_at_ms" in g
            ],
            "latency_ms_summary": s.get("latency_ms"),
            "latency_ms_histogram": histogram_summary(end_buckets.get(c, [])),
            "latency_ms_histogram_after_warmup": histogram_summary(
                bucket_delta(end_buckets.get(c, []), warmup_buckets.get(c, []))
            ),
            "processing_fps": s.get("processing_fps"),
            "stopped_early": s.get("stopped_early"),
            "error": s.get("error") if summary else "no summary written",
            "frames_in_per_s_after_warmup": rate(samples, warm, c, "frames_in"),
            "processed_per_s_after_warmup": rate(samples, warm, c, "frames_processed"),
            "max_queue_depth": max((x["cameras"][c]["queue_depth"] for x in samples if "cameras" in x), default=None),
        }
    cpu: dict[str, Any] = {}
    for key in ("cpu_pipeline", "cpu_rtsp", "cpu_other"):
        vals = [s[key] for s in samples if s.get(key) is not None]
        cpu[key.removeprefix("cpu_") + "_cores_mean"] = round(sum(vals) / len(vals), 2) if vals else None
    return {**run, "cameras": cameras, "memory": mem, "cpu": cpu, "events": events, "samples": samples}


def rate(samples: list[dict], warm: dict | None, camera: str, key: str) -> float | None:
    """Per second between the baseline sample and the last one: 'frames in' below the camera's rate
    means the client reads slower than the camera sends, and the difference piles up unseen."""
    have = [s for s in samples if "cameras" in s and warm is not None and s["t_s"] >= warm["t_s"]]
    if len(have) < 2 or have[-1]["t_s"] <= have[0]["t_s"]:
        return None
    return round(
        (have[-1]["cameras"][camera][key] - have[0]["cameras"][camera][key]) / (have[-1]["t_s"] - have[0]["t_s"]), 2
    )


def finite(value: Any) -> Any:
    """Standard JSON has no NaN or Infinity: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _fmt(v: Any, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}" if isinstance(v, (int, float)) else str(v)


def drift_last_half(samples: list[dict]) -> float | None:
    """RSS change over the second half of the run, in %: a leak keeps growing there, a warm-up step does not."""
    if len(samples) < 4:
        return None
    mid = next(x for x in samples if x["t_s"] >= samples[-1]["t_s"] / 2)
    return (
        round(100.0 * (samples[-1]["rss_main_mb"] - mid["rss_main_mb"]) / mid["rss_main_mb"], 1)
        if mid["rss_main_mb"]
        else None
    )


def analysis_line(r: dict[str, Any]) -> str:
    """One line an operator can act on: the goal met or missed, and where the rest would come from."""
    mem = r["memory"]
    if not mem:
        return "No memory samples: the run ended before the first one."
    main, tree = mem["rss_main"], mem["rss_tree"]
    parts = []
    half = drift_last_half(r.get("samples", []))
    step = (
        ""
        if half is None
        else f"; over the last half of the run it moved {half:+.1f} %, so the growth is a step early on "
        f"(its cause not traced; a tracemalloc diff would tell), not a steady leak"
        if abs(half) <= RSS_GOAL_PCT / 4
        else f"; over the last half of the run alone it moved {half:+.1f} %"
    )
    if mem["goal_met"]:
        parts.append(
            f"Memory goal met: after the {r['warmup_s']:.0f} s warm-up the pipeline's RSS moved "
            f"{main['growth_pct']:+.1f} % (process tree {tree['growth_pct']:+.1f} %), within the +{RSS_GOAL_PCT:g} % goal{step}"
        )
    else:
        grew = "the Python process" if (main["growth_pct"] or 0) > RSS_GOAL_PCT else "the FFmpeg children"
        minutes = max((mem["end_t_s"] - mem["baseline_t_s"]) / 60, 1e-9)
        rate = (main["end_mb"] - main["start_mb"]) / minutes
        parts.append(
            f"Memory goal missed: RSS grew {main['growth_pct']:+.1f} % (tree {tree['growth_pct']:+.1f} %) after "
            f"the warm-up, {rate:.1f} MB/min, in {grew}; a longer run (does it level off?) and a "
            f"tracemalloc snapshot diff of the process would show whether it is a leak or caches filling{step}"
        )
    drops = [(c, x["frames_processed"] or 0, x["frames_in"]) for c, x in r["cameras"].items() if x["frames_in"]]
    if drops and any(done < got * 0.99 for _, done, got in drops):
        worst = min(drops, key=lambda d: d[1] / d[2])
        parts.append(
            f"throughput missed: camera {worst[0]} had {100 * worst[1] / worst[2]:.0f} % of the frames it read "
            f"redacted, the rest dropped as stale (by design; each output keeps real time with repeats)"
        )
    a = r["cameras"].get("a", {})
    fps_in = a.get("frames_in_per_s_after_warmup")
    if fps_in is not None and fps_in < 0.95 * r["camera_fps"]:
        noticed = r["outage"].get("noticed_after_kill_s")
        # Had the shortfall piled up in the client, camera b would have read that many seconds of
        # buffered frames after its server died; far less means the frames were lost, not queued.
        piled_s = (r["camera_fps"] - fps_in) * r["outage"]["killed_at_s"] / r["camera_fps"]
        where = (
            ""
            if noticed is None
            else f"; they do not pile up (camera b read buffered frames for at most {noticed:g} s after its server died, "
            f"not the ~{piled_s:.0f} s a growing backlog would hold), so they are lost in the RTSP client before "
            f"the reader counts them, most likely RTP packets over UDP overflowing while the reader waits "
            f"for the CPU (not verified)"
            if noticed < 0.5 * piled_s
            else f"; they pile up in the RTSP client (camera b read buffered frames for {noticed:g} s after its "
            f"server died)"
        )
        parts.append(
            f"camera a was read at {fps_in:g} of the {r['camera_fps']} frames/s its server sends: the rest never reach `frames_in`, `dropped_frames` or the latency "
            f"histogram{where}; real time needs less CPU per frame than this shared machine gives "
            f"(a lower camera rate or resolution, a dedicated core, RTSP over TCP)"
        )
    b = r["cameras"].get("b", {})
    if (b.get("reconnects") or 0) < 1:
        parts.append("camera b did NOT reconnect after its outage")
    if r["exit_code"] != 0:
        parts.append(f"the pipeline exited with {r['exit_code']} after SIGTERM")
    return "; ".join(parts) + "."


def table(r: dict[str, Any], command: str) -> list[str]:
    lines = [
        "## Live soak: two RTSP cameras, one outage",
        "",
        f"`{command}` on {r['machine_line']}; the CPU is shared with other work, so latency and drops vary "
        f"with its load (1-min load {r['load_avg_1m_start']} when the cameras started, {r['load_avg_1m_end']} "
        f"at the end). "
        f"Two `tests/rtsp_server.py` cameras playing {r['video']} at {r['camera_fps']} fps; detector "
        f"{r['detector']}, anonymizer {r['anonymizer']}, `{r['live_settings']}` (shallow queue and batch for live "
        f"latency), other settings default; {r['soaked_s']:g} s (planned {r['run_s']:g}) after "
        f"both cameras streamed ({r['startup_s']} s start-up); camera b's server killed at {r['outage_at_s']:g} s "
        f"and restarted on the same port {r['outage_s']:g} s later; `/metrics` and RSS every {r['scrape_s']:g} s; "
        f"then SIGTERM. Latency: capture (arrival) to redacted write, from the summaries (every frame) and from "
        f"the `/metrics` histogram (interpolated within its buckets).",
        "",
        "| camera | frames in | processed | dropped | in / processed per s after warm-up | reconnects | gaps (s) "
        "| latency p50 / p95 / max (ms) | histogram p50 / p95 (ms) | after warm-up p50 / p95 (ms) | frames > 1 s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c, x in r["cameras"].items():
        lat, hist, late = (
            x["latency_ms_summary"] or {},
            x["latency_ms_histogram"],
            x["latency_ms_histogram_after_warmup"],
        )
        lines.append(
            f"| {c} | {_fmt(x['frames_in'])} | {_fmt(x['frames_processed'])} | {_fmt(x['dropped_frames'])} | "
            f"{_fmt(x['frames_in_per_s_after_warmup'])} / {_fmt(x['processed_per_s_after_warmup'])} | "
            f"{_fmt(x['reconnects'])} | {', '.join(f'{g:g}' for g in x['gap_s']) or '–'} | "
            f"{_fmt(lat.get('p50'))} / {_fmt(lat.get('p95'))} / {_fmt(lat.get('max'))} | "
            f"{_fmt(hist['p50'])} / {_fmt(hist['p95'])} | {_fmt(late['p50'])} / {_fmt(late['p95'])} | "
            f"{_fmt(hist['over_1s'])} |"
        )
    mem = r["memory"]
    if mem:
        lines += [
            "",
            f"| resident memory | at {mem['baseline_t_s']:g} s (after warm-up) | at {mem['end_t_s']:g} s (end) "
            f"| peak after warm-up | growth (goal ≤ {RSS_GOAL_PCT:g} %) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key, label in (
            ("rss_main", "pipeline process"),
            ("rss_tree", f"process tree ({mem['children_start']} → {mem['children_end']} children)"),
        ):
            m = mem[key]
            ok = m["growth_pct"] is not None and m["growth_pct"] <= RSS_GOAL_PCT
            lines.append(
                f"| {label} | {m['start_mb']:g} MB | {m['end_mb']:g} MB | {m['peak_mb']:g} MB | "
                f"{_fmt(m['growth_pct'], ' %')} {'✅' if ok else '❌'} |"
            )
    o, cpu = r["outage"], r["cpu"]
    back = (
        "the pipeline recorded no gap for it"
        if o["noticed_after_kill_s"] is None
        else f"its loss was noticed {o['noticed_after_kill_s']:g} s after the kill (the RTSP client first read "
        f"the frames it had buffered), the gap lasted {o['gap_s']:g} s, and the camera was back "
        f"{o['back_after_restart_s']:g} s after its server"
    )
    lines += [
        "",
        f"Outage at {o['killed_at_s']:g} s: camera b: {back}. CPU, mean cores in use (of {os.cpu_count()}): pipeline and encoders "
        f"{_fmt(cpu.get('pipeline_cores_mean'))}, the two RTSP servers {_fmt(cpu.get('rtsp_cores_mean'))}, "
        f"other work on the machine {_fmt(cpu.get('other_cores_mean'))}.",
    ]
    lines += [
        "",
        f"SIGTERM: exit code {r['exit_code']} after {r['stop_s']:g} s"
        + (" (killed: it did not stop in time)" if r["killed_after_sigterm"] else "")
        + ".",
        "",
        analysis_line(r),
    ]
    return lines


def write_json(data: dict[str, Any], path: Path) -> Path:
    """The envelope of benchmarks.report.save_json (benchmark, date, commit, machine), at any path,
    so that a CI smoke run never overwrites the published results."""
    data = {
        "benchmark": "live_soak",
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
        **data,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(data), indent=2, allow_nan=False) + "\n")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="soak length once both cameras stream (default 10)")
    p.add_argument("--outage-s", type=float, default=10.0, help="how long camera b's server is down, at 1/3 of the run")
    p.add_argument("--fps", type=int, default=10, help="frame rate each RTSP camera sends (default 10)")
    p.add_argument(
        "--detector",
        default="auto",
        help="auto (YOLOv8n INT8 OpenVINO from the offline data, else HOG), hog, or a model path",
    )
    p.add_argument("--anonymizer", default="mosaic")
    p.add_argument("--scrape-s", type=float, default=5.0, help="seconds between /metrics and memory samples")
    p.add_argument("--print-every-s", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="memory baseline after this long (default: 60 s, or 20 %% of a shorter run)",
    )
    p.add_argument(
        "--recovery-grace-s",
        type=float,
        default=60.0,
        help="at the planned end, wait up to this long more for camera b to have reconnected",
    )
    p.add_argument("--start-timeout-s", type=float, default=180.0)
    p.add_argument("--stop-timeout-s", type=float, default=60.0, help="how long to wait for the exit after SIGTERM")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="keep the run's files and write live_soak.json here, leaving benchmarks/results and the "
        "docs alone (CI smoke runs); default: a temporary folder, results published",
    )
    p.add_argument(
        "--from-json",
        default=None,
        metavar="PATH",
        help="run nothing: write the docs section again from a saved live_soak.json (after a change of "
        "the table's wording, without another 10-minute run)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY VALUE", help="passed on to run_pipeline.py")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.outage_s <= 0 or args.scrape_s <= 0:
        p.error("--minutes, --outage-s and --scrape-s must be > 0")
    if args.outage_s >= args.minutes * 60 * 2 / 3:
        p.error("--outage-s must end before the run does (the outage starts at 1/3 of it)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        publish_table("live_soak", table(saved, saved["command"]))
        return 0
    command = command_line("live_soak.py", argv)
    host = machine_line()  # its load figure is the one at the start
    keep = Path(args.out) if args.out else None
    workdir = keep or Path(tempfile.mkdtemp(prefix="live_soak_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_soak(args, workdir)
    except SoakError as exc:
        log(f"cannot run: {exc}")
        return 2
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {"command": command, "machine_line": host, "scrape_s": args.scrape_s, **result}
    path = write_json(result, (keep / "live_soak.json") if keep else RESULTS_DIR / "live_soak.json")
    log(f"results: {path}")
    lines = table(result, command)
    if keep is None:
        publish_table("live_soak", lines)
    else:
        print("\n".join(lines))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
