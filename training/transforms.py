"""Image loading, the desensitized twin M, and augmentations applied identically to (O, M).

The paper trains on pairs: a raw image O and its desensitized version M. Any augmentation must
hit both the same way (same flip, same crop, same erased rectangle), otherwise the L1 term of
the anonymizer and the hybrid Re-ID loss would compare misaligned images. We therefore stack the
pair into one [2, 3, H, W] tensor and augment the stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from anonymizer.baselines import desensitize


def read_rgb(path: str) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); a clear error for unreadable files."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize_hw(img: np.ndarray, size_hw: Sequence[int], nearest: bool = False) -> np.ndarray:
    h, w = int(size_hw[0]), int(size_hw[1])
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def make_pair(
    rgb: np.ndarray,
    img_size: Sequence[int],
    kind: str,
    radius: float,
    desens_size: Sequence[int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(O, M) at ``img_size``: M is computed at ``desens_size`` (the paper's 256×128) and resized
    with nearest neighbour, so mosaic blocks stay sharp and noise keeps its per-pixel sigma."""
    raw = resize_hw(rgb, img_size)
    work = resize_hw(rgb, desens_size)
    des = resize_hw(desensitize(work, kind, radius, rng), img_size, nearest=True)
    return raw, des


def to_tensor_pair(raw: np.ndarray, des: np.ndarray) -> torch.Tensor:
    """Stack two uint8 HWC images into a float [2, 3, H, W] tensor in [0, 1]."""
    return torch.from_numpy(np.stack([raw, des])).permute(0, 3, 1, 2).float().div_(255.0)


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PairedTrainTransform:
    """Flip (``INPUT.PROB``), zero-pad ``INPUT.PADDING`` + random crop, normalise, random erasing
    (``INPUT.RE_PROB``; area 2–40 %, aspect 0.3–3.3, filled with the mean colour, i.e. 0 after
    normalisation), each drawn once and applied to both images of the pair."""

    def __init__(
        self,
        flip_prob: float,
        padding: int,
        erase_prob: float,
        mean: Sequence[float],
        std: Sequence[float],
        generator: torch.Generator | None = None,
    ) -> None:
        self.flip_prob, self.padding, self.erase_prob = flip_prob, int(padding), erase_prob
        self.normalize = Normalize(mean, std)
        self.generator = generator

    @classmethod
    def from_cfg(cls, cfg) -> PairedTrainTransform:
        return cls(cfg.INPUT.PROB, cfg.INPUT.PADDING, cfg.INPUT.RE_PROB, cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _randint(self, low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (), generator=self.generator))

    def __call__(self, pair: torch.Tensor) -> torch.Tensor:
        _, _, h, w = pair.shape
        if self._rand() < self.flip_prob:
            pair = pair.flip(-1)
        if self.padding > 0:
            p = self.padding
            pair = F.pad(pair, (p, p, p, p))
            top, left = self._randint(0, 2 * p), self._randint(0, 2 * p)
            pair = pair[:, :, top : top + h, left : left + w]
        pair = self.normalize(pair)
        if self._rand() < self.erase_prob:
            pair = self._erase(pair)
        return pair.contiguous()

    def _erase(self, pair: torch.Tensor) -> torch.Tensor:
        _, _, h, w = pair.shape
        for _ in range(100):
            area = self._rand() * (0.4 - 0.02) * h * w + 0.02 * h * w
            aspect = float(np.exp(np.log(0.3) + self._rand() * (np.log(1 / 0.3) - np.log(0.3))))
            eh, ew = int(round((area * aspect) ** 0.5)), int(round((area / aspect) ** 0.5))
            if 0 < eh < h and 0 < ew < w:
                top, left = self._randint(0, h - eh), self._randint(0, w - ew)
                pair = pair.clone()
                pair[:, :, top : top + eh, left : left + ew] = 0.0
                return pair
        return pair


class TestTransform:
    """Normalisation only (evaluation)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.normalize = Normalize(mean, std)

    def __call__(self, pair: torch.Tensor) -> torch.Tensor:
        return self.normalize(pair)
