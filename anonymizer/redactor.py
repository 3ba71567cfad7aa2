"""In-place replacement of person regions, fail-closed.

The only way to get a frame out of the pipeline is :meth:`Redactor.redact`, which returns a
:class:`RedactedFrame`; sinks accept nothing else. Every region is first filled solid, and only then
overwritten with its protected crop when the anonymizer returned one in time, of the right shape,
and far enough from the raw crop (``anonymizer.privacy_floor``). So an exception, a time-out, a wrong
shape or a stuck anonymizer can only leave a solid mask, never a raw person.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anonymizer.base import CropAnonymizer
from anonymizer.privacy_floor import MIN_HEIGHT, PrivacyFloor

log = logging.getLogger(__name__)
_TOKEN = object()


class RedactedFrame:
    """A frame whose person regions were replaced. Only :class:`Redactor` can make one."""

    __slots__ = ("image",)

    def __init__(self, image: np.ndarray, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("RedactedFrame is created by Redactor.redact only (fail-closed guarantee)")
        self.image = image


@dataclass
class RedactionResult:
    """What happened to one frame's regions, index-aligned with the boxes passed in."""

    frame: RedactedFrame
    regions: list[tuple[int, int, int, int] | None]  # x1, y1, x2, y2 replaced (None: empty after clipping)
    protected: list[np.ndarray | None]  # protected crop, None where the region was masked
    fallback_masks: int = 0
    floor_masks: int = 0  # protected crops refused by the privacy floor (left solid)
    reasons: list[str] = field(default_factory=list)
    native: list[np.ndarray | None] | None = None  # G's output at model size, when asked for (sidecar)
    sealed: list[bytes | None] | None = None  # a scrambled crop's sealed seed (anonymizer.scramble), per region
    # what the bundle's C reads for a protected region: the crop before a scramble (None: ``protected``)
    for_reid: list[np.ndarray | None] | None = None


