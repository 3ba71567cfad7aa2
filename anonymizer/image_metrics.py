"""Image similarity metrics of ``docs/method.md``: PSNR over a set and SSIM (11×11 Gaussian window, σ 1.5).

They decide two things: whether a protected image P is "anonymous enough" (its similarity to the raw
image O must not exceed that of the hand-made desensitization M by more than ε) and how well the
recovery R = G_R(P) restores O. The conventions follow the paper's released evaluation so that our
numbers are comparable with its tables:

* pixels on [0, 1]; PSNR = 10·log10(1 / MSE) with the MSE taken over *all pixels of the whole set*
  (not a mean of per-image PSNRs, which would overweight near-identical images);
* SSIM per channel with constants C1 = 0.01², C2 = 0.03², the Gaussian window applied with zero
  padding of 5 pixels ("same" size map, as the paper's code did), mean over the map, channels and
  images. ``padding="valid"`` gives the textbook variant without border effects.

Two entry points: torch tensors (N×C×H×W on [0, 1], used during training and evaluation) and numpy
uint8 images (used by the pipeline's tests and the recovery tool). :class:`ImageMetricMeter`
accumulates over batches so a test set never has to sit in memory at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

WINDOW_SIZE = 11
SIGMA = 1.5
C1 = 0.01**2
C2 = 0.03**2
Padding = Literal["same", "valid"]


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] pixels; ``inf`` for identical images."""
    if mse <= 0.0:
        return math.inf
    return 10.0 * math.log10(1.0 / mse)


# ----------------------------------------------------------------------------------------- torch
def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size // 2)
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    g = g / g.sum()
    w2d = torch.outer(g, g).to(device=device, dtype=dtype)
    return w2d.expand(channels, 1, size, size).contiguous()


def ssim_map_torch(
    a: torch.Tensor, b: torch.Tensor, window_size: int = WINDOW_SIZE, sigma: float = SIGMA, padding: Padding = "same"
) -> torch.Tensor:
    """Per-pixel SSIM map (N×C×H'×W') of two N×C×H×W tensors on [0, 1].

    The window shrinks (keeping σ) when an image is smaller than it, so tiny crops still score.
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() != 4:
        raise ValueError(f"ssim needs N×C×H×W tensors, got {a.dim()} dimensions")
    a = a.float()
    b = b.float()
    channels = a.shape[1]
    size = min(window_size, a.shape[2], a.shape[3])
    if size % 2 == 0:
        size -= 1
    size = max(size, 1)
    win = _gaussian_window(size, sigma, channels, a.device, a.dtype)
    pad = size // 2 if padding == "same" else 0

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, win, padding=pad, groups=channels)

    mu_a, mu_b = filt(a), filt(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = filt(a * a) - mu_aa
    var_b = filt(b * b) - mu_bb
    cov = filt(a * b) - mu_ab
    return ((2 * mu_ab + C1) * (2 * cov + C2)) / ((mu_aa + mu_bb + C1) * (var_a + var_b + C2))


def ssim_torch(
    a: torch.Tensor, b: torch.Tensor, reduction: Literal["mean", "none"] = "mean", padding: Padding = "same"
) -> torch.Tensor:
    """SSIM of two N×C×H×W tensors on [0, 1]: the mean (scalar) or one value per image (N,)."""
    m = ssim_map_torch(a, b, padding=padding)
    per_image = m.flatten(1).mean(1)
    return per_image.mean() if reduction == "mean" else per_image


def psnr_torch(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two tensors on [0, 1], MSE over every element of the batch."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return psnr_from_mse(mse)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize(mean, std)`` and clamp to [0, 1], so metrics see real pixel values."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0.0, 1.0)


class ImageMetricMeter:
    """Set-level PSNR and mean SSIM accumulated over batches of [0, 1] tensors.

    PSNR uses the summed squared error over the whole set (``docs/method.md``); SSIM is the mean over images.
    """

    def __init__(self) -> None:
        self.sq_err = 0.0
        self.n_elems = 0
        self.ssim_sum = 0.0
        self.n_images = 0

    @torch.no_grad()
    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a = a.detach().float().clamp(0, 1)
        b = b.detach().float().clamp(0, 1)
        self.sq_err += torch.sum((a - b) ** 2).item()
        self.n_elems += a.numel()
        self.ssim_sum += ssim_torch(a, b, reduction="none").sum().item()
        self.n_images += a.shape[0]

    @property
    def psnr(self) -> float:
        return psnr_from_mse(self.sq_err / max(self.n_elems, 1))

    @property
    def ssim(self) -> float:
        return self.ssim_sum / max(self.n_images, 1)

    def as_dict(self) -> dict[str, float]:
        return {"psnr": round(self.psnr, 4), "ssim": round(self.ssim, 5), "n_images": self.n_images}


# ----------------------------------------------------------------------------------------- numpy
def _to_nchw(img: np.ndarray) -> torch.Tensor:
    """uint8 H×W or H×W×C image → 1×C×H×W float tensor on [0, 1]."""
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {img.dtype}")
    arr = img[..., None] if img.ndim == 2 else img
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def ssim_uint8(a: np.ndarray, b: np.ndarray, padding: Padding = "same") -> float:
    """SSIM of two same-shape uint8 images (BGR or grey); channel order does not matter."""
    if a.shape != b.shape:
        raise ValueError(f"ssim_uint8 needs equal shapes, got {a.shape} and {b.shape}")
    with torch.no_grad():
        return float(ssim_torch(_to_nchw(a), _to_nchw(b), padding=padding).item())


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two same-shape uint8 images on the [0, 1] scale."""
    if a.shape != b.shape:
        raise ValueError(f"psnr_uint8 needs equal shapes, got {a.shape} and {b.shape}")
    d = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    return psnr_from_mse(float(np.mean(d * d)))


def set_metrics_uint8(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Set-level PSNR (MSE pooled over all pixels) and mean SSIM of (a, b) uint8 image pairs.

    Images in the set may differ in size from pair to pair (e.g. person crops of a video).
    """
    sq_err, n_elems, ssim_sum, n = 0.0, 0, 0.0, 0
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"pair shapes differ: {a.shape} vs {b.shape}")
        d = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
        sq_err += float(np.sum(d * d))
        n_elems += d.size
        ssim_sum += ssim_uint8(a, b)
        n += 1
    return {"psnr": psnr_from_mse(sq_err / max(n_elems, 1)), "ssim": ssim_sum / max(n, 1), "n_images": n}
