"""Attacks that train: the adaptive Re-ID attacker and the learned recovery (inversion) attack.

Both stand for an outsider who holds the bundle's G (it ships in every bundle, so anyone with the
pipeline's files has it) and public data of *other* people: they can make as many (O, P = G(O))
pairs as they like. Both train only on the split's training identities, which are disjoint from
the test identities they are scored on, and both run for a fixed budget so that runs compare.

* :func:`train_adaptive_attacker`: a public Re-ID model (ONNX, made trainable with
  :func:`reid.models.build_reid_model` ``("onnx", ...)``) fine-tuned on raw and protected images
  of the training identities with label-smoothed cross-entropy + a batch-hard triplet loss. Each
  batch holds P identities × K images, each image both raw and protected, so the triplet loss pulls
  an image's raw and protected versions (and other images of the person) together: what the
  raw→protected and protected→protected attacks need.
* :func:`train_recovery_attack`: a small pix2pix U-Net (``anonymizer.networks``) trained with L1
  to map P back to O, i.e. an inversion of G learned from its outputs, without the sealed G_R.

For a hand-made baseline M the same attacks train on M instead of G's outputs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from anonymizer.privacy_attackers import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from anonymizer.networks import GeneratorSpec

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- adaptive Re-ID attacker
@dataclass
class AdaptiveConfig:
    """Fixed budget and recipe of the adaptive attacker (recorded in privacy.json)."""

    iters: int = 100
    batch: int = 32  # images per batch, raw and protected versions counted separately
    images_per_id: int = 2  # K: images per identity in a batch (each raw + protected)
    lr: float = 1e-4  # Adam, backbone; the new BN-neck and classifier get 10× (3.5e-4 wrecked the
    # BN-folded public weights within 20 iterations; 1e-4 gained most in 40)
    weight_decay: float = 5e-4
    margin: float = 0.3  # batch-hard triplet margin on the pre-neck feature
    label_smoothing: float = 0.1
    flip: float = 0.5  # horizontal-flip probability (same flip for an image's two versions)
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def imagenet_tensor(images: np.ndarray) -> torch.Tensor:
    """N×H×W×3 RGB uint8 → ImageNet-normalised N×3×H×W float tensor."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def batch_hard_triplet(feat: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances of ``feat``."""
    dist = torch.cdist(feat, feat).clamp_min(1e-12)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same.float()).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin).mean()


class PKSampler:
    """Batches of P identities × K images (indices into the training arrays), seeded."""

    def __init__(self, labels: np.ndarray, ids_per_batch: int, images_per_id: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.by_id = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        self.ids = np.array(sorted(self.by_id))
        self.p = max(2, min(ids_per_batch, len(self.ids)))
        self.k = max(1, images_per_id)

    def __call__(self) -> np.ndarray:
        chosen = self.rng.choice(self.ids, size=self.p, replace=False)
        picks = []
        for c in chosen:
            pool = self.by_id[int(c)]
            picks.append(self.rng.choice(pool, size=self.k, replace=len(pool) < self.k))
        return np.concatenate(picks)


def build_attacker(onnx_path: str | Path, num_classes: int):
    """The outside model's ONNX graph as a trainable ReidModel taking ImageNet-normalised input.

    Its retrieval feature is the one *before* the new BN-neck (``neck_feat="before"``): the public
    model's own embedding, fine-tuned. Why: a BN-neck's running statistics need many iterations to
    settle, and with a short budget the "after" feature is worse than the untouched public model,
    which would make the adaptive attacker look weaker than the attacker it started from. With
    "before", zero iterations give exactly the outside model's ranking.
    """
    from reid.models import build_reid_model

    return build_reid_model(
        "onnx",
        num_classes=num_classes,
        onnx_path=str(onnx_path),
        pixel_mean=IMAGENET_MEAN,
        pixel_std=IMAGENET_STD,
        neck_feat="before",
    )


def _flipped(rng: np.random.Generator, p: float, *batches: np.ndarray) -> tuple[np.ndarray, ...]:
    """The same random horizontal flips applied to paired NHWC batches (raw and protected stay aligned)."""
    flip = rng.random(len(batches[0])) < p
    return tuple(np.where(flip[:, None, None, None], b[:, :, ::-1], b) for b in batches)


def _optimise(
    module: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch_loss: Callable[[], torch.Tensor],
    iters: int,
    desc: str,
) -> tuple[list[float], float]:
    """Run ``iters`` optimiser steps on ``batch_loss()``; leaves ``module`` in eval mode.

    Returns the per-step losses and the wall time in seconds (rounded), which go into the attack's log.
    """
    from tqdm import tqdm

    losses: list[float] = []
    start = time.perf_counter()
    module.train()
    for _ in tqdm(range(iters), desc=desc, leave=False, mininterval=5.0, disable=None):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    module.eval()
    return losses, round(time.perf_counter() - start, 2)


def train_adaptive_attacker(
    onnx_path: str | Path,
    train_raw: np.ndarray,
    train_prot: np.ndarray,
    labels: np.ndarray,
    cfg: AdaptiveConfig,
    desc: str = "adaptive",
) -> tuple[torch.nn.Module, dict]:
    """Fine-tune the model at ``onnx_path`` on (raw, protected) training images; returns (model, log).

    The returned model is in eval mode (its forward gives the retrieval embedding).
    """

    torch.manual_seed(cfg.seed)
    num_classes = int(labels.max()) + 1
    model = build_attacker(onnx_path, num_classes)
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.Adam(
        [{"params": backbone, "lr": cfg.lr}, {"params": head, "lr": 10 * cfg.lr}], weight_decay=cfg.weight_decay
    )
    sampler = PKSampler(labels, cfg.batch // (2 * cfg.images_per_id), cfg.images_per_id, cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    targets_all = torch.from_numpy(labels.astype(np.int64))

    def batch_loss() -> torch.Tensor:
        idx = sampler()
        raw, prot = _flipped(rng, cfg.flip, train_raw[idx], train_prot[idx])
        x = imagenet_tensor(np.concatenate([raw, prot]))
        y = torch.cat([targets_all[idx], targets_all[idx]])
        logits, feat = model(x)
        return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing) + batch_hard_triplet(feat, y, cfg.margin)

    losses, seconds = _optimise(model, opt, batch_loss, cfg.iters, desc)
    info = {
        "iters": cfg.iters,
        "seconds": seconds,
        "num_classes": num_classes,
        "loss_first": round(float(np.mean(losses[:10])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-10:])), 4) if losses else None,
    }
    log.info(
        "%s: %d iterations in %.0f s, loss %s → %s",
        desc,
        cfg.iters,
        info["seconds"],
        info["loss_first"],
        info["loss_last"],
    )
    return model, info


