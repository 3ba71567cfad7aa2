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

Parts of its own: the per-frame work after region planning (:mod:`stream.emit`), what is known about
a camera (:mod:`stream.camera_state`), its summary and the reconciling of the log with the file
(:mod:`stream.camera_summary`), the outputs (:mod:`stream.outputs`, ``OUTPUT.SINKS``). Why this file
is still a little over 500 lines: what is left is one class, the camera life cycle (set-up, the
loop, finishing, cameras coming and going), whose steps share the pipeline's state; cutting it
further would hand that state around instead of reading it in one place.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from anonymizer.base import CropAnonymizer
from anonymizer.privacy_floor import PrivacyFloor
from anonymizer.redactor import Redactor
from anonymizer.sidecar import SidecarWriter
from detectors.base import Detections, Detector
from detectors.motion import MotionSafetyNet
from detectors.tracker import CameraTracker
from stream.camera_state import (
    LATENCY_MEMORY,
    CameraChanges,
    CameraSpec,
    CameraState,
    Embedder,
    latency_percentiles,
)
from stream.camera_summary import camera_summary, log_done, reconcile, summary_skeleton, write_summary
from stream.cameras import zones_to_boxes
from stream.emit import FrameEmitter
from stream.jsonlog import JsonLinesWriter
from stream.metrics import CameraSnapshot, PipelineMetrics
from stream.outputs import SinkContext, build_sinks
from stream.reader import EOS as _EOS
from stream.reader import SourceReader
from stream.regions import CameraRegions, PlannedFrame
from stream.sink_errors import SinkError, describe_os_error
from stream.sources import Frame, FrameSource, SourceError, open_source

# Importable from here as before the split (tests, benchmarks): the camera's records and the reader.
__all__ = [
    "LATENCY_MEMORY",
    "CameraChanges",
    "CameraSpec",
    "CameraState",
    "Embedder",
    "Pipeline",
    "SourceReader",
    "_EOS",
    "latency_percentiles",
    "open_source",
]

log = logging.getLogger(__name__)


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
            min_aspect=cfg.ANONYMIZER.MIN_ASPECT,
        )
        self._wakeup = threading.Event()
        self._stop_event = stop_event or threading.Event()
        self.summaries: dict[str, dict[str, Any]] = {}
        self.camera_changes = camera_changes
        self.metrics: PipelineMetrics | None = None
        self._states: list[CameraState] = []
        self._order: list[str] = []  # output stems in start order, for the summaries returned
        self._generations: dict[str, int] = {}
        self._emitter = FrameEmitter(
            self.redactor,
            anonymizer,
            publisher,
            embedder,
            reid_fingerprint,
            reid_batch=int(getattr(getattr(cfg, "REID", None), "BATCH", 32) or 32),
        )

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
                min_aspect=float(cfg.ANONYMIZER.MIN_ASPECT),
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
            ctx = SinkContext(
                cfg,
                out,
                spec.stem,
                spec.camera_id,
                source.width,
                source.height,
                out_fps,
                source_fps=source.fps,
                live=source.is_live,
                audio_from=source.audio_path,
                audio_codec=source.media.audio_codec,
                on_segment=lambda seg: observations.write_frame([seg.record()]),
            )
            # OUTPUT.SINKS (stream.outputs): the video first, then the others (a re-stream: redacted frames
            # only, like the file; its outages never stop the camera)
            sink, extra_sinks = build_sinks(ctx, opened)
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
        regions = CameraRegions(
            tracker, cfg.DETECTOR.CONF, redactor.margin, motion, lookahead, min_aspect=redactor.min_aspect
        )
        state = CameraState(
            spec, source, reader, regions, sink, observations, progress, sidecar, extra_sinks, redactor=redactor
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
        return summary_skeleton(spec, self.detector.name, self.anonymizer)

    # ---- per-frame work ------------------------------------------------------------------------
    def _process(self, cam: CameraState, frame: Frame, detections: Detections) -> None:
        for planned in cam.regions.add(frame, detections):
            self._emit(cam, planned)
            self._observe_latency(cam, planned.frame)

    def _emit(self, cam: CameraState, planned: PlannedFrame) -> None:
        self._emitter.emit(cam, planned)  # redaction, sinks, observations, sidecar, Kafka (stream.emit)

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
        for extra in cam.extra_sinks:  # by-products (a re-stream): their close never fails the camera's video
            try:
                extra.close()
            except Exception as exc:
                cam.error = cam.error or f"[{cam.spec.camera_id}] closing {type(extra).__name__}: {exc}"
                log.error("%s", cam.error)
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
        frames, verified, truncated = reconcile(cam)
        summary = camera_summary(cam, self._summary_skeleton(cam.spec), frames, verified, truncated)
        self._write_summary(cam.spec.stem, summary)
        log_done(cam, frames, summary)

    def _write_summary(self, camera_id: str, summary: dict[str, Any]) -> None:
        """Keep the summary and write it (stream.camera_summary.write_summary: logged whole when it cannot be)."""
        write_summary(self.output_dir, camera_id, summary)
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
