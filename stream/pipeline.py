"""The pipeline runner: sources → batched detection → per-camera regions → redaction → outputs.

Threads: one reader per camera (decoding releases the GIL), the main thread for detection,
tracking and redaction, one encoder process per camera fed by a writer thread. Cameras are
independent: a dead camera, a corrupt file or a full disk ends that camera with an error in its
summary, and the others carry on. Nothing raw leaves: frames reach a sink only as
``RedactedFrame`` objects, observations carry boxes but no pixels, and Kafka gets embeddings of
protected crops only.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from anonymizer.base import CropAnonymizer
from anonymizer.privacy_floor import PrivacyFloor
from anonymizer.redactor import Redactor
from anonymizer.sidecar import SidecarWriter
from detectors.base import Detections, Detector
from detectors.motion import MotionSafetyNet
from detectors.tracker import CameraTracker, Observation
from stream.regions import CameraRegions, PlannedFrame
from stream.sinks import JsonLinesWriter, SinkError, VideoSink, write_json
from stream.sources import Frame, FrameSource, SourceError, open_source

log = logging.getLogger(__name__)
_EOS = object()

Embedder = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass
class CameraSpec:
    camera_id: str
    source: str


class SourceReader(threading.Thread):
    """Decodes one source into a bounded queue; live sources drop their oldest frame when behind."""

    def __init__(self, source: FrameSource, queue_size: int, drop_old: bool, max_frames: int | None,
                 wakeup: threading.Event) -> None:
        super().__init__(name=f"reader-{source.camera_id}", daemon=True)
        self.source = source
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self.drop_old = drop_old and source.is_live
        self.max_frames = max_frames
        self.dropped = 0
        self._wakeup = wakeup
        self._stop = threading.Event()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                break
            except queue.Full:
                if self.drop_old and item is not _EOS and not isinstance(item, BaseException):
                    try:
                        self.queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        self._wakeup.set()

    def run(self) -> None:
        try:
            for frame in self.source.frames():
                if self._stop.is_set():
                    break
                self._put(frame)
                if self.max_frames is not None and frame.index + 1 >= self.max_frames:
                    break
            self._put(_EOS)
        except Exception as exc:  # SourceError or a decoder crash: report to the main loop
            self._put(exc if isinstance(exc, SourceError) else SourceError(f"[{self.source.camera_id}] {exc}"))
        finally:
            self.source.close()

    def stop(self) -> None:
        self._stop.set()


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
    started: float = field(default_factory=time.perf_counter)
    frames: int = 0
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
    ending: Any = None      # _EOS or the reader's exception, acted on after the frames before it
    done: bool = False


class Pipeline:
    """Runs several cameras in one process. ``run()`` returns one summary dict per camera."""

    def __init__(self, cfg, cameras: Sequence[CameraSpec], output_dir: Path, detector: Detector,
                 anonymizer: CropAnonymizer, max_frames: int | None = None, publisher: Any = None,
                 embedder: Embedder | None = None, reid_fingerprint: str = "") -> None:
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
        self.redactor = Redactor(anonymizer, cfg.ANONYMIZER.MARGIN, cfg.ANONYMIZER.TIMEOUT_S, cfg.ANONYMIZER.FILL,
                                 keep_native=cfg.ANONYMIZER.SIDECAR, floor=floor)
        self._wakeup = threading.Event()
        self.summaries: dict[str, dict[str, Any]] = {}

    # ---- set-up -------------------------------------------------------------------------------
    def _open_camera(self, spec: CameraSpec, position: int) -> CameraState | None:
        try:
            source = open_source(spec.source, spec.camera_id, self.cfg.SOURCE)
        except SourceError as exc:
            log.error("%s", exc)
            self.summaries[spec.camera_id] = self._summary_skeleton(spec) | {"error": str(exc)}
            return None
        out = self.output_dir
        sink = VideoSink(out / f"{spec.camera_id}.mp4", source.width, source.height, source.fps,
                         audio_from=source.audio_path if self.cfg.OUTPUT.COPY_AUDIO else None,
                         audio_codec=source.media.audio_codec, codec=self.cfg.OUTPUT.VIDEO_CODEC,
                         crf=self.cfg.OUTPUT.CRF, preset=self.cfg.OUTPUT.PRESET, threads=self.cfg.OUTPUT.THREADS)
        total = source.expected_frames
        if total is not None and self.max_frames is not None:
            total = min(total, self.max_frames)
        progress = tqdm(total=total, desc=spec.camera_id, unit="frame", position=position, leave=True,
                        disable=not self.cfg.LOG.PROGRESS, dynamic_ncols=True)
        reader = SourceReader(source, self.cfg.SOURCE.QUEUE_SIZE, self.cfg.SOURCE.LIVE_DROP_OLD,
                              self.max_frames, self._wakeup)
        log.info("[%s] %s: %dx%d @ %.3f fps%s%s", spec.camera_id, spec.source, source.width, source.height,
                 source.fps, f", {source.expected_frames} frames" if source.expected_frames else "",
                 ", live" if source.is_live else "")
        tracker = CameraTracker(self.cfg.TRACKER.KIND, self.cfg.TRACKER.HOLD_FRAMES, source.fps)
        lookahead = int(self.cfg.PRIVACY.LOOKAHEAD_FRAMES)
        if lookahead and source.is_live:
            log.info("[%s] live source: PRIVACY.LOOKAHEAD_FRAMES ignored (a live camera is never delayed)",
                     spec.camera_id)
            lookahead = 0
        regions = CameraRegions(tracker, self.cfg.DETECTOR.CONF, self.cfg.ANONYMIZER.MARGIN,
                                self._motion_net(spec, source), lookahead)
        sidecar = SidecarWriter(out / f"{spec.camera_id}.crops") if self.cfg.ANONYMIZER.SIDECAR else None
        state = CameraState(spec, source, reader, regions, sink,
                            JsonLinesWriter(out / f"{spec.camera_id}.observations.jsonl"), progress, sidecar)
        reader.start()
        return state

    def _motion_net(self, spec: CameraSpec, source: FrameSource) -> MotionSafetyNet | None:
        """The camera's motion safety net; for files, primed on frames read ahead by a second decoder so
        that frame 0 already has a background model (live cameras warm up on full-frame masks)."""
        net = MotionSafetyNet.from_config(self.cfg.PRIVACY, spec.camera_id)
        if not net.enabled:
            return None
        if not source.is_live:
            primer = None
            try:
                primer = open_source(spec.source, spec.camera_id, self.cfg.SOURCE)
                want = int(self.cfg.PRIVACY.MOTION_WARMUP_FRAMES)
                images = (f.image for _, f in zip(range(want), primer.frames(), strict=False))  # one frame in memory at a time
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
        return {"camera_id": spec.camera_id, "source": spec.source, "frames": 0, "fps_in": None, "width": None,
                "height": None, "person_observations": 0, "anonymized_observations": 0, "fallback_masks": 0,
                "held_masks": 0, "floor_masks": 0, "low_score_masks": 0, "motion_masks": 0, "lookahead_masks": 0,
                "masked_frames": 0, "processing_fps": 0.0, "detector": self.detector.name,
                "anonymizer": getattr(self.anonymizer, "kind", "?"),
                "anonymizer_fingerprint": getattr(self.anonymizer, "fingerprint", ""), "error": None}

    # ---- per-frame work ------------------------------------------------------------------------
    def _process(self, cam: CameraState, frame: Frame, detections: Detections) -> None:
        for planned in cam.regions.add(frame, detections):
            self._emit(cam, planned)

    def _emit(self, cam: CameraState, planned: PlannedFrame) -> None:
        frame, observations = planned.frame, planned.observations
        boxes = [o.box for o in observations]
        if planned.mask_frame:
            result = self.redactor.mask_all(frame.image, boxes)
            cam.masked_frames += 1
        else:
            result = self.redactor.redact(frame.image, boxes)
        cam.sink.write(result.frame)
        cam.frames += 1
        cam.fallback_masks += result.fallback_masks
        cam.floor_masks += result.floor_masks
        publishable: list[tuple[Observation, np.ndarray]] = []
        native = result.native or [None] * len(observations)
        for obs, region, prot, nat in zip(observations, result.regions, result.protected, native, strict=True):
            self._count(cam, obs, prot is not None)
            cam.observations.write({
                "frame_index": frame.index, "timestamp_ms": frame.timestamp_ms, "track_id": obs.track_id,
                "box": [round(v, 2) for v in obs.box], "score": round(obs.score, 4),
                "region": list(region) if region else None, "held": obs.held, "kind": obs.kind,
                "protected": prot is not None})
            if cam.sidecar is not None and prot is not None:  # protected pixels only, losslessly
                cam.sidecar.write(frame.index, obs.track_id, region, prot, kind="region")
                if nat is not None:
                    cam.sidecar.write(frame.index, obs.track_id, region, nat, kind="native")
            if prot is not None and obs.is_person and obs.track_id >= 0:
                publishable.append((obs, prot))
        cam.observations.flush()
        if cam.sidecar is not None:
            cam.sidecar.flush()
        if self.publisher is not None and publishable:
            self._publish(cam, frame, publishable)

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
                camera_id=cam.spec.camera_id, frame_index=frame.index, timestamp_ms=frame.timestamp_ms,
                track_id=obs.track_id, box=tuple(obs.box), score=obs.score, embedding=emb,
                reid_fingerprint=self.reid_fingerprint, anonymizer_fingerprint=self.anonymizer.fingerprint,
                anonymization=self.anonymizer.kind)
            cam.published += bool(sent)

    # ---- main loop -----------------------------------------------------------------------------
    def _finish(self, cam: CameraState, error: str | None = None, flush: bool = True) -> None:
        cam.done = True
        cam.reader.stop()
        if flush:  # frames held back for look-ahead are written too (redacted like every other)
            try:
                for planned in cam.regions.flush():
                    self._emit(cam, planned)
            except SinkError as exc:
                error = error or f"[{cam.spec.camera_id}] {exc}"
        if error:
            cam.error = error
            log.error("%s", error)
        try:
            cam.sink.close()
        except SinkError as exc:
            cam.error = cam.error or f"[{cam.spec.camera_id}] {exc}"
            log.error("%s", cam.error)
        cam.observations.close()
        if cam.sidecar is not None:
            cam.sidecar.close()
        if cam.progress is not None:
            cam.progress.close()
        elapsed = max(time.perf_counter() - cam.started, 1e-9)
        summary = self._summary_skeleton(cam.spec) | {
            "frames": cam.frames, "fps_in": cam.source.fps, "width": cam.source.width, "height": cam.source.height,
            "person_observations": cam.person_observations, "anonymized_observations": cam.anonymized_observations,
            "fallback_masks": cam.fallback_masks, "held_masks": cam.held_masks,
            "floor_masks": cam.floor_masks, "low_score_masks": cam.low_score_masks, "motion_masks": cam.motion_masks,
            "lookahead_masks": cam.lookahead_masks, "masked_frames": cam.masked_frames,
            "processing_fps": round(cam.frames / elapsed, 3), "dropped_frames": cam.reader.dropped,
            "published": cam.published, "video": str(cam.sink.path), "error": cam.error}
        self.summaries[cam.spec.camera_id] = summary
        write_json(self.output_dir / f"{cam.spec.camera_id}.summary.json", summary)
        log.info("[%s] done: %d frames, %d person observations, %d protected, %d masked solid, %d solid by the "
                 "privacy floor; also masked: %d held, %d low-score, %d motion, %d look-ahead regions, %d whole "
                 "frames%s", cam.spec.camera_id, cam.frames, cam.person_observations, cam.anonymized_observations,
                 cam.fallback_masks, cam.floor_masks, cam.held_masks, cam.low_score_masks, cam.motion_masks,
                 cam.lookahead_masks, cam.masked_frames, f", ERROR: {cam.error}" if cam.error else "")

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

    def run(self) -> dict[str, dict[str, Any]]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        states = [s for i, spec in enumerate(self.cameras) if (s := self._open_camera(spec, i)) is not None]
        for spec in self.cameras:
            if spec.camera_id in self.summaries:  # could not open: still leave a summary behind
                write_json(self.output_dir / f"{spec.camera_id}.summary.json", self.summaries[spec.camera_id])
        limit = max(1, int(self.cfg.DETECTOR.BATCH))
        try:
            while any(not s.done for s in states):
                active = [s for s in states if not s.done]
                self._wakeup.clear()
                batch = self._gather(active, limit)
                if not batch:
                    self._finish_ended(states)
                    self._wakeup.wait(0.05)
                    continue
                detections = self.detector.detect([f.image for _, f in batch])
                for (cam, frame), dets in zip(batch, detections, strict=True):
                    if cam.done:
                        continue
                    try:
                        self._process(cam, frame, dets)
                    except SinkError as exc:
                        self._finish(cam, f"[{cam.spec.camera_id}] {exc}", flush=False)
                        continue
                    if cam.progress is not None:
                        cam.progress.update(1)
                self._finish_ended(states)
        except KeyboardInterrupt:
            log.warning("interrupted: closing outputs (everything written so far stays)")
            raise
        finally:
            for cam in states:
                if not cam.done:
                    self._finish(cam, None)
            self.redactor.close()
        return {c.camera_id: self.summaries[c.camera_id] for c in self.cameras}