def expand_and_clip(
    box: Sequence[float], margin: float, width: int, height: int, min_aspect: float = 0.0
) -> tuple[int, int, int, int] | None:
    """Grow ``box`` by ``margin`` × its size on each side, round outwards and clip to the frame.

    A box narrower than ``min_aspect`` × its height is first widened about its centre to that width:
    detectors often box a walker in profile from torso to feet only, while arms, bag and stride
    reach further out (``docs/privacy-recall.md``); G also sees such a crop at its own aspect."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return (0, 0, width, height)  # nonsense box: mask the whole frame rather than guess
    bw, bh = max(0.0, x2 - x1), max(0.0, y2 - y1)
    if bw < min_aspect * bh:
        centre, bw = (x1 + x2) / 2.0, min_aspect * bh
        x1, x2 = centre - bw / 2.0, centre + bw / 2.0
    x1, x2 = x1 - margin * bw, x2 + margin * bw
    y1, y2 = y1 - margin * bh, y2 + margin * bh
    ix1, iy1 = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
    ix2, iy2 = min(width, int(math.ceil(x2))), min(height, int(math.ceil(y2)))
    if ix2 <= ix1 or iy2 <= iy1:
        return None
    return ix1, iy1, ix2, iy2


def _checked_aspect(value: float) -> float:
    aspect = float(value)
    if not 0.0 <= aspect <= 2.0:  # NaN fails too
        raise ValueError(f"ANONYMIZER.MIN_ASPECT must be in [0, 2] (width / height), got {value}")
    return aspect


def inner_box(box: Sequence[float], region: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``box`` rounded outwards and clipped to ``region`` (the box a region was grown from)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return region
    return (
        max(region[0], math.floor(x1)),
        max(region[1], math.floor(y1)),
        min(region[2], math.ceil(x2)),
        min(region[3], math.ceil(y2)),
    )


def _area(region: tuple[int, int, int, int]) -> int:
    return (region[2] - region[0]) * (region[3] - region[1])


class _Worker:
    """The one thread the anonymizer runs in, shared by every camera's :class:`Redactor`: at most one
    anonymizer call at a time, whichever camera it is for (a call that timed out keeps it busy)."""

    def __init__(self, timeout_s: float) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="anonymizer") if timeout_s > 0 else None
        self.pending: Future | None = None


class Redactor:
    """Replaces regions with an anonymizer's output; masks whatever it cannot replace in time.

    :meth:`with_settings` gives a camera its own redactor (its ``ANONYMIZER.MARGIN``,
    ``ANONYMIZER.MIN_ASPECT`` and privacy floor) that shares this one's anonymizer, time limit and
    worker thread.

    Where protected regions overlap, the largest one is painted last, so each pixel shows the
    protection made for the largest region over it: a small region inside a person (a fragment found
    at a low score) would otherwise lay a finer mosaic, or G's output for a part of a body, over that
    person. A region left solid stays solid over every protected crop that overlaps it."""

    def __init__(
        self,
        anonymizer: CropAnonymizer,
        margin: float = 0.1,
        timeout_s: float = 2.0,
        fill: Sequence[int] = (0, 0, 0),
        keep_native: bool = False,
        floor: PrivacyFloor | None = None,
        min_aspect: float = 0.0,
    ) -> None:
        self.anonymizer = anonymizer
        self.floor = floor
        # Learned bundles hand back G's output at model size (the best input for recovery), a scrambled
        # crop's sealed seed, and the crop their C reads before the scramble (anonymizer.bundle.ProtectedBatch).
        self._batch = hasattr(anonymizer, "protect_batch")
        self._native = keep_native and self._batch
        self.margin = float(margin)
        if not self.margin >= 0:
            raise ValueError(f"ANONYMIZER.MARGIN must be >= 0, got {margin}")
        self.min_aspect = _checked_aspect(min_aspect)
        self.timeout_s = float(timeout_s)
        self.fill = np.asarray(fill, np.uint8).reshape(3)
        self._worker = _Worker(self.timeout_s)
        self._owner = True  # closes the worker; views made by with_settings do not

    def with_settings(
        self,
        margin: float | None = None,
        floor: PrivacyFloor | None | object = _TOKEN,
        min_aspect: float | None = None,
    ) -> Redactor:
        """A redactor with this one's anonymizer, fill, time limit and worker, and its own ``margin``,
        ``min_aspect`` and ``floor`` (``None``: no floor; left out: this one's). Closing it leaves the
        shared worker running."""
        view = copy.copy(self)
        if margin is not None:
            view.margin = float(margin)
            if not view.margin >= 0:
                raise ValueError(f"ANONYMIZER.MARGIN must be >= 0, got {margin}")
        if min_aspect is not None:
            view.min_aspect = _checked_aspect(min_aspect)
        if floor is not _TOKEN:
            view.floor = floor  # type: ignore[assignment]
        view._owner = False
        return view

    def regions(
        self, boxes: Sequence[Sequence[float]], width: int, height: int
    ) -> list[tuple[int, int, int, int] | None]:
        """The pixel region each box masks in a ``width`` × ``height`` frame (None: empty after clipping)."""
        return [expand_and_clip(b, self.margin, width, height, self.min_aspect) for b in boxes]

    def _call(self, crops: list[np.ndarray]) -> tuple[list[np.ndarray], Any]:
        """(the crops to paste, the learned bundle's whole ProtectedBatch or None)."""
        if self._batch:  # checked in __init__: only learned bundles have it
            learned: Any = self.anonymizer
            batch = learned.protect_batch(crops)
            return batch.released, batch
        return self.anonymizer.protect(crops), None

    def _protect(self, crops: list[np.ndarray]) -> tuple[tuple[list[np.ndarray], Any] | None, str]:
        """Run the anonymizer under the time limit. Returns ((crops, batch) or None, reason when None)."""
        worker = self._worker
        if worker.pool is None:
            try:
                return self._call(crops), ""
            except Exception as exc:
                return None, f"anonymizer raised {type(exc).__name__}: {exc}"
        if worker.pending is not None and not worker.pending.done():
            return None, "anonymizer still busy with an earlier frame (falling behind)"
        worker.pending = worker.pool.submit(self._call, crops)
        try:
            return worker.pending.result(timeout=self.timeout_s), ""
        except FutureTimeout:
            return None, f"anonymizer took longer than {self.timeout_s:.2f}s"
        except Exception as exc:
            return None, f"anonymizer raised {type(exc).__name__}: {exc}"

    def redact(self, image: np.ndarray, boxes: Sequence[Sequence[float]]) -> RedactionResult:
        """Return a redacted copy of ``image``; ``image`` itself is never modified."""
        h, w = image.shape[:2]
        out = image.copy()
        regions = self.regions(boxes, w, h)
        for r in regions:  # fail closed first: every region solid before anything else can go wrong
            if r is not None:
                out[r[1] : r[3], r[0] : r[2]] = self.fill
        # smallest first, so the largest region over a pixel is painted last (see the class docstring)
        placed = sorted(((i, r) for i, r in enumerate(regions) if r is not None), key=lambda p: _area(p[1]))
        valid = [i for i, _ in placed]
        protected: list[np.ndarray | None] = [None] * len(regions)
        result = RedactionResult(RedactedFrame(out, _TOKEN), regions, protected)
        if not valid:
            return result
        crops = [np.ascontiguousarray(image[r[1] : r[3], r[0] : r[2]]) for _, r in placed]
        returned, reason = self._protect(crops)
        outputs, batch = returned if returned is not None else (None, None)
        if outputs is None or len(outputs) != len(crops):
            if outputs is not None:
                reason = reason or f"anonymizer returned {len(outputs)} crops for {len(crops)}"
            result.fallback_masks = len(valid)
            result.reasons.append(reason)
            log.warning("masked %d region(s) solid: %s", len(valid), reason)
            return result
        for (i, region), crop, prot in zip(placed, crops, outputs, strict=True):
            if not isinstance(prot, np.ndarray) or prot.shape != crop.shape or prot.dtype != np.uint8:
                result.fallback_masks += 1
                got = getattr(prot, "shape", type(prot).__name__), getattr(prot, "dtype", "")
                result.reasons.append(f"wrong output {got} for crop {crop.shape} uint8")
                continue
            if prot is crop or np.array_equal(prot, crop):  # an 'anonymizer' that changed nothing leaks
                result.fallback_masks += 1
                result.reasons.append("anonymizer returned the crop unchanged")
                continue
            refused = self.floor.reason(crop, prot) if self.floor is not None else None
            if refused:  # protected in name only: the region stays solid
                result.floor_masks += 1
                result.reasons.append(refused)
                continue
            x1, y1, x2, y2 = region
            out[y1:y2, x1:x2] = prot
            protected[i] = prot
        for i, (x1, y1, x2, y2) in placed:  # a region that could not be protected stays solid, whatever overlaps it
            if protected[i] is None:
                out[y1:y2, x1:x2] = self.fill
        if self.floor is not None:
            self._judge_composed(image, out, boxes, placed, result)
        if batch is not None and len(batch.released) == len(valid):
            # only for regions that went out protected; the rest stayed solid
            def aligned(values: Sequence[Any]) -> list[Any]:
                per_region: list[Any] = [None] * len(regions)
                for i, value in zip(valid, values, strict=True):
                    per_region[i] = value if result.protected[i] is not None else None
                return per_region

            if self._native:
                result.native = aligned(batch.native)
            result.sealed = aligned(batch.sealed)
            result.for_reid = aligned(batch.for_reid)
        if result.fallback_masks:
            log.warning("masked %d region(s) solid: %s", result.fallback_masks, result.reasons[-1])
        elif result.floor_masks:
            log.debug("privacy floor: %d region(s) left solid: %s", result.floor_masks, result.reasons[-1])
        return result

    def _judge_composed(
        self,
        image: np.ndarray,
        out: np.ndarray,
        boxes: Sequence[Sequence[float]],
        placed: list[tuple[int, tuple[int, int, int, int]]],
        result: RedactionResult,
    ) -> None:
        """The floor again, on each protected box of the composed frame: the crop check judged a whole
        region, but the person is the box inside it (and overlapping regions were painted over it)."""
        assert self.floor is not None
        for i, region in placed:
            if result.protected[i] is None:
                continue
            x1, y1, x2, y2 = inner_box(boxes[i], region)
            if y2 - y1 < MIN_HEIGHT or x2 <= x1:
                continue  # too small to measure at the comparison size; its crop was judged already
            refused = self.floor.reason(image[y1:y2, x1:x2], out[y1:y2, x1:x2])
            if refused:
                rx1, ry1, rx2, ry2 = region
                out[ry1:ry2, rx1:rx2] = self.fill
                result.protected[i] = None
                result.floor_masks += 1
                result.reasons.append(f"on the composed frame: {refused}")

    def mask_all(self, image: np.ndarray, boxes: Sequence[Sequence[float]] = ()) -> RedactionResult:
        """The whole frame solid: nothing in it can be vouched for (e.g. a background model warming up)."""
        out = np.empty_like(image)
        out[...] = self.fill
        h, w = image.shape[:2]
        regions = self.regions(boxes, w, h)
        return RedactionResult(
            RedactedFrame(out, _TOKEN),
            regions,
            [None] * len(regions),
            fallback_masks=sum(r is not None for r in regions),
        )

    def close(self) -> None:
        if self._owner and self._worker.pool is not None:
            self._worker.pool.shutdown(wait=False, cancel_futures=True)