# ------------------------------------------------------------------------------- recovery attack
@dataclass
class RecoveryConfig:
    """Fixed budget and architecture of the learned recovery attack (recorded in privacy.json)."""

    iters: int = 200
    batch: int = 16
    lr: float = 2e-4  # Adam, betas (0.5, 0.999), pix2pix's setting
    ngf: int = 16
    num_downs: int = 5  # U-Net depth (capped to the image size)
    flip: float = 0.5
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _to_pm1(images: np.ndarray) -> torch.Tensor:
    """N×H×W×3 uint8 → N×3×H×W on [-1, 1] (the generators' convention)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class ResidualDecoder(torch.nn.Module):
    """``D(P) = clamp(P + net(P))`` with the network's last layer zero-initialised.

    Why: a decoder that starts as the identity is never worse than handing back P itself, so even
    a short budget measures what the attacker *adds* to what P already shows (PSNR(O, P)); a plain
    U-Net starts far below that and would understate the attack.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        from anonymizer.networks import zero_last_layer

        self.net = net
        zero_last_layer(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.net(x)).clamp(-1.0, 1.0)


def payload_reader_spec(
    generator_spec: dict | None, cfg: RecoveryConfig, image_hw: tuple[int, int]
) -> GeneratorSpec | None:
    """The spec of a payload reader an attacker builds from G's public spec, or None without a payload.

    Why: a G that writes a scattered recovery code (``anonymizer.payload``) stores the code's scale,
    its permutation seed and the mosaic grid it is written on in ``bundle.yaml``, next to G itself.
    That is no secret, so an attacker who holds G can un-permute the code as the key holder's G_R
    does; a generic decoder that ignores it would understate the attack. The reader's own network
    keeps the attack's budget (``cfg.ngf``, ``cfg.num_downs``).
    """
    from anonymizer.networks import GeneratorSpec, max_unet_downs

    if not generator_spec or generator_spec.get("payload_role") != "write":
        return None
    return GeneratorSpec(
        "unet",
        cfg.ngf,
        "batch",
        num_downs=min(cfg.num_downs, max_unet_downs(image_hw)),
        payload_role="read",
        payload_scale=float(generator_spec["payload_scale"]),
        payload_seed=int(generator_spec.get("payload_seed", 0)),
        payload_lowpass_block=int(generator_spec.get("skip_mosaic_block", 0)),
    )


