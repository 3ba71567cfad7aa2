"""A camera's summary: what it did, what its files really hold, and where it is written.

After a camera's outputs are closed, :func:`reconcile` counts the frames really in its video (and
cuts the observations log to match when the encoder died), :func:`camera_summary` gathers the
counts, and :func:`write_summary` writes it durably, or logs it whole when it cannot be written.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from stream.camera_state import CameraSpec, CameraState, latency_percentiles
from stream.jsonlog import truncate_jsonl_after, write_json
from stream.log_records import TALLIED, tally_records
from stream.mp4_frames import count_mp4_video_frames, cut_torn_fragment
from stream.segments import SegmentedVideoSink, reconcile_segment_files
from stream.sink_errors import describe_os_error

log = logging.getLogger("stream.pipeline")  # the pipeline's own lines, as before the split


def summary_skeleton(spec: CameraSpec, detector_name: str, anonymizer: Any) -> dict[str, Any]:
    """A camera's summary before anything ran: every key, zero counts (a camera that never started has it)."""
    return {
        "camera_id": spec.camera_id,
        "source": spec.source,
        "frames": 0,
        "frames_processed": 0,
        "frames_verified": False,
        "observations_truncated": 0,
        "fps_in": None,
        "width": None,
        "height": None,
        "person_observations": 0,
        "anonymized_observations": 0,
        "fallback_masks": 0,
        "held_masks": 0,
        "floor_masks": 0,
        "low_score_masks": 0,
        "motion_masks": 0,
        "lookahead_masks": 0,
        "masked_frames": 0,
        "processing_fps": 0.0,
        "reconnects": 0,
        "gaps": [],
        "unreadable_images": [],
        "latency_ms": None,
        "stopped_early": False,
        "segments": [],
        "detector": detector_name,
        "anonymizer": getattr(anonymizer, "kind", "?"),
        "anonymizer_fingerprint": getattr(anonymizer, "fingerprint", ""),
        "error": None,
    }


def camera_summary(
    cam: CameraState, skeleton: dict[str, Any], frames: int, verified: bool, truncated: int
) -> dict[str, Any]:
    """The summary of a finished camera (``skeleton``: :func:`summary_skeleton`)."""
    elapsed = max(time.perf_counter() - cam.started, 1e-9)
    summary = (
        skeleton
        | {
            "frames": frames,
            "frames_processed": cam.frames,
            "frames_verified": verified,
            "fps_in": cam.source.fps,
            "width": cam.source.width,
            "height": cam.source.height,
            "person_observations": cam.person_observations,
            "anonymized_observations": cam.anonymized_observations,
            "fallback_masks": cam.fallback_masks,
            "held_masks": cam.held_masks,
            "floor_masks": cam.floor_masks,
            "low_score_masks": cam.low_score_masks,
            "motion_masks": cam.motion_masks,
            "lookahead_masks": cam.lookahead_masks,
            "masked_frames": cam.masked_frames,
            "processing_fps": round(cam.frames / elapsed, 3),
            "dropped_frames": cam.reader.dropped,
            "published": cam.published,
            "observations_truncated": truncated,
            "video": None if isinstance(cam.sink, SegmentedVideoSink) else str(cam.sink.path),
            "segments": cam.sink.summary() if isinstance(cam.sink, SegmentedVideoSink) else [],
            "reconnects": getattr(cam.source, "reconnects", 0),
            "gaps": list(getattr(cam.source, "gaps", [])),
            "unreadable_images": list(getattr(cam.source, "unreadable", [])),
            "latency_ms": latency_percentiles(cam.latencies),
            "stopped_early": cam.stopped_early,
            "error": cam.error,
        }
        | cam.sink.timing_summary()
    )
    return summary


