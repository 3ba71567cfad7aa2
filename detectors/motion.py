"""Motion safety net: masks moving foreground that no detection covers (static cameras).

Privacy rule: a person the detector misses leaves the pipeline raw, the worst failure; a false alarm
costs a bit of background. On a static camera a background model sees every moving person, detected
or not, so the blobs it finds outside the regions already masked are masked too.

How it works, and why (the choices were tested against a detector's person boxes on static-camera
sample videos: a box is "covered" when at least half of it lies inside the net's boxes).

* **Model.** OpenCV's KNN background subtractor on grey frames downscaled to ``width`` (320), with
  a history of 2000 frames and a fixed learning rate of 1/2000 from the first active frame on.
  With OpenCV's default learning rate (fast in the first frames) a person who stops melts into the
  background within seconds, and KNN masked less background than MOG2 for the same coverage. BGR
  instead of grey covered more standing people with the default rate but masked far more of the
  background and cost more per frame. A person who stands still long enough still becomes
  background: the net is a net for *moving* people; the detector and the tracker's held boxes must
  cover the others.
* **Shadows count as foreground** (fail closed): dropping them lost people.
* **Blobs.** Open 3x3 (sensor specks), close and dilate with a tall 5x9 ellipse (a person's head,
  torso and legs join into one blob), connected components. A blob is person-sized when the
  height of its foreground (the component's height less the dilation) is at least ``min_height``
  of the frame height and it has at least ``min_area`` of the frame's pixels in foreground. There
  is no upper limit: a group of people merges into one blob, and a blob covering the whole frame
  (lights switched on, camera bumped) masks the whole frame, which is the fail-closed answer.
* **Covered blobs.** A blob with at least ``covered`` of its foreground pixels inside the union of
  the regions the pipeline masks anyway is dropped; but the part of it outside those regions is
  looked at again on its own, so an undetected person who merged with a detected one is still
  returned when that part is person-sized.
* **Boxes** are the blobs' bounding boxes in full-frame pixels, grown by 10 % of their size on each
  side and clipped to the frame.

Warm-up, fail closed. A background model knows nothing at frame 0: it cannot tell a person from the
wall. Until it has learned ``warmup_frames`` frames the net is ``warming_up`` and every result has
``mask_frame=True``: the caller masks the **whole frame** (not only moving regions: the people who
stand still in the first frames are exactly what a young model misses). Frames 0 ..
``warmup_frames - 1`` of a live source are masked in full; frame ``warmup_frames`` is the first
``active`` one. For files, :meth:`MotionSafetyNet.prime` learns from the first ``warmup_frames``
frames read ahead by a second decoder, so frame 0 is already ``active``; the frames passed to
``update`` afterwards are expected to start again at frame 0 (the primed frames are not learned
twice). A file shorter than ``warmup_frames`` is learned whole (``finish_warmup`` after ``prime``):
the model then knows all the file can teach, and masking every frame of a short clip would protect
nobody better than the detector does.

People present while the model learns must not become background, or a person walking at frame 0
would be invisible at frame 0. Learning is therefore done from *cleaned* frames: the per-pixel
median of the warm-up frames is taken as the background, and in every warm-up frame the pixels that
differ from it by more than 20 grey levels (dilated) are replaced by the median before the model
sees the frame. Pixels keep their real noise elsewhere. Learning from cleaned frames covers far more
of the people present during the warm-up than learning the raw frames. Someone who stands still for
more than half of the warm-up frames is part of the median and is not seen by the net until they
move away; longer warm-ups help.

Moving cameras. Mode ``auto`` checks, over the first 30 consecutive frame pairs (warm-up and
priming frames included), whether the whole picture moves: corners are tracked with pyramidal
Lucas-Kanade between consecutive downscaled frames, and a pair shows global motion when fewer than
10 % of the tracked corners stayed within 0.3 px (at width 320). On a static camera the background
corners stay put; on a moving camera almost none do. Three such pairs in a row switch the net off
for the rest of the run (state ``off_moving_camera``, one warning naming the camera): on a moving
camera every pixel is foreground and the net would mask the whole frame forever. After the 30 pairs
the camera is taken as static and the check stops; a camera that starts moving later is not noticed
and gets large blobs, which is the fail-closed side. Mode ``on`` never checks, ``off`` does
nothing at all.

The measurements behind these choices: ``docs/experiments/code-measurements.md``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")

# Background model (see the module docstring for the measurements behind these).
_HISTORY = 2000  # frames; longer keeps people who pause in the foreground for longer
_DIST2_THRESHOLD = 400.0  # OpenCV's default for KNN
_CLEAN_DIFF = 20  # grey levels from the warm-up median that mark a pixel as "someone was there"
_CLEAN_DILATE = 7  # px at width 320: also replace the fringe around those pixels
_RNG_SEED = 0x5EED  # see MotionSafetyNet._learn
_BOX_MARGIN = 0.1  # each returned box grows by this share of its size on each side

# Blob cleaning kernels, in pixels at width 320 (scaled with ``width``): (width, height).
_OPEN_KERNEL = (3, 3)
_GROUP_KERNEL = (5, 9)
_FRINGE_KERNEL = (5, 5)  # opens what a covered blob leaves outside the covered regions

# Global-motion check (mode 'auto').
_GM_REFERENCE_WIDTH = 320  # the thresholds below are in pixels at this width
_GM_STILL_PX = 0.3  # a corner that moved less than this between two frames stayed still
_GM_STILL_SHARE = 0.1  # fewer still corners than this share: the whole picture moved
_GM_RUN = 3  # this many moving pairs in a row: the camera moves
_GM_DECIDE_PAIRS = 30  # pairs looked at before the camera is taken as static
_GM_MIN_CORNERS = 20  # fewer tracked corners: the pair says nothing (counts as not moving)
_GM_MAX_CORNERS = 200


@dataclass
class MotionResult:
    """What the net says about one frame.

    ``boxes`` [N, 4] float32 x1 y1 x2 y2 in full-frame pixels: foreground blobs no detection covers.
    ``state`` 'warming_up' | 'active' | 'off' | 'off_moving_camera'.
    ``mask_frame`` True: the net cannot vouch for this frame; the caller masks the whole frame.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    state: str = "off"
    mask_frame: bool = False


