"""The Python API: each job of the project in one or two lines, with the pipeline's fail-closed rules.

* :func:`anonymize_video` runs the same job as ``privreid run`` / ``run_pipeline.py`` on one file and
  returns the camera's summary;
* :class:`FrameAnonymizer` redacts frames one at a time (a BGR ndarray in, the redacted frame and its
  observations out), built from the pipeline's own parts: detector, tracker, motion safety net,
  redactor with its privacy floor;
* :func:`embed_crops` gives the Re-ID features of *protected* person crops (demo bundle by default);
* :class:`Matcher` / :func:`match` give cross-camera identities to such features (``reid.gallery``).

Configuration is the pipeline's (``configs/pipeline.yaml`` plus overrides); an override is a dotted
key and a value, ``{"DETECTOR.KIND": "hog"}``, passed as keyword arguments with ``**`` or with ``__``
for the dot (``DETECTOR__KIND="hog"``). Nothing heavy is imported before a function is called, so
``import privreid`` stays instant (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from anonymizer.base import CropAnonymizer
    from anonymizer.bundle import LearnedBundle
    from anonymizer.redactor import RedactedFrame
    from detectors.base import Detector

from privreid import __all__ as __all__  # the package re-exports exactly these names, lazily


class PipelineError(RuntimeError):
    """The job was refused at start (``status`` 2: bad config, model, source or output) or a camera
    ended with an error (``status`` 1; ``summary`` says what was written)."""

    def __init__(self, message: str, status: int, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.summary = summary


# ---- configuration ---------------------------------------------------------------------------------------


def _override_list(overrides: Mapping[str, Any] | None) -> list[str]:
    """``{"DETECTOR.CONF": 0.3}`` (or ``DETECTOR__CONF``) as the ``KEY VALUE`` list the config reader takes."""
    out: list[str] = []
    for key, value in (overrides or {}).items():
        out += [str(key).replace("__", "."), value if isinstance(value, str) else repr(value)]
    return out


def load_config(overrides: Mapping[str, Any] | None = None, config: str | Path | None = None):
    """The pipeline config: ``config`` (default ``configs/pipeline.yaml``) with ``overrides`` applied.

    Example::

        cfg = load_config({"DETECTOR.KIND": "hog", "ANONYMIZER.KIND": "mosaic"})
    """
    from configs import CONFIG_DIR, build_config
    from configs.pipeline_defaults import get_pipeline_defaults

    path = Path(config) if config is not None else CONFIG_DIR / "pipeline.yaml"
    return build_config(get_pipeline_defaults(), path if path.is_file() or config else None, _override_list(overrides))


# ---- whole videos ----------------------------------------------------------------------------------------


def _camera_id(source: str | Path) -> str:
    stem = Path(str(source).rstrip("/")).stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64] or "cam0"


def anonymize_video(
    source: str | Path,
    output_dir: str | Path,
    *,
    max_frames: int | None = None,
    config: str | Path | None = None,
    camera_id: str | None = None,
    log_level: str = "WARNING",
    **overrides: Any,
) -> dict[str, Any]:
    """Anonymize one video file (or image folder) into ``output_dir``; return the camera's summary.

    The job is ``privreid run --source SOURCE --output OUTPUT_DIR [KEY VALUE ...]``: the same start
    checks, the anonymized video, the observations log and ``<camera_id>.summary.json``. Raises
    :class:`PipelineError` when the job is refused or the camera ended with an error. It installs the
    pipeline's Ctrl-C handling, so call it from the main thread.

    Example::

        summary = anonymize_video("people.mp4", "out/", **{"DETECTOR.KIND": "hog", "ANONYMIZER.KIND": "mosaic"})
        print(summary["frames"], summary["person_observations"])
    """
    import run_pipeline  # the CLI job itself: one definition of what "run" means

    cam = camera_id or _camera_id(source)
    argv = ["--source", str(source), "--output", str(output_dir), "--camera-id", cam, "--log-level", log_level]
    if max_frames is not None:
        argv += ["--max-frames", str(int(max_frames))]
    if config is not None:
        argv += ["--config", str(config)]
    argv += _override_list(overrides)
    root = logging.getLogger()
    handler = None
    if not root.handlers:  # the job's warnings go to the real stderr, not to the captured text below
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(getattr(logging, log_level))
        root.addHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = int(run_pipeline.main(argv))
    finally:
        if handler is not None:
            root.removeHandler(handler)
    message = (err.getvalue().strip() or out.getvalue().strip())[-4000:]
    path = Path(output_dir) / f"{cam}.summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else None
    if status != 0:
        why = (summary or {}).get("error") or message or f"exit status {status}"
        raise PipelineError(str(why), status, summary)
    if summary is None:
        raise PipelineError(f"the job wrote no summary at {path}", 1)
    return summary


# ---- one frame at a time ------------------------------------------------------------------------------------


@dataclass
class AnonymizedFrame:
    """One redacted frame and what was found in it. ``observations`` carry boxes, never pixels.

    Attributes:
        image: the redacted BGR frame (every region protected or filled solid).
        observations: one dict per masked region: ``box`` (x1, y1, x2, y2), ``score``, ``track_id``
            (-1 when not a tracked person), ``kind`` (person, low_score, motion), ``held`` (a
            prediction), ``protected`` (True: the anonymizer's output was used; False: filled solid).
        whole_frame_masked: nothing in the frame could be vouched for (motion net warming up, detector failed).
        fallback_masks, floor_masks: regions left solid because the anonymizer failed / the privacy floor refused.
        reasons: why regions were left solid.
    """

    image: np.ndarray
    observations: list[dict[str, Any]]
    whole_frame_masked: bool = False
    fallback_masks: int = 0
    floor_masks: int = 0
    reasons: list[str] = field(default_factory=list)
    redacted: RedactedFrame | None = field(default=None, repr=False)  # what the pipeline's sinks accept


class FrameAnonymizer:
    """Frames in, redacted frames out, one camera at a time, fail-closed like the pipeline.

    Each frame goes through the detector, the tracker (``TRACKER.*``), the motion safety net
    (``PRIVACY.MOTION_NET``) and the redactor with its privacy floor: every region is filled solid
    first and overwritten only with a protected crop that arrived in time and passed the floor; a
    detector failure masks the whole frame. Frames are taken as a live camera's: no look-ahead, and
    the motion net masks whole frames while it learns the background unless :meth:`prime` fed it.

    Example::

        with FrameAnonymizer(detector="hog", anonymizer="mosaic") as anon:
            out = anon(frame)            # out.image: redacted frame, out.observations: boxes only
    """

    def __init__(
        self,
        detector: str | Detector | None = None,
        anonymizer: str | CropAnonymizer | None = None,
        *,
        config: str | Path | None = None,
        camera_id: str = "api",
        fps: float = 30.0,
        **overrides: Any,
    ) -> None:
        from anonymizer.factory import build_anonymizer
        from anonymizer.privacy_floor import PrivacyFloor
        from anonymizer.redactor import Redactor
        from detectors.factory import build_detector
        from detectors.motion import MotionSafetyNet
        from detectors.tracker import CameraTracker
        from stream.regions import CameraRegions

        cfg = load_config(overrides, config)
        self.cfg = cfg
        device = cfg.ANONYMIZER.DEVICE
        self.detector: Detector = (
            build_detector(detector or cfg.DETECTOR.KIND, cfg.DETECTOR, device=device)
            if detector is None or isinstance(detector, str)
            else detector
        )
        self.anonymizer: CropAnonymizer = (
            build_anonymizer(anonymizer or cfg.ANONYMIZER.KIND, cfg.ANONYMIZER)
            if anonymizer is None or isinstance(anonymizer, str)
            else anonymizer
        )
        self.conf = float(cfg.DETECTOR.CONF)
        self.margin = float(cfg.ANONYMIZER.MARGIN)
        self.tracker = CameraTracker(cfg.TRACKER.KIND, cfg.TRACKER.HOLD_FRAMES, fps)
        motion = MotionSafetyNet.from_config(cfg.PRIVACY, camera_id)
        self.motion = motion if motion.enabled else None
        floor = PrivacyFloor(cfg.PRIVACY.FLOOR_SSIM, cfg.PRIVACY.FLOOR_MIN_CHANGED)
        self.redactor = Redactor(
            self.anonymizer,
            self.margin,
            cfg.ANONYMIZER.TIMEOUT_S,
            cfg.ANONYMIZER.FILL,
            floor=floor,
            min_aspect=cfg.ANONYMIZER.MIN_ASPECT,
        )
        # the pipeline's own planning (two thresholds, held tracks, motion net), never delayed
        self.regions = CameraRegions(
            self.tracker, self.conf, self.margin, self.motion, lookahead=0, min_aspect=self.redactor.min_aspect
        )
        self._index = 0

    def prime(self, frames: Iterable[np.ndarray]) -> int:
        """Teach the motion net the background from ``frames`` (as the pipeline does for files), so the
        first frames are not masked whole; returns how many frames it used (0 without a motion net)."""
        if self.motion is None:
            return 0
        used = self.motion.prime(frames)
        if not self.motion.active:
            self.motion.finish_warmup()
        return used

    def __call__(self, frame: np.ndarray) -> AnonymizedFrame:
        """Redact one BGR uint8 frame [H, W, 3]; the input is never modified."""
        return self.anonymize(frame)

    def anonymize(self, frame: np.ndarray) -> AnonymizedFrame:
        """Redact one BGR uint8 frame [H, W, 3]; the input is never modified."""
        from stream.sources import Frame

        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected a BGR uint8 frame [H, W, 3], got {getattr(frame, 'shape', type(frame))}")
        try:
            detections = self.detector.detect([frame])[0]
        except Exception as exc:  # nothing can be vouched for: the whole frame goes solid
            result = self.redactor.mask_all(frame)
            return AnonymizedFrame(
                result.frame.image,
                [],
                True,
                reasons=[f"detector raised {type(exc).__name__}: {exc}"],
                redacted=result.frame,
            )
        (planned,) = self.regions.add(Frame(self._index, 0, frame), detections)  # lookahead 0: this frame
        self._index += 1
        observations, mask_frame = planned.observations, planned.mask_frame
        boxes = [o.box for o in observations]
        result = self.redactor.mask_all(frame, boxes) if mask_frame else self.redactor.redact(frame, boxes)
        records = [
            {
                "box": [round(float(v), 2) for v in o.box],
                "score": round(float(o.score), 4),
                "track_id": int(o.track_id),
                "kind": o.kind,
                "held": bool(o.held),
                "protected": result.protected[i] is not None,
            }
            for i, o in enumerate(observations)
        ]
        return AnonymizedFrame(
            result.frame.image,
            records,
            mask_frame,
            result.fallback_masks,
            result.floor_masks,
            list(result.reasons),
            redacted=result.frame,
        )

    def close(self) -> None:
        """Stop the anonymizer's worker thread."""
        self.redactor.close()

    def __enter__(self) -> FrameAnonymizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- Re-ID features and matching ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _load_bundle(path: str) -> LearnedBundle:
    from anonymizer.bundle import load_bundle

    return load_bundle(path)


def _bundle(bundle: str | Path | LearnedBundle | None) -> LearnedBundle:
    if bundle is None:
        from privreid.resources import demo_bundle_dir

        return _load_bundle(str(demo_bundle_dir()))
    if isinstance(bundle, (str, Path)):
        return _load_bundle(str(Path(bundle).expanduser().resolve()))
    return bundle


def embed_crops(
    crops: Sequence[np.ndarray], bundle: str | Path | LearnedBundle | None = None, *, protect: bool = True
) -> np.ndarray:
    """L2-normalized Re-ID features ``[N, D]`` float32 of person crops (BGR uint8), through a learned bundle.

    The crops are protected first (``protect=True``, the pipeline's rule: features are of protected
    crops only); pass already protected crops with ``protect=False``. ``bundle``: a bundle folder or a
    loaded bundle; the demo bundle (``models/demo``) by default.

    C reads G's output before the bundle's keyed scramble (``recovery.scramble``), as inside the
    pipeline: the scrambled crop that leaves a frame carries a fresh random permutation per crop,
    which C was never trained on. So ``protect=False`` suits bundles without a scramble, or G's
    unscrambled output from :meth:`~anonymizer.bundle.LearnedBundle.protect_batch` (``for_reid``).

    Example::

        feats = embed_crops([crop_a, crop_b])          # [2, D]
        similarity = float(feats[0] @ feats[1])
    """
    model = _bundle(bundle)
    crops = list(crops)
    if not crops:
        return np.zeros((0, int(model.embed_dim)), np.float32)
    protected = model.protect_batch(crops).for_reid if protect else crops
    return np.asarray(model.embed(protected), np.float32)


class Matcher:
    """Cross-camera identities for Re-ID features: a thin front of :class:`reid.gallery.Gallery`.

    A track (camera id, track id) gets a global id once it has ``min_observations`` features: the
    identity it is most similar to if that reaches ``threshold``, else a new one. Two tracks of one
    camera that overlap in time are never one identity, so give ``timestamp_ms`` when you have it.

    Example::

        m = Matcher(dim=feats.shape[1])
        a = m.add("cam1", 1, feats[0]); b = m.add("cam2", 7, feats[1])   # a == b: the same person
    """

    def __init__(self, dim: int, threshold: float = 0.65, min_observations: int = 1, session_id: str = "api") -> None:
        from reid.gallery import Gallery

        self.gallery = Gallery(int(dim), threshold=threshold, min_observations=min_observations)
        self.session_id = session_id
        self._frames: dict[tuple[str, int], int] = {}

    def add(
        self,
        camera_id: str,
        track_id: int,
        embedding: np.ndarray,
        *,
        frame_index: int | None = None,
        timestamp_ms: int | None = None,
    ) -> int | None:
        """Add one feature of a track; returns its global id (``None`` while it has too few features)."""
        key = (str(camera_id), int(track_id))
        index = frame_index if frame_index is not None else self._frames.get(key, -1) + 1
        self._frames[key] = max(index, self._frames.get(key, -1))
        vec = np.asarray(embedding, np.float32).reshape(-1)
        vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        ts = int(timestamp_ms) if timestamp_ms is not None else int(index)
        self.gallery.observe(key[0], self.session_id, key[1], int(index), ts, vec)
        return self.global_id(*key)

    def global_id(self, camera_id: str, track_id: int) -> int | None:
        """The global id of a track, ``None`` when unknown or not yet assigned."""
        entry = self.gallery.entry((str(camera_id), self.session_id, int(track_id)))
        return None if entry is None else entry["global_id"]


def match(
    tracks: Mapping[tuple[str, int], np.ndarray], threshold: float = 0.65, min_observations: int = 1
) -> dict[tuple[str, int], int | None]:
    """Global ids for tracks: ``{(camera_id, track_id): features [N, D] or [D]}`` → ``{key: global id}``.

    Tracks are taken as seen one after another (each gets its own time span, in the mapping's order),
    so two tracks of one camera may be one person; use :class:`Matcher` with timestamps otherwise.

    Example::

        ids = match({("cam1", 1): embed_crops(crops_a), ("cam2", 4): embed_crops(crops_b)})
    """
    rows = {key: np.asarray(feats, np.float32).reshape(-1, np.shape(feats)[-1]) for key, feats in tracks.items()}
    if not rows:
        return {}
    dim = next(iter(rows.values())).shape[1]
    matcher = Matcher(dim, threshold=threshold, min_observations=min_observations)
    clock = 0
    for (camera_id, track_id), feats in rows.items():
        for i, vec in enumerate(feats):
            matcher.add(camera_id, track_id, vec, frame_index=i, timestamp_ms=clock)
            clock += 1
        clock += 1000  # a gap: the next track starts after this one ended
    return {key: matcher.global_id(*key) for key in rows}
