"""The pipeline runner: sources → batched detection → per-camera regions → redaction → outputs.

Threads: one reader per camera (decoding releases the GIL), the main thread for detection,
tracking and redaction, one encoder process per camera fed by a writer thread. Cameras are
independent: whatever goes wrong for one camera, at set-up (source unopenable, output path
blocked, encoder not starting, motion-net priming failing) or later (a dead camera, a corrupt file,
a dead encoder, a full disk), ends that camera with an error in its summary, and the others carry
on. Nothing raw leaves: frames reach a sink only as ``RedactedFrame`` objects, observations carry
boxes but no pixels, and Kafka gets embeddings of protected crops only.

What the outputs promise, crash or not: a frame's observations are written only once the frame
went to the encoder, so after a ``kill -9`` the log is at most the encoder's last fragment ahead of
the video (``OUTPUT.FRAGMENT_S``). When the encoder dies while the pipeline lives, the frames really
in the file are counted after closing it (``frames``; ``frames_processed`` is what was redacted) and
the observations log is cut after the last of them (``observations_truncated``), with the counts of
the summary following the log: no observation claims a frame the video does not hold. Feature
messages already published for the lost frames cannot be recalled. A summary that cannot be
written (full disk) is logged at ERROR as one JSON line and kept in what ``run()`` returns.
``OUTPUT.SEGMENT_S`` > 0 writes rolling segment files instead of one video (``stream.segments``);
each camera's redactor has its own margin and privacy floor (camera-file overrides) but shares the
anonymizer and its worker with the others.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from anonymizer.base import CropAnonymizer
from anonymizer.privacy_floor import PrivacyFloor
from anonymizer.redactor import Redactor
from anonymizer.sidecar import SidecarWriter
from detectors.base import Detections, Detector
from detectors.motion import MotionSafetyNet
from detectors.tracker import CameraTracker, Observation
from stream.cameras import zones_to_boxes
from stream.metrics import CameraSnapshot, PipelineMetrics
from stream.reader import EOS as _EOS
from stream.reader import SourceReader
from stream.regions import CameraRegions, PlannedFrame
from stream.restream import RestreamSink, restream_url
from stream.segments import (
    TALLIED,
    SegmentedVideoSink,
    gap_records,
    open_video_sink,
    placed_records,
    reconcile_segment_files,
    tally_records,
)
from stream.sinks import (
    JsonLinesWriter,
    SinkError,
    VideoSink,
    count_mp4_video_frames,
    cut_torn_fragment,
    describe_os_error,
    truncate_jsonl_after,
    write_json,
)
from stream.sources import Frame, FrameSource, SourceError, open_source

log = logging.getLogger(__name__)
LATENCY_MEMORY = 20_000  # recent capture-to-output latencies per camera, for the summary's percentiles

Embedder = Callable[[Sequence[np.ndarray]], np.ndarray]
CameraChanges = tuple  # (added specs, removed camera ids, changed specs), from a camera-file watcher


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
    restream: RestreamSink | None = None
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
    ending: Any = None  # _EOS or the reader's exception, acted on after the frames before it
    done: bool = False
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_MEMORY))  # capture-to-output, s
    zone_boxes: list = field(default_factory=list)  # static privacy zones in pixels
    stopped_early: bool = False  # ended by a stop request (SIGTERM/SIGINT), not by its source
    gaps_noted: int = 0  # reconnect gaps of a live source already in the observations log
    logged: Counter = field(default_factory=Counter)  # the counts of the records written to the log


class Pipeline:
    """Runs several cameras in one process. ``run()`` returns one summary dict per camera."""

    def __init__(
        self,
        cfg,
        cameras: Sequence[CameraSpec],
        output_dir: Path,
        detector: Detector,
        anonymizer: CropAnonymizer,
        max_frames: int | None = None,
        publisher: Any = None,
        embedder: Embedder | None = None,
        reid_fingerprint: str = "",
        stop_event: threading.Event | None = None,
        camera_changes: Callable[[], CameraChanges | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.cameras = list(cameras)
        self.output_dir = Path(output_dir)
        self.detector = detector
        self.anonymizer = anonymizer
        self.max_frames = max_frames
        self.publisher = publisher
        self.embedder = embedder
        self.reid_fingerprint = reid_fingerprint
        if publisher is not None and embedder is None:
            raise ValueError("publishing features needs a Re-ID embedder")
        floor = PrivacyFloor(cfg.PRIVACY.FLOOR_SSIM, cfg.PRIVACY.FLOOR_MIN_CHANGED)
        self.redactor = Redactor(
            anonymizer,
            cfg.ANONYMIZER.MARGIN,
            cfg.ANONYMIZER.TIMEOUT_S,
            cfg.ANONYMIZER.FILL,
            keep_native=cfg.ANONYMIZER.SIDECAR,
            floor=floor,
        )
        self._wakeup = threading.Event()
        self._stop_event = stop_event or threading.Event()
        self.summaries: dict[str, dict[str, Any]] = {}
        self.camera_changes = camera_changes
        self.metrics: PipelineMetrics | None = None
        self._states: list[CameraState] = []
        self._order: list[str] = []  # output stems in start order, for the summaries returned
        self._generations: dict[str, int] = {}

    # ---- set-up -------------------------------------------------------------------------------
    def _open_camera(self, spec: CameraSpec, position: int) -> CameraState | None:
        """Everything one camera needs; whatever fails here ends this camera only (error in its summary)."""
        cfg = spec.cfg or self.cfg  # the camera's own overrides, if a camera file gave any
        source: FrameSource | None = None
        opened: list[Any] = []  # outputs to close again if a later step fails
        out = self.output_dir
        video = out / f"{spec.stem}.mp4"
        made_video = False
        try:
            segmented = float(cfg.OUTPUT.SEGMENT_S) > 0  # <stem>.<UTC start>.mp4 files instead of <stem>.mp4
            redactor = self.redactor.with_settings(  # per-camera overrides of a camera file take effect here
                margin=float(cfg.ANONYMIZER.MARGIN),
                floor=PrivacyFloor(cfg.PRIVACY.FLOOR_SSIM, cfg.PRIVACY.FLOOR_MIN_CHANGED),
            )
            source = open_source(spec.source, spec.camera_id, cfg.SOURCE)
            made_video = not segmented and not video.exists() and not video.is_symlink()
            self._check_output(video, create=not segmented)
            # priming reads ahead (seconds): before any output is started, so a failure leaves none half-made
            motion = self._motion_net(spec, source)
            observations = JsonLinesWriter(out / f"{spec.stem}.observations.jsonl")
            opened.append(observations)
            sidecar = SidecarWriter(out / f"{spec.stem}.crops") if cfg.ANONYMIZER.SIDECAR else None
            if sidecar is not None:
                opened.append(sidecar)
            # a capped live camera is stored at its cap: the source's rate would repeat each picture
            out_fps = min(source.fps, spec.fps_cap) if spec.fps_cap and source.is_live else source.fps
            sink = open_video_sink(
                cfg.OUTPUT,
                out,
                spec.stem,
                source.width,
                source.height,
                out_fps,
                live=source.is_live,
                audio_from=source.audio_path,
                audio_codec=source.media.audio_codec,
                on_segment=lambda seg: observations.write_frame([seg.record()]),
            )
            opened.append(sink)
            restream = None
            if cfg.OUTPUT.RESTREAM:  # redacted frames only, like the file; its outages never stop the camera
                restream = RestreamSink(
                    restream_url(cfg.OUTPUT.RESTREAM, spec.camera_id),
                    source.width,
                    source.height,
                    source.fps,
                    spec.camera_id,
                )
        except Exception as exc:  # SourceError, SinkError, OSError, a failing motion net: this camera only
            message = str(exc) if isinstance(exc, SourceError) else f"[{spec.camera_id}] {self._setup_error(exc)}"
            log.error("%s", message)
            for item in opened:
                try:
                    item.close()
                except Exception:  # already failing: the first error is the one reported
                    pass
            if source is not None:
                source.close()
            if made_video and video.is_file() and video.stat().st_size == 0:
                video.unlink()  # the empty file the path check made: a camera that never started leaves no video
            self._write_summary(spec.stem, self._summary_skeleton(spec) | {"error": message})
            return None
        total = source.expected_frames
        if total is not None and self.max_frames is not None:
            total = min(total, self.max_frames)
        progress = tqdm(
            total=total,
            desc=spec.camera_id,
            unit="frame",
            position=position,
            leave=True,
            disable=not cfg.LOG.PROGRESS,
            dynamic_ncols=True,
        )
        reader = SourceReader(
            source, cfg.SOURCE.QUEUE_SIZE, cfg.SOURCE.LIVE_DROP_OLD, self.max_frames, self._wakeup, spec.fps_cap
        )
        log.info(
            "[%s] %s: %dx%d @ %.3f fps%s%s",
            spec.camera_id,
            spec.source,
            source.width,
            source.height,
            source.fps,
            f", {source.expected_frames} frames" if source.expected_frames else "",
            ", live" if source.is_live else "",
        )
        tracker = CameraTracker(cfg.TRACKER.KIND, cfg.TRACKER.HOLD_FRAMES, source.fps)
        lookahead = int(cfg.PRIVACY.LOOKAHEAD_FRAMES)
        if lookahead and source.is_live:
            log.info(
                "[%s] live source: PRIVACY.LOOKAHEAD_FRAMES ignored (a live camera is never delayed)", spec.camera_id
            )
            lookahead = 0
        regions = CameraRegions(tracker, cfg.DETECTOR.CONF, cfg.ANONYMIZER.MARGIN, motion, lookahead)
        state = CameraState(
            spec, source, reader, regions, sink, observations, progress, sidecar, restream, redactor=redactor
        )
        state.zone_boxes = zones_to_boxes(spec.zones, source.width, source.height)
        reader.start()
        return state

    @staticmethod
    def _check_output(video: Path, create: bool = True) -> None:
        """Refuse a blocked video path before the encoder starts, with the reason in words.

        ffmpeg would fail on it too, but only after the camera's set-up, and with a terser message.
        A stale summary temp file of an earlier crash is removed here as well. (Segments are named
        by their start time, known at their first frame: ``create=False`` checks nothing but that.)
        """
        stale = video.with_name(video.stem + ".summary.json.tmp")
        if not create:
            stale.unlink(missing_ok=True)
            return
        if video.is_dir():
            raise SinkError(f"cannot write {video}: the output path is a directory")
        try:
            with open(video, "ab"):
                pass
        except OSError as exc:
            raise SinkError(f"cannot write {video}: {describe_os_error(exc)}") from exc
        stale.unlink(missing_ok=True)

    @staticmethod
    def _setup_error(exc: BaseException) -> str:
        if isinstance(exc, SinkError):
            return str(exc)
        if isinstance(exc, OSError):
            where = f"cannot write {exc.filename}: " if exc.filename else ""
            return where + describe_os_error(exc)
        return f"set-up failed: {exc!r}"

    def _motion_net(self, spec: CameraSpec, source: FrameSource) -> MotionSafetyNet | None:
        """The camera's motion safety net; for files, primed on frames read ahead by a second decoder so
        that frame 0 already has a background model (live cameras warm up on full-frame masks).

        A decoding error while reading ahead is left to the reader, which meets the same error for the
        camera itself; anything else raises and ends the camera (an unprimed net would vouch for frames
        it knows nothing about)."""
        cfg = spec.cfg or self.cfg  # the camera's own overrides, if a camera file gave any
        net = MotionSafetyNet.from_config(cfg.PRIVACY, spec.camera_id)
        if not net.enabled:
            return None
        if not source.is_live:
            primer = None
            try:
                primer = open_source(spec.source, spec.camera_id, cfg.SOURCE)
                want = int(cfg.PRIVACY.MOTION_WARMUP_FRAMES)
                images = (
                    f.image for _, f in zip(range(want), primer.frames(), strict=False)
                )  # one frame in memory at a time
                used = net.prime(images)
                if used < want and not net.active:  # the whole file is shorter than the warm-up
                    net.finish_warmup()
            except SourceError as exc:  # the reader reports the same error for the camera itself
                log.warning("[%s] could not read ahead to prime the motion net: %s", spec.camera_id, exc)
            finally:
                if primer is not None:
                    primer.close()
        return net

    def _summary_skeleton(self, spec: CameraSpec) -> dict[str, Any]:
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
            "detector": self.detector.name,
            "anonymizer": getattr(self.anonymizer, "kind", "?"),
            "anonymizer_fingerprint": getattr(self.anonymizer, "fingerprint", ""),
            "error": None,
        }

    # ---- per-frame work ------------------------------------------------------------------------
    def _process(self, cam: CameraState, frame: Frame, detections: Detections) -> None:
        for planned in cam.regions.add(frame, detections):
            self._emit(cam, planned)
            self._observe_latency(cam, planned.frame)

    def _emit(self, cam: CameraState, planned: PlannedFrame) -> None:
        frame, observations = planned.frame, planned.observations
        boxes = [o.box for o in observations]
        redactor = cam.redactor or self.redactor
        result = redactor.mask_all(frame.image, boxes) if planned.mask_frame else redactor.redact(frame.image, boxes)
        native = result.native or [None] * len(observations)
        records = [
            {
                "frame_index": frame.index,
                "timestamp_ms": frame.timestamp_ms,
                "track_id": obs.track_id,
                "box": [round(v, 2) for v in obs.box],
                "score": round(obs.score, 4),
                "region": list(region) if region else None,
                "held": obs.held,
                "kind": obs.kind,
                "protected": prot is not None,
            }
            for obs, region, prot in zip(observations, result.regions, result.protected, strict=True)
        ]
        if cam.source.is_live:  # a reconnect gap before this frame: noted where the video resumes
            gaps, cam.gaps_noted = gap_records(
                getattr(cam.source, "gaps", ()), cam.gaps_noted, frame.index, frame.timestamp_ms
            )
            records = gaps + records
        # the observations are written by the sink's thread once the frame is with the encoder, never before,
        # with the output frame its picture landed on (live: placed by capture time, maybe repeated after)
        cam.sink.write(
            result.frame,
            on_written=self._observations_writer(cam, records) if records else None,
            timestamp_ms=frame.timestamp_ms,
            frame_index=frame.index,
        )
        if cam.restream is not None:  # the same redacted picture; a slow or absent target drops, never blocks
            cam.restream.write(result.frame)
        cam.frames += 1
        cam.masked_frames += planned.mask_frame
        cam.fallback_masks += result.fallback_masks
        cam.floor_masks += result.floor_masks
        publishable: list[tuple[Observation, np.ndarray]] = []
        for obs, region, prot, nat in zip(observations, result.regions, result.protected, native, strict=True):
            self._count(cam, obs, prot is not None)
            if cam.sidecar is not None and prot is not None:  # protected pixels only, losslessly
                self._sidecar_write(cam, frame.index, obs.track_id, region, prot, "region")
                if nat is not None:
                    self._sidecar_write(cam, frame.index, obs.track_id, region, nat, "native")
            if prot is not None and obs.is_person and obs.track_id >= 0:
                publishable.append((obs, prot))
        if cam.sidecar is not None:
            self._sidecar_write(cam)
        if self.publisher is not None and publishable:
            self._publish(cam, frame, publishable)

    @staticmethod
    def _observations_writer(cam: CameraState, records: list[dict[str, Any]]) -> Callable[[int | None, int], None]:
        """The sink's callback for one frame: its records, told which output frame shows them.

        ``output_frame`` is what recovery pairs by (a live frame's index is not its place in the
        video once frames were dropped or repeated); ``output_repeats`` more output frames show the
        same picture; ``output_frame: null``: the frame was processed but left out of the video.
        Segmented output adds ``segment`` (the file), its output frames counted in that file, and
        ``continued`` on the records of a picture whose repeats run on into the next segment."""
        writer = cam.observations

        def written(
            output_frame: int | None, repeats: int, segment: str | None = None, continued: bool = False
        ) -> None:
            writer.write_frame(placed_records(records, output_frame, repeats, segment, continued))
            if not continued:  # (the writer thread; read once it has ended)
                cam.logged.update(tally_records(records))

        return written

    @staticmethod
    def _sidecar_write(cam: CameraState, *record: Any) -> None:
        """One sidecar record (or, without one, a flush); a write error (full disk) ends the camera."""
        assert cam.sidecar is not None
        try:
            if record:
                cam.sidecar.write(*record[:4], kind=record[4])
            else:
                cam.sidecar.flush()
        except OSError as exc:
            raise SinkError(f"cannot write {cam.sidecar.path}: {describe_os_error(exc)}") from exc

    @staticmethod
    def _count(cam: CameraState, obs: Observation, protected: bool) -> None:
        if obs.is_person:
            cam.person_observations += 1
            cam.anonymized_observations += protected
        elif obs.kind == "held":
            cam.held_masks += 1
        elif obs.kind == "low_score":
            cam.low_score_masks += 1
        elif obs.kind == "motion":
            cam.motion_masks += 1
        elif obs.kind == "lookahead":
            cam.lookahead_masks += 1

    def _publish(self, cam: CameraState, frame: Frame, items: list[tuple[Observation, np.ndarray]]) -> None:
        embeddings = self.embedder([prot for _, prot in items])  # protected crops only, never raw
        for (obs, _), emb in zip(items, embeddings, strict=True):
            sent = self.publisher.publish(
                camera_id=cam.spec.camera_id,
                frame_index=frame.index,
                timestamp_ms=frame.timestamp_ms,
                track_id=obs.track_id,
                box=tuple(obs.box),
                score=obs.score,
                embedding=emb,
                reid_fingerprint=self.reid_fingerprint,
                anonymizer_fingerprint=self.anonymizer.fingerprint,
                anonymization=self.anonymizer.kind,
            )
            cam.published += bool(sent)

    # ---- main loop -----------------------------------------------------------------------------
    def _finish(self, cam: CameraState, error: str | None = None, flush: bool = True) -> None:
        """Close the camera's outputs and write its summary; never raises, so one camera cannot stop the rest."""
        cam.done = True
        cam.reader.stop()
        if cam.source.is_live:  # a reconnect back-off in the reader's thread ends now, not after its wait
            cam.source.close()
        if flush:  # frames held back for look-ahead are written too (redacted like every other)
            try:
                for planned in cam.regions.flush():
                    self._emit(cam, planned)
                    self._observe_latency(cam, planned.frame)
            except SinkError as exc:
                error = error or f"[{cam.spec.camera_id}] {exc}"
            except Exception as exc:  # this camera only
                log.exception("[%s] flushing the look-ahead frames failed", cam.spec.camera_id)
                error = error or f"[{cam.spec.camera_id}] {exc!r}"
        if error:
            cam.error = error
            log.error("%s", error)
        try:
            cam.sink.close()
        except SinkError as exc:
            cam.error = cam.error or f"[{cam.spec.camera_id}] {exc}"
            log.error("[%s] %s", cam.spec.camera_id, exc)
        if cam.restream is not None:
            cam.restream.close()
        for name, closer in (
            ("observations", cam.observations.close),
            ("sidecar", cam.sidecar.close if cam.sidecar is not None else None),
        ):
            if closer is None:
                continue
            try:
                closer()
            except OSError as exc:
                cam.error = (
                    cam.error or f"[{cam.spec.camera_id}] cannot write {exc.filename or name}: {describe_os_error(exc)}"
                )
                log.error("%s", cam.error)
        if cam.progress is not None:
            cam.progress.close()
        frames, verified, truncated = self._reconcile(cam)
        elapsed = max(time.perf_counter() - cam.started, 1e-9)
        summary = (
            self._summary_skeleton(cam.spec)
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
        self._write_summary(cam.spec.stem, summary)
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

    def _reconcile(self, cam: CameraState) -> tuple[int, bool, int]:
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
            self._follow_log(cam, removed)
            return frames, verified, len(removed)
        counted: int | None = None
        if cam.sink.fragmented:
            try:
                counted = cut_torn_fragment(cam.sink.path) if cam.sink.failed else count_mp4_video_frames(cam.sink.path)
            except OSError as exc:
                log.error("[%s] could not read back %s: %s", cam.spec.camera_id, cam.sink.path, exc)
        verified = counted is not None
        handed = cam.sink.output_frames  # output frames handed to the encoder, a live camera's repeats included
        frames = min(handed, counted if verified else cam.sink.frames_written)
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
        self._follow_log(cam, removed)
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

    @staticmethod
    def _follow_log(cam: CameraState, removed: list[dict[str, Any]]) -> None:
        """The summary's counts follow the log: what the writer thread logged (frames queued to an encoder
        that died have no records, though they were counted when redacted), less what was cut."""
        logged = cam.logged - tally_records(removed)
        for name in TALLIED:
            setattr(cam, name, logged[name])

    def _write_summary(self, camera_id: str, summary: dict[str, Any]) -> None:
        """Keep the summary and write it; a summary that cannot be written (full disk) is logged whole
        at ERROR, as one JSON line, and its camera's error says why, so the run still ends with status 1."""
        path = self.output_dir / f"{camera_id}.summary.json"
        try:
            write_json(path, summary)
        except OSError as exc:
            problem = f"cannot write {path}: {describe_os_error(exc)}"
            summary["error"] = f"{summary['error']}; {problem}" if summary.get("error") else f"[{camera_id}] {problem}"
            log.error("[%s] %s; the summary follows as one JSON line:", camera_id, problem)
            log.error("%s", json.dumps({"summary": summary}, separators=(",", ":"), default=str))
        self.summaries[camera_id] = summary

    def _gather(self, active: list[CameraState], limit: int) -> list[tuple[CameraState, Frame]]:
        batch: list[tuple[CameraState, Frame]] = []
        progress = True
        while len(batch) < limit and progress:
            progress = False
            for cam in active:
                if cam.done or cam.ending is not None or len(batch) >= limit:
                    continue
                try:
                    item = cam.reader.queue.get_nowait()
                except queue.Empty:
                    continue
                progress = True
                if item is _EOS or isinstance(item, BaseException):
                    cam.ending = item
                else:
                    batch.append((cam, item))
        return batch

    def _finish_ended(self, states: list[CameraState]) -> None:
        for cam in states:
            if not cam.done and cam.ending is not None:
                self._finish(cam, None if cam.ending is _EOS else str(cam.ending))

    # ---- cameras coming and going ----------------------------------------------------------------
    def _start(self, spec: CameraSpec) -> None:
        state = self._open_camera(spec, len(self._states))
        if state is not None:
            self._states.append(state)
        self._order.append(spec.stem)

    def _apply_camera_changes(self) -> None:
        """Cameras added to, removed from or changed in the camera file since the last poll; the
        others are not disturbed. A changed camera is finished and started again under a new stem."""
        if self.camera_changes is None:
            return
        changes = self.camera_changes()
        if not changes:
            return
        added, removed, changed = changes
        running = {c.spec.camera_id: c for c in self._states if not c.done}
        for camera_id in list(removed) + [c.camera_id for c in changed]:
            cam = running.get(camera_id)
            if cam is not None:
                log.info("[%s] removed from the camera file: finishing it", camera_id)
                self._finish(cam, None)
        for spec in list(changed) + list(added):
            generation = self._generations.get(spec.camera_id, -1) + 1
            self._generations[spec.camera_id] = generation
            spec.stem = spec.camera_id if generation == 0 else f"{spec.camera_id}.{generation}"
            log.info(
                "[%s] %s the camera file: starting it (outputs %s.*)",
                spec.camera_id,
                "changed in" if spec in changed else "added to",
                spec.stem,
            )
            self._start(spec)

    def request_stop(self, reason: str = "stop requested") -> None:
        """From any thread (a signal handler): finish the frames in hand, close every output, return."""
        if not self._stop_event.is_set():
            log.warning("%s: finishing the frames in hand and closing every output", reason)
        self._stop_event.set()
        self._wakeup.set()

    # ---- what operators see while it runs -------------------------------------------------------
    def camera_snapshots(self) -> dict[str, CameraSnapshot]:
        """Per-camera counters for the metrics endpoint, read from the state the summaries use."""
        out: dict[str, CameraSnapshot] = {}
        for cam in list(self._states):
            if cam.done:
                state = "error" if cam.error else "finished"
            else:
                state = getattr(cam.source, "state", "streaming") if cam.source.is_live else "streaming"
            out[cam.spec.stem] = CameraSnapshot(
                frames_in=cam.reader.frames_read,
                frames_processed=cam.frames,
                frames_dropped=cam.reader.dropped,
                reconnects=getattr(cam.source, "reconnects", 0),
                queue_depth=cam.reader.queue.qsize(),
                state=state,
                regions={
                    "protected": cam.anonymized_observations,
                    "solid": cam.fallback_masks,
                    "floor": cam.floor_masks,
                    "held": cam.held_masks,
                    "low_score": cam.low_score_masks,
                    "motion": cam.motion_masks,
                    "lookahead": cam.lookahead_masks,
                },
            )
        for stem, summary in self.summaries.items():  # cameras that never started
            out.setdefault(stem, CameraSnapshot(state="error" if summary.get("error") else "finished"))
        return out

    def _observe_latency(self, cam: CameraState, frame: Frame) -> None:
        seconds = time.monotonic() - frame.arrived
        cam.latencies.append(seconds)
        if self.metrics is not None:
            self.metrics.observe_latency(cam.spec.stem, seconds)

    @staticmethod
    def _mask_zones(cam: CameraState, frame: Frame, fill: Sequence[int]) -> None:
        """Static privacy zones are filled before the detector sees the frame: always masked, solid."""
        for x1, y1, x2, y2 in cam.zone_boxes:
            frame.image[int(y1) : int(y2), int(x1) : int(x2)] = fill

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict[str, dict[str, Any]]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.cameras:
            self._start(spec)
        limit = max(1, int(self.cfg.DETECTOR.BATCH))
        fill = tuple(int(v) for v in self.cfg.ANONYMIZER.FILL)
        try:
            while True:
                if self._stop_event.is_set():
                    for cam in self._states:
                        if not cam.done:
                            cam.stopped_early = True
                            self._finish(cam, None)
                    break
                self._apply_camera_changes()
                active = [s for s in self._states if not s.done]
                if not active:
                    break
                self._wakeup.clear()
                batch = self._gather(active, limit)
                if not batch:
                    self._finish_ended(self._states)
                    self._wakeup.wait(0.05)
                    continue
                for cam, frame in batch:
                    self._mask_zones(cam, frame, fill)
                detections = self.detector.detect([f.image for _, f in batch])
                for (cam, frame), dets in zip(batch, detections, strict=True):
                    if cam.done:
                        continue
                    try:
                        self._process(cam, frame, dets)
                    except SinkError as exc:
                        self._finish(cam, f"[{cam.spec.camera_id}] {exc}", flush=False)
                        continue
                    except Exception as exc:  # a fault of this camera ends this camera only
                        log.exception("[%s] processing frame %d failed", cam.spec.camera_id, frame.index)
                        self._finish(
                            cam, f"[{cam.spec.camera_id}] processing frame {frame.index} failed: {exc!r}", flush=False
                        )
                        continue
                    if cam.progress is not None:
                        cam.progress.update(1)
                self._finish_ended(self._states)
        except KeyboardInterrupt:
            log.warning("interrupted: closing outputs (everything written so far stays)")
            raise
        finally:
            for cam in self._states:
                if not cam.done:
                    self._finish(cam, None)
            self.redactor.close()
            self._join_readers()
        return {stem: self.summaries[stem] for stem in self._order if stem in self.summaries}

    def _join_readers(self, timeout_s: float = 12.0) -> None:
        """Wait for the reader threads to leave their decoders. A daemon thread still inside OpenCV's
        FFmpeg capture when the interpreter exits aborts the process ("terminate called without an
        active exception"); a live read ends with the next frame or the read timeout."""
        deadline = time.monotonic() + timeout_s
        for cam in self._states:
            cam.reader.join(max(0.0, deadline - time.monotonic()))
            if cam.reader.is_alive():
                log.warning("[%s] its reader is still inside the decoder after %.0f s", cam.spec.camera_id, timeout_s)