def log_done(cam: CameraState, frames: int, summary: dict[str, Any]) -> None:
    """The camera's last line: its counts, and its error (after the summary was written: that may add one)."""
    log.info(
        "[%s] done: %d frames, %d person observations, %d protected, %d masked solid, %d solid by the "
        "privacy floor; also masked: %d held, %d low-score, %d motion, %d look-ahead regions, %d whole "
        "frames%s",
        cam.spec.camera_id,
        frames,
        cam.person_observations,
        cam.anonymized_observations,
        cam.fallback_masks,
        cam.floor_masks,
        cam.held_masks,
        cam.low_score_masks,
        cam.motion_masks,
        cam.lookahead_masks,
        cam.masked_frames,
        f", ERROR: {summary['error']}" if summary["error"] else "",
    )


def reconcile(cam: CameraState) -> tuple[int, bool, int]:
    """After closing: the frames really in the file, and, if fewer than processed, the observations
    log cut to match (and the camera in error: a video short of its frames is never a clean run).

    Returns (frames in the file, whether that was counted from the file, observations removed).
    The file's fragments are counted, not decoded, so this stays fast on long videos; after an
    encoder failure a torn last fragment is cut off so that every decoder finds exactly that many.
    When the file cannot be read (e.g. the output is a device, or OpenCV wrote it), the frames the
    encoder accepted are reported.
    """
    if isinstance(cam.sink, SegmentedVideoSink):  # per segment file, the log cut per segment
        frames, verified, removed, problem = reconcile_segment_files(
            cam.sink, cam.observations.path, f"[{cam.spec.camera_id}]"
        )
        cam.error = cam.error or problem
        follow_log(cam, removed)
        return frames, verified, len(removed)
    counted: int | None = None
    if cam.sink.fragmented:
        try:
            counted = cut_torn_fragment(cam.sink.path) if cam.sink.failed else count_mp4_video_frames(cam.sink.path)
        except OSError as exc:
            log.error("[%s] could not read back %s: %s", cam.spec.camera_id, cam.sink.path, exc)
    verified = counted is not None
    handed = cam.sink.output_frames  # output frames handed to the encoder, a live camera's repeats included
    frames = min(handed, counted if counted is not None else cam.sink.frames_written)
    if frames >= handed:
        return frames, verified, 0
    if cam.error is None:
        cam.error = f"[{cam.spec.camera_id}] {cam.sink.path} holds {frames} of the {handed} frames written"
    last_index = frames - 1  # the last output frame in the file; every observation names its output frame
    try:
        removed = truncate_jsonl_after(cam.observations.path, last_index, key="output_frame")
    except OSError as exc:
        log.error(
            "[%s] could not cut %s after output frame %d: %s",
            cam.spec.camera_id,
            cam.observations.path,
            last_index,
            describe_os_error(exc),
        )
        return frames, verified, 0
    follow_log(cam, removed)
    log.error(
        "[%s] the video holds %d of the %d output frames written%s; %d observations after output frame %d removed",
        cam.spec.camera_id,
        frames,
        handed,
        "" if verified else " (not verifiable in the file)",
        len(removed),
        last_index,
    )
    return frames, verified, len(removed)


def follow_log(cam: CameraState, removed: list[dict[str, Any]]) -> None:
    """The summary's counts follow the log: what the writer thread logged (frames queued to an encoder
    that died have no records, though they were counted when redacted), less what was cut."""
    logged = cam.logged - tally_records(removed)
    for name in TALLIED:
        setattr(cam, name, logged[name])


def write_summary(output_dir: Path, camera_id: str, summary: dict[str, Any]) -> None:
    """Write the summary (the caller keeps it); a summary that cannot be written (full disk) is logged whole
    at ERROR, as one JSON line, and its camera's error says why, so the run still ends with status 1."""
    path = Path(output_dir) / f"{camera_id}.summary.json"
    try:
        write_json(path, summary)
    except OSError as exc:
        problem = f"cannot write {path}: {describe_os_error(exc)}"
        summary["error"] = f"{summary['error']}; {problem}" if summary.get("error") else f"[{camera_id}] {problem}"
        log.error("[%s] %s; the summary follows as one JSON line:", camera_id, problem)
        log.error("%s", json.dumps({"summary": summary}, separators=(",", ":"), default=str))