def train_recovery_attack(
    train_prot: np.ndarray,
    train_raw: np.ndarray,
    cfg: RecoveryConfig,
    desc: str = "recovery",
    reader: GeneratorSpec | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train a decoder on (protected, raw) training pairs with L1; returns (decoder, log).

    The decoder is a U-Net that starts as the identity, or the payload reader ``reader``
    (:func:`payload_reader_spec`, built from G's public spec).
    """

    from anonymizer.networks import UNetGenerator, build_generator, count_parameters, init_weights, max_unet_downs

    torch.manual_seed(cfg.seed)
    net: torch.nn.Module
    if reader is not None:
        downs, kind = reader.num_downs, "payload reader (G's public payload spec)"
        net = build_generator(reader)
    else:
        downs, kind = min(cfg.num_downs, max_unet_downs(train_raw.shape[1:3])), "residual U-Net"
        unet = UNetGenerator(3, 3, downs, cfg.ngf, "batch")
        init_weights(unet)
        net = ResidualDecoder(unet)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    rng = np.random.default_rng(cfg.seed)

    def batch_loss() -> torch.Tensor:
        idx = rng.choice(len(train_raw), size=min(cfg.batch, len(train_raw)), replace=False)
        prot, raw = _flipped(rng, cfg.flip, train_prot[idx], train_raw[idx])
        return F.l1_loss(net(_to_pm1(prot)), _to_pm1(raw))

    losses, seconds = _optimise(net, opt, batch_loss, cfg.iters, desc)
    info = {
        "iters": cfg.iters,
        "seconds": seconds,
        "decoder": kind,
        "num_downs": downs,
        "parameters": count_parameters(net),
        "l1_first": round(float(np.mean(losses[:10])), 4) if losses else None,
        "l1_last": round(float(np.mean(losses[-10:])), 4) if losses else None,
    }
    log.info(
        "%s: %s, %d iterations in %.0f s, L1 %s → %s",
        desc,
        kind,
        cfg.iters,
        info["seconds"],
        info["l1_first"],
        info["l1_last"],
    )
    return net, info


def strongest_recovery_attack(
    train_prot: np.ndarray,
    train_raw: np.ndarray,
    prot_all: np.ndarray,
    raw_all: np.ndarray,
    cfg: RecoveryConfig,
    name: str,
    generator_spec: dict | None,
    scramble_block: int = 0,
) -> dict[str, Any]:
    """The learned recovery attack: a generic decoder and, on a G that writes a payload, also a payload
    reader built from G's public spec; the one that restores the evaluated crops best is reported (as
    the strongest Re-ID attacker is), all are kept under ``candidates``.

    Why both: the payload reader knows where the code is, but starts from G_R's linear guess of it,
    which a learned code need not match; at a small budget the generic decoder can be the stronger.
    With ``scramble_block`` (released crops scrambled on that grid, :mod:`anonymizer.scramble`) a
    third decoder reads each block's sorted pixels (:func:`~anonymizer.scramble.sorted_blocks`),
    which strips the unknown permutation and keeps all that the scramble leaves to be read.
    """
    from anonymizer.scramble import sorted_blocks

    readers: list[GeneratorSpec | None] = [None]
    payload = payload_reader_spec(generator_spec, cfg, (int(train_raw.shape[1]), int(train_raw.shape[2])))
    if payload is not None:
        readers.append(payload)
    candidates: list[dict[str, Any]] = []
    for reader in readers:
        decoder, info = train_recovery_attack(train_prot, train_raw, cfg, desc=f"recovery {name}", reader=reader)
        candidates.append({"train": info, **image_similarity(raw_all, reconstruct(decoder, prot_all))})
        del decoder
    if scramble_block:

        def sort_all(images: np.ndarray) -> np.ndarray:
            return np.stack([sorted_blocks(img, scramble_block) for img in images]) if len(images) else images

        decoder, info = train_recovery_attack(sort_all(train_prot), train_raw, cfg, desc=f"recovery {name}")
        info["decoder"] = f"residual U-Net on each {scramble_block}-px block's sorted pixels"
        candidates.append({"train": info, **image_similarity(raw_all, reconstruct(decoder, sort_all(prot_all)))})
        del decoder
    best = max(candidates, key=lambda c: float(c["psnr"]))
    return {**best, "candidates": {c["train"]["decoder"]: {k: c[k] for k in ("psnr", "ssim")} for c in candidates}}


@torch.inference_mode()
def reconstruct(net: torch.nn.Module, protected: np.ndarray, batch: int = 64) -> np.ndarray:
    """The decoder's reconstructions of protected images (uint8 in, uint8 out, same layout)."""
    out = np.empty_like(protected)
    for s in range(0, len(protected), batch):
        y = (net(_to_pm1(protected[s : s + batch])) + 1.0) * 127.5
        out[s : s + batch] = (y.clamp(0, 255) + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def image_similarity(a: np.ndarray, b: np.ndarray, batch: int = 256) -> dict[str, float]:
    """Set PSNR (dB, MSE pooled over all pixels) and mean SSIM of two uint8 N×H×W×3 image sets."""
    from anonymizer.image_metrics import ImageMetricMeter

    meter = ImageMetricMeter()
    for s in range(0, len(a), batch):
        ta = torch.from_numpy(np.ascontiguousarray(a[s : s + batch])).permute(0, 3, 1, 2).float() / 255.0
        tb = torch.from_numpy(np.ascontiguousarray(b[s : s + batch])).permute(0, 3, 1, 2).float() / 255.0
        meter.update(ta, tb)
    d = meter.as_dict()
    return {
        "psnr": round(float(d["psnr"]), 3) if np.isfinite(d["psnr"]) else float("inf"),
        "ssim": round(float(d["ssim"]), 4),
        "n_images": int(d["n_images"]),
    }
