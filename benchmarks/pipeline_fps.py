"""Decode-only, detect-only and full-pipeline frames per second, in one run on the same video.

    python benchmarks/pipeline_fps.py [--source VIDEO] [--frames 300] [--detector MODEL|hog]
        [--anonymizer mosaic] [--repeats 2]

* decode-only: the pipeline's source reader (OpenCV/FFmpeg) alone;
* detect-only: the same reader thread feeding the detector in the pipeline's batches;
* full: ``stream.pipeline.Pipeline`` end to end (decode, detect, track, redact, encode, logs).
Goal: full ≥ 0.85 × detect-only with the mosaic anonymizer. Writes
``benchmarks/results/pipeline_fps.json`` and the table in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anonymizer.factory import build_anonymizer  # noqa: E402
from benchmarks.report import command_line, machine_line, publish_table, save_json  # noqa: E402
from configs import build_config  # noqa: E402
from configs.pipeline_defaults import get_pipeline_defaults  # noqa: E402
from detectors.factory import build_detector  # noqa: E402
from stream.pipeline import _EOS, CameraSpec, Pipeline, SourceReader  # noqa: E402
from stream.sources import open_source  # noqa: E402

DEFAULT_VIDEO = Path.home() / ".cache" / "privreid" / "data" / "vtest.avi"
DEFAULT_DETECTOR = (
    Path(__file__).resolve().parents[2] / "shared/data/detector_models/ultralytics/yolov8n_int8_openvino_model"
)


def decode_only(cfg, source: str, frames: int) -> float:
    src = open_source(source, "bench", cfg.SOURCE)
    t0 = time.perf_counter()
    n = 0
    for _frame in src.frames():
        n += 1
        if n >= frames:
            break
    src.close()
    return n / (time.perf_counter() - t0)


def detect_only(cfg, source: str, frames: int, detector) -> float:
    reader = SourceReader(
        open_source(source, "bench", cfg.SOURCE), cfg.SOURCE.QUEUE_SIZE, False, frames, threading.Event()
    )
    t0 = time.perf_counter()
    reader.start()
    n, done = 0, False
    while not done:
        batch = [reader.queue.get()]
        while len(batch) < cfg.DETECTOR.BATCH and not reader.queue.empty():
            batch.append(reader.queue.get())
        if batch[-1] is _EOS:
            batch.pop()
            done = True
        if batch:
            detector.detect([f.image for f in batch])
            n += len(batch)
    return n / (time.perf_counter() - t0)


def full_pipeline(cfg, source: str, frames: int, detector, anonymizer) -> float:
    with tempfile.TemporaryDirectory() as out:
        pipe = Pipeline(cfg, [CameraSpec("bench", source)], Path(out), detector, anonymizer, max_frames=frames)
        t0 = time.perf_counter()
        summary = pipe.run()["bench"]
        elapsed = time.perf_counter() - t0
    if summary["error"]:
        raise RuntimeError(summary["error"])
    return summary["frames"] / elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(DEFAULT_VIDEO))
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--detector", default=str(DEFAULT_DETECTOR) if DEFAULT_DETECTOR.exists() else "hog")
    p.add_argument("--anonymizer", default="mosaic")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg = build_config(get_pipeline_defaults(), None, ["LOG.PROGRESS", "False", *args.overrides])
    detector = build_detector(args.detector, cfg.DETECTOR)
    anonymizer = build_anonymizer(args.anonymizer, cfg.ANONYMIZER)
    warm = open_source(args.source, "warm", cfg.SOURCE)
    detector.detect([next(iter(warm.frames())).image] * 2)  # compile / allocate before timing
    warm.close()
    runs = {"decode_only": [], "detect_only": [], "full_pipeline": []}
    for _ in range(args.repeats):
        runs["decode_only"].append(decode_only(cfg, args.source, args.frames))
        runs["detect_only"].append(detect_only(cfg, args.source, args.frames, detector))
        runs["full_pipeline"].append(full_pipeline(cfg, args.source, args.frames, detector, anonymizer))
    fps = {k: round(statistics.median(v), 2) for k, v in runs.items()}
    ratio = round(fps["full_pipeline"] / fps["detect_only"], 3)
    command = command_line("pipeline_fps.py", argv or sys.argv[1:])
    result = {
        "command": command,
        "source": Path(args.source).name,
        "frames": args.frames,
        "detector": detector.name,
        "anonymizer": anonymizer.kind,
        "fps": fps,
        "runs": runs,
        "full_over_detect": ratio,
        "goal": 0.85,
        "goal_met": ratio >= 0.85,
    }
    save_json("pipeline_fps", result)
    table = [
        "## Pipeline throughput",
        "",
        f"`{command}` on {machine_line()}, "
        f"{args.frames} frames of `{Path(args.source).name}`, detector `{detector.name}`, anonymizer "
        f"`{anonymizer.kind}`, median of {args.repeats} runs.",
        "",
        "| stage | frames/s |",
        "| --- | --- |",
        f"| decode only | {fps['decode_only']} |",
        f"| decode + detect | {fps['detect_only']} |",
        f"| full pipeline (decode, detect, track, anonymize, encode, logs) | {fps['full_pipeline']} |",
        f"| full / detect-only (goal ≥ 0.85) | {ratio} {'✅' if ratio >= 0.85 else '❌'} |",
    ]
    publish_table("pipeline_fps", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