def _odd(value: float) -> int:
    """Nearest odd kernel size >= 1 (OpenCV's elliptic kernels are centred on odd sizes)."""
    n = max(1, int(round(value)))
    return n if n % 2 else n + 1


def _to_grey(frame: np.ndarray) -> np.ndarray:
    """BGR, BGRA or grey uint8 frame to a grey one."""
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    raise ValueError(f"expected a BGR or grey frame, got shape {frame.shape}")


def _downscale(grey: np.ndarray, width: int) -> np.ndarray:
    """Grey frame resized to ``width`` (never up): halvings by pyrDown first, which average the
    sensor noise away, then one bilinear step. As good as INTER_AREA for the model, 2-4x faster."""
    height_in, width_in = grey.shape
    if width_in <= width:
        return np.ascontiguousarray(grey)
    small = grey
    while small.shape[1] >= 2 * width:
        small = cv2.pyrDown(small)
    size = (width, max(1, int(round(height_in * width / width_in))))
    if (small.shape[1], small.shape[0]) != size:
        small = cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)
    return small


def clean_warmup_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Warm-up frames with the people taken out: pixels far from the per-pixel median (someone
    walked by) are replaced by the median, so the model learns the background without them."""
    median = np.median(np.stack(frames), axis=0).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_CLEAN_DILATE, _CLEAN_DILATE))
    cleaned = []
    for small in frames:
        moved = cv2.dilate((cv2.absdiff(small, median) > _CLEAN_DIFF).astype(np.uint8), kernel)
        out = small.copy()
        out[moved > 0] = median[moved > 0]
        cleaned.append(out)
    return cleaned


def still_corner_share(prev: np.ndarray, cur: np.ndarray, still_px: float) -> float | None:
    """Share of corners of ``prev`` that moved less than ``still_px`` in ``cur`` (sparse optical
    flow). None when too few corners could be tracked to tell."""
    corners = cv2.goodFeaturesToTrack(prev, _GM_MAX_CORNERS, 0.01, 5)
    if corners is None or len(corners) < _GM_MIN_CORNERS:
        return None
    # OpenCV's stubs want an array for nextPts; None (let OpenCV allocate it) is what its docs allow
    moved, status, _err = cv2.calcOpticalFlowPyrLK(
        prev,
        cur,
        corners,
        None,
        winSize=(15, 15),
        maxLevel=2,  # type: ignore[call-overload]
    )
    ok = status.reshape(-1) == 1
    if ok.sum() < _GM_MIN_CORNERS:
        return None
    shift = np.linalg.norm((moved - corners).reshape(-1, 2)[ok], axis=1)
    return float((shift < still_px).mean())


class MotionSafetyNet:
    """One per camera. Call :meth:`prime` (files) once before the first :meth:`update`, then
    :meth:`update` with every frame in order and the regions the pipeline masks in it anyway."""

    def __init__(
        self,
        mode: str = "auto",
        width: int = 320,
        warmup_frames: int = 30,
        min_height: float = 0.04,
        min_area: float = 0.0004,
        covered: float = 0.9,
        camera_id: str = "",
    ) -> None:
        mode = str(mode).strip().lower()
        if mode not in MODES:
            raise ValueError(f"motion net mode '{mode}': expected one of {', '.join(MODES)}")
        if int(width) < 16:
            raise ValueError(f"motion net width {width}: at least 16 pixels")
        if int(warmup_frames) < 1:
            raise ValueError("motion net warm-up: at least 1 frame (a model that learned nothing vouches for nothing)")
        if not 0.0 < float(covered) <= 1.0:
            raise ValueError(f"motion net covered share {covered}: expected 0 < covered <= 1")
        self.mode = mode
        self.width = int(width)
        self.warmup_frames = int(warmup_frames)
        self.min_height = float(min_height)
        self.min_area = float(min_area)
        self.covered = float(covered)
        self.camera_id = str(camera_id)
        scale = self.width / 320.0
        self._open_kernel = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (_odd(_OPEN_KERNEL[0] * scale), _odd(_OPEN_KERNEL[1] * scale))
        )
        self._fringe_kernel = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (_odd(_FRINGE_KERNEL[0] * scale), _odd(_FRINGE_KERNEL[1] * scale))
        )
        group = (_odd(_GROUP_KERNEL[0] * scale), _odd(_GROUP_KERNEL[1] * scale))
        self._group_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, group)
        self._group_grow_y = group[1] // 2  # rows a dilation adds above and below a blob
        self._state = "off" if mode == "off" else "warming_up"
        self._updates = 0
        self._reset_model()

    @classmethod
    def from_config(cls, cfg_privacy, camera_id: str = "") -> MotionSafetyNet:
        """From the ``cfg.PRIVACY`` node. YAML 1.1 reads a bare ``on`` / ``off`` as a boolean: both work."""
        mode = cfg_privacy.MOTION_NET
        if isinstance(mode, bool):
            mode = "on" if mode else "off"
        return cls(
            mode=str(mode),
            width=int(cfg_privacy.MOTION_WIDTH),
            warmup_frames=int(cfg_privacy.MOTION_WARMUP_FRAMES),
            min_height=float(cfg_privacy.MOTION_MIN_HEIGHT),
            min_area=float(cfg_privacy.MOTION_MIN_AREA),
            covered=float(cfg_privacy.MOTION_COVERED),
            camera_id=camera_id,
        )

    @property
    def enabled(self) -> bool:
        """False when the net does nothing (mode 'off', or 'auto' on a moving camera): skip :meth:`update`."""
        return self._state not in ("off", "off_moving_camera")

    @property
    def state(self) -> str:
        return self._state

    # ------------------------------------------------------------------ state

    def _reset_model(self) -> None:
        """Forget everything learned: back to warming up (a new camera shape, or a new net)."""
        self._model: cv2.BackgroundSubtractorKNN | None = None
        self._warmup: list[np.ndarray] = []
        self._frame_shape: tuple[int, int] | None = None
        self._replay = 0  # update() frames still to come that prime() has already learned
        self._gm_prev: np.ndarray | None = None
        self._gm_pairs = 0
        self._gm_run = 0
        self._gm_decided = self.mode != "auto"
        if self._state not in ("off", "off_moving_camera"):
            self._state = "warming_up"

    def _small(self, frame: np.ndarray) -> np.ndarray:
        """The frame as the model sees it; a change of frame size starts the warm-up again."""
        frame = np.asarray(frame)
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        if self._frame_shape is not None and shape != self._frame_shape:
            log.warning(
                "motion safety net of camera %s: frame size changed from %s to %s; learning the "
                "background again (whole frames masked meanwhile)",
                self.camera_id or "?",
                self._frame_shape,
                shape,
            )
            self._reset_model()
        self._frame_shape = shape
        return _downscale(_to_grey(frame), self.width)

    def _learn(self) -> None:
        """Build the background model from the (cleaned) warm-up frames; the net is active afterwards."""
        # KNN picks the samples it replaces with OpenCV's per-thread RNG, which runs on from whatever
        # used it last: seeded, a file gives the same masks on every run (and its audit the same result)
        cv2.setRNGSeed(_RNG_SEED)
        model = cv2.createBackgroundSubtractorKNN(_HISTORY, _DIST2_THRESHOLD, True)
        for small in clean_warmup_frames(self._warmup):
            model.apply(small)
        self._model = model
        self._warmup = []
        self._state = "active"

    def _observe_motion(self, small: np.ndarray) -> None:
        """Mode 'auto', first frame pairs: switch off for good when the whole picture moves."""
        prev, self._gm_prev = self._gm_prev, small
        if prev is None:
            return
        still = still_corner_share(prev, small, _GM_STILL_PX * small.shape[1] / _GM_REFERENCE_WIDTH)
        self._gm_pairs += 1
        self._gm_run = self._gm_run + 1 if still is not None and still < _GM_STILL_SHARE else 0
        if self._gm_run >= _GM_RUN:
            log.warning(
                "motion safety net off for camera %s: the camera moves (the whole picture shifted in "
                "%d frame pairs in a row); from now on only detected people are masked",
                self.camera_id or "?",
                self._gm_run,
            )
            self._state = "off_moving_camera"
            self._model, self._warmup, self._gm_prev = None, [], None
            self._gm_decided = True
        elif self._gm_pairs >= _GM_DECIDE_PAIRS:
            self._gm_decided = True
            self._gm_prev = None

    # ------------------------------------------------------------------ API

    def prime(self, frames: Iterable[np.ndarray]) -> int:
        """Learn the background from the first frames of a file, read ahead; returns how many were
        used (at most the warm-up still missing). The next ``update`` calls are expected to bring
        the same frames again from the first one: they are masked by the model then, not learned
        twice. A net that is off, or already active, uses none."""
        if self._state != "warming_up" or self._replay or self._updates:
            return 0
        used = 0
        for frame in itertools.islice(frames, self.warmup_frames - len(self._warmup)):
            small = self._small(frame)
            if not self._gm_decided:
                self._observe_motion(small)
                if self._state == "off_moving_camera":
                    break
            self._warmup.append(small)
            used += 1
        if self._state == "warming_up" and len(self._warmup) >= self.warmup_frames:
            self._learn()
        self._replay = used
        self._gm_prev = None  # the replayed frames are not looked at again; the pair after them is
        return used

    @property
    def active(self) -> bool:
        """The background model is learned and trusted."""
        return self._state == "active"

    def finish_warmup(self) -> None:
        """Learn from the frames primed so far although there are fewer than ``warmup_frames``: they
        are the whole of a short file, and a longer warm-up cannot happen."""
        if self._state == "warming_up" and self._warmup:
            self._learn()

    def update(self, frame: np.ndarray, covered_regions: Sequence[Sequence[float]] = ()) -> MotionResult:
        """Feed one frame; returns the moving blobs that ``covered_regions`` (full-frame pixel boxes
        the pipeline masks anyway) do not cover, or ``mask_frame=True`` while warming up."""
        if not self.enabled:
            return MotionResult(np.zeros((0, 4), np.float32), self._state, False)
        self._updates += 1
        small = self._small(frame)
        replay = self._replay > 0
        if replay:
            self._replay -= 1
            if not self._gm_decided:
                self._gm_prev = small  # already looked at by prime(); the next new frame pairs with it
        elif not self._gm_decided:
            self._observe_motion(small)
            if not self.enabled:
                return MotionResult(np.zeros((0, 4), np.float32), self._state, False)
        if self._state == "warming_up":
            if not replay:
                self._warmup.append(small)
                if len(self._warmup) >= self.warmup_frames:
                    self._learn()  # this frame is still masked in full; the next one is the first active
            return MotionResult(np.zeros((0, 4), np.float32), "warming_up", True)
        # A fixed, slow learning rate from frame 0 on: OpenCV's default starts fast (1 / 2n), which
        # let people who stopped in the first minutes melt into the background in seconds.
        assert self._model is not None  # active: _learn() built it
        foreground = self._model.apply(small, learningRate=1.0 / _HISTORY)
        boxes = self._blob_boxes(foreground, covered_regions, frame.shape[1], frame.shape[0])
        return MotionResult(boxes, "active", False)

    # ------------------------------------------------------------------ blobs

    def _covered_mask(
        self, covered_regions: Sequence[Sequence[float]], shape: tuple[int, int], sx: float, sy: float
    ) -> np.ndarray | None:
        """Union of the covered regions at model scale, rounded inwards (what is covered for sure)."""
        regions = np.asarray(covered_regions, np.float64).reshape(-1, 4) if len(covered_regions) else None
        if regions is None or not len(regions):
            return None
        mask = np.zeros(shape, np.uint8)
        for x1, y1, x2, y2 in regions:
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                continue  # a nonsense box covers nothing for sure
            c1, r1 = max(0, math.ceil(x1 / sx)), max(0, math.ceil(y1 / sy))
            c2, r2 = min(shape[1], math.floor(x2 / sx)), min(shape[0], math.floor(y2 / sy))
            if c2 > c1 and r2 > r1:
                mask[r1:r2, c1:c2] = 1
        return mask

    def _components(
        self, fg: np.ndarray, frame_shape: tuple[int, int] | None = None
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Group foreground pixels into blobs: (count incl. background label 0, labels, stats,
        foreground pixels per label, person-sized flag per label). Sizes are measured on the
        foreground, not on the dilated blob, so that dilation does not turn specks into people;
        they are shares of ``frame_shape`` (model scale; default: ``fg``'s own shape)."""
        grouped = cv2.dilate(cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._group_kernel), self._group_kernel)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8, ltype=cv2.CV_32S)
        height, width = frame_shape or fg.shape
        area = np.bincount(labels[fg > 0], minlength=count)
        fg_height = stats[:, cv2.CC_STAT_HEIGHT] - 2 * self._group_grow_y
        sized = (fg_height >= self.min_height * height) & (area >= self.min_area * height * width)
        sized[0] = False
        return count, labels, stats, area, sized

    def _blob_boxes(
        self, foreground: np.ndarray, covered_regions: Sequence[Sequence[float]], frame_w: int, frame_h: int
    ) -> np.ndarray:
        """Person-sized blobs outside the covered regions, as grown full-frame boxes."""
        fg = cv2.morphologyEx((foreground > 0).astype(np.uint8), cv2.MORPH_OPEN, self._open_kernel)
        sx, sy = frame_w / fg.shape[1], frame_h / fg.shape[0]
        count, labels, stats, area, keep = self._components(fg)
        cov_mask = self._covered_mask(covered_regions, fg.shape, sx, sy) if keep.any() else None
        picked = []
        if cov_mask is not None:
            area_in = np.bincount(labels[(fg & cov_mask) > 0], minlength=count)
            dropped = keep & (area_in >= self.covered * np.maximum(area, 1))
            keep &= ~dropped
            # What sticks out of the covered regions may be a second, undetected person.
            recheck = dropped & (area - area_in >= self.min_area * fg.shape[0] * fg.shape[1])
            for label in np.flatnonzero(recheck):
                picked.append(self._uncovered_part(fg, cov_mask, labels, stats, int(label)))
        picked.append(stats[keep])
        return self._to_frame_boxes(np.concatenate(picked), sx, sy, frame_w, frame_h)

    def _uncovered_part(
        self, fg: np.ndarray, cov_mask: np.ndarray, labels: np.ndarray, stats: np.ndarray, label: int
    ) -> np.ndarray:
        """Stats (model-scale frame coordinates) of the person-sized blobs among the foreground
        pixels of blob ``label`` that lie outside the covered regions."""
        x, y, w, h = (int(v) for v in stats[label, :4])
        pad_x, pad_y = self._group_kernel.shape[1] // 2, self._group_grow_y  # room for the dilation
        x1, y1 = max(0, x - pad_x), max(0, y - pad_y)
        x2, y2 = min(fg.shape[1], x + w + pad_x), min(fg.shape[0], y + h + pad_y)
        part = (labels[y1:y2, x1:x2] == label) & (fg[y1:y2, x1:x2] > 0) & (cov_mask[y1:y2, x1:x2] == 0)
        # Strips thinner than the kernel along a region's edge are the detected person's fringe.
        part = cv2.morphologyEx(part.astype(np.uint8), cv2.MORPH_OPEN, self._fringe_kernel)
        _, _, part_stats, _, sized = self._components(part, fg.shape)
        part_stats = part_stats[sized].copy()
        part_stats[:, cv2.CC_STAT_LEFT] += x1
        part_stats[:, cv2.CC_STAT_TOP] += y1
        return part_stats

    @staticmethod
    def _to_frame_boxes(stats: np.ndarray, sx: float, sy: float, frame_w: int, frame_h: int) -> np.ndarray:
        """Component stats at model scale to full-frame x1 y1 x2 y2, grown by the margin, clipped."""
        if not len(stats):
            return np.zeros((0, 4), np.float32)
        x = stats[:, cv2.CC_STAT_LEFT].astype(np.float64) * sx
        y = stats[:, cv2.CC_STAT_TOP].astype(np.float64) * sy
        w = stats[:, cv2.CC_STAT_WIDTH].astype(np.float64) * sx
        h = stats[:, cv2.CC_STAT_HEIGHT].astype(np.float64) * sy
        boxes = np.stack(
            [x - _BOX_MARGIN * w, y - _BOX_MARGIN * h, x + w + _BOX_MARGIN * w, y + h + _BOX_MARGIN * h], axis=1
        )
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, frame_w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, frame_h)
        return boxes.astype(np.float32)
