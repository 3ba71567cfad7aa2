"""What the pipeline knows about one camera: what to run (:class:`CameraSpec`) and how it is doing
(:class:`CameraState`, the counters its summary and the metrics endpoint read)."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from anonymizer.redactor import Redactor
from anonymizer.sidecar import SidecarWriter
from stream.jsonlog import JsonLinesWriter
from stream.reader import SourceReader
from stream.regions import CameraRegions
from stream.sinks import VideoSink
from stream.sources import FrameSource

LATENCY_MEMORY = 20_000  # recent capture-to-output latencies per camera, for the summary's percentiles

Embedder = Callable[[Sequence[np.ndarray]], np.ndarray]
# (added specs, removed camera ids, changed specs), from a camera-file watcher
CameraChanges = tuple[Sequence["CameraSpec"], Sequence[str], Sequence["CameraSpec"]]


def latency_percentiles(latencies: Sequence[float]) -> dict[str, float] | None:
    """Capture-to-output latency of the recent frames, in ms (p50, p95, max); None without frames."""
    if not latencies:
        return None
    ms = np.asarray(latencies, dtype=np.float64) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 1),
        "p95": round(float(np.percentile(ms, 95)), 1),
        "max": round(float(ms.max()), 1),
        "frames": int(ms.size),
    }


@dataclass
class CameraSpec:
    """One camera to run. ``cfg``: its own config (per-camera overrides of a camera file), else the
    pipeline's; ``stem``: the name of its output files (the id, or ``id.N`` for the N-th restart of a
    camera whose entry changed, so a restart never overwrites what the previous run wrote)."""

    camera_id: str
    source: str
    cfg: Any = None
    fps_cap: float | None = None
    zones: tuple = ()
    stem: str = ""

    def __post_init__(self) -> None:
        self.stem = self.stem or self.camera_id


@dataclass
class CameraState:
    spec: CameraSpec
    source: FrameSource
    reader: SourceReader
    regions: CameraRegions
    sink: VideoSink
    observations: JsonLinesWriter
    progress: tqdm | None
    sidecar: SidecarWriter | None = None
    extra_sinks: list = field(default_factory=list)  # OUTPUT.SINKS besides the video (stream.outputs), e.g. restream
    redactor: Redactor | None = None  # the shared one with this camera's margin and privacy floor
    started: float = field(default_factory=time.perf_counter)
    frames: int = 0  # redacted and handed to the sink
    person_observations: int = 0
    anonymized_observations: int = 0
    fallback_masks: int = 0
    held_masks: int = 0
    floor_masks: int = 0
    low_score_masks: int = 0
    motion_masks: int = 0
    lookahead_masks: int = 0
    masked_frames: int = 0
    published: int = 0
    error: str | None = None
    ending: Any = None  # stream.reader.EOS or the reader's exception, acted on after the frames before it
    done: bool = False
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_MEMORY))  # capture-to-output, s
    zone_boxes: list = field(default_factory=list)  # static privacy zones in pixels
    stopped_early: bool = False  # ended by a stop request (SIGTERM/SIGINT), not by its source
    gaps_noted: int = 0  # reconnect gaps of a live source already in the observations log
    logged: Counter = field(default_factory=Counter)  # the counts of the records written to the log
