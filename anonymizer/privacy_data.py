"""Images and protections of the privacy evaluation: one split, one working size, uint8 everywhere.

Why uint8: whatever an outsider obtains (video, crops, a sidecar) holds 8-bit pixels, so every
protected image is rounded to uint8 before any attacker, detector or metric sees it; the bundle's
own C and G_R get the same rounded pixels.

Why one working size: all images (raw O, learned P = G(O), hand-made M) are compared at the
bundle's input size (e.g. 128×64 H×W): that is where G works and where P has the most detail an
attacker could use. Raw crops are resized to it once (area/linear, as the bundle's own
preprocessing does); Re-ID attackers resize from it to their input size. Arrays are N×H×W×3 RGB.

Person images are kept in memory only; nothing here writes an image to disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from anonymizer.baselines import DEFAULT_PARAMS, BaselineAnonymizer
from reid.datasets import Item, load_dataset

log = logging.getLogger(__name__)

IDENTITY_NAMES = ("none", "identity")


@dataclass
class Split:
    """Test queries/gallery and training images of one dataset split at the working size."""

    query: np.ndarray  # N_q×H×W×3 RGB uint8
    gallery: np.ndarray
    q_pids: np.ndarray
    q_cams: np.ndarray
    g_pids: np.ndarray
    g_cams: np.ndarray
    train: np.ndarray  # N_t×H×W×3 RGB uint8 (training identities, disjoint from the test ones)
    train_labels: np.ndarray  # contiguous 0..K-1
    notes: list[str] = field(default_factory=list)

    @property
    def num_test_ids(self) -> int:
        return len(set(self.q_pids.tolist()) | set(self.g_pids.tolist()))

    @property
    def num_train_ids(self) -> int:
        return len(set(self.train_labels.tolist()))

    def describe(self) -> dict[str, int]:
        return {
            "test_identities": self.num_test_ids,
            "queries": len(self.query),
            "gallery": len(self.gallery),
            "train_identities": self.num_train_ids,
            "train_images": len(self.train),
        }


def read_rgb(path: str, size_hw: tuple[int, int]) -> np.ndarray:
    """One image file as RGB uint8 at ``size_hw`` (area when shrinking both sides, else linear)."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    h, w = size_hw
    interp = cv2.INTER_AREA if (bgr.shape[0] > h and bgr.shape[1] > w) else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(bgr, (w, h), interpolation=interp)[:, :, ::-1])


def _read_all(items: list[Item], size_hw: tuple[int, int]) -> np.ndarray:
    out = np.empty((len(items), size_hw[0], size_hw[1], 3), np.uint8)
    for i, (path, _, _) in enumerate(items):
        out[i] = read_rgb(path, size_hw)
    return out


def load_split(
    root: str | Path,
    name: str,
    size_hw: tuple[int, int],
    split_seed: int = 0,
    max_ids: int | None = None,
    max_train_ids: int | None = None,
) -> Split:
    """The dataset's standard test split (and all its training identities) at ``size_hw``.

    ``max_ids``: keep only the first N test identities (sorted), queries and gallery alike;
    ``max_train_ids``: the first N training identities. No validation is carved: the attackers
    may use every training identity, none of which is a test identity.
    """
    ds = load_dataset(root, name, split_seed=split_seed, val_fraction=0.0)
    query, gallery, train = list(ds.query), list(ds.gallery), list(ds.train)
    notes = list(ds.notes)
    if max_ids:
        keep = set(sorted({p for _, p, _ in query if p >= 0})[: int(max_ids)])
        query = [it for it in query if it[1] in keep]
        gallery = [it for it in gallery if it[1] in keep]
        notes.append(f"first {len(keep)} test identities only (--max-ids {max_ids})")
    if max_train_ids:
        keep = set(sorted({p for _, p, _ in train})[: int(max_train_ids)])
        train = [it for it in train if it[1] in keep]
        notes.append(f"first {len(keep)} training identities only (--max-train-ids {max_train_ids})")
    test_paths = {p for p, _, _ in query + gallery}  # train labels are relabelled: compare files
    if any(p in test_paths for p, _, _ in train):
        raise ValueError(f"{name}: training and test images overlap; the split is broken")
    labels = {pid: i for i, pid in enumerate(sorted({p for _, p, _ in train}))}
    log.info(
        "%s: %d queries, %d gallery images of %d test identities; %d training images of %d identities",
        name,
        len(query),
        len(gallery),
        len({p for _, p, _ in query + gallery}),
        len(train),
        len(labels),
    )
    return Split(
        query=_read_all(query, size_hw),
        gallery=_read_all(gallery, size_hw),
        q_pids=np.array([p for _, p, _ in query]),
        q_cams=np.array([c for _, _, c in query]),
        g_pids=np.array([p for _, p, _ in gallery]),
        g_cams=np.array([c for _, _, c in gallery]),
        train=_read_all(train, size_hw),
        train_labels=np.array([labels[p] for _, p, _ in train]),
        notes=notes,
    )


# ----------------------------------------------------------------------------------- protections
@dataclass
class Protection:
    """A named protection: ``apply`` maps raw images (N×H×W×3 RGB uint8) to protected ones.

    ``kind`` is ``learned`` (the bundle's G), ``baseline`` (a hand-made M) or ``identity`` (no
    protection at all: a deliberate leak, to check that the harness can tell one).

    ``release`` (None: what ``apply`` gives is what leaves the pipeline) maps protected images to
    what the pipeline publishes and the sealed per-image seeds that undo it: a bundle whose G writes
    a payload on a mosaic is scrambled after G (:mod:`anonymizer.scramble`). The bundle's own C
    reads the protected images inside the pipeline, before the scramble; everyone else, and every
    attack, sees the released ones.
    """

    name: str
    kind: str
    apply: Callable[[np.ndarray], np.ndarray]
    spec: dict = field(default_factory=dict)
    release: Callable[[np.ndarray], tuple[np.ndarray, list[bytes]]] | None = None


def to_unit(images: np.ndarray) -> np.ndarray:
    """N×H×W×3 RGB uint8 → N×3×H×W float32 on [0, 1] (the bundle's layout)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def from_unit(unit: np.ndarray) -> np.ndarray:
    """N×3×H×W on [0, 1] → N×H×W×3 uint8, rounded (what a stored image holds)."""
    return np.ascontiguousarray((np.clip(unit, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1))


def learned_protection(bundle, batch: int = 256, seed: int = 0) -> Protection:
    """The bundle's G (``protect_unit``) at its own input size, rounded to uint8; for a scrambling
    bundle also its ``release``, whose scramble seeds come from a generator seeded with ``seed`` (the
    pipeline draws them at random; here the numbers must repeat)."""

    def apply(images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        for start in range(0, len(images), batch):
            sl = slice(start, start + batch)
            out[sl] = from_unit(bundle.protect_unit(to_unit(images[sl])))
        return out

    spec = {"generator": bundle.meta["generator"]["spec"], "fingerprint": bundle.fingerprint}
    scrambler = bundle.scrambler
    if scrambler is None:
        return Protection(name="learned", kind="learned", apply=apply, spec=spec)

    rng = np.random.default_rng(seed)

    def release(images: np.ndarray) -> tuple[np.ndarray, list[bytes]]:
        released = [scrambler.release(img, rng.bytes(32)) for img in images]
        out = np.stack([r for r, _ in released]) if released else images.copy()
        return out, [sealed for _, sealed in released]

    spec["released"] = f"scrambled on blocks of {scrambler.block} px, a fresh sealed seed per image"
    return Protection(name="learned", kind="learned", apply=apply, spec=spec, release=release)


def parse_baseline(text: str, seed: int = 0) -> Protection:
    """``mosaic:24`` | ``blur:12`` | ``noise:0.5`` | ``none`` (a kind without a value takes its default).

    Raises ValueError with the accepted forms for anything else.
    """
    kind, _, value = text.strip().partition(":")
    kind = kind.lower()
    if kind in IDENTITY_NAMES:
        return Protection(name="none", kind="identity", apply=lambda images: images.copy(), spec={"kind": "none"})
    if kind not in DEFAULT_PARAMS:
        raise ValueError(f"unknown baseline '{text}' (expected mosaic[:BLOCK], blur[:RADIUS], noise[:SIGMA] or none)")
    try:
        param = float(value) if value else float(DEFAULT_PARAMS[kind])
    except ValueError:
        raise ValueError(f"baseline '{text}': '{value}' is not a number") from None
    if param <= 0:
        raise ValueError(f"baseline '{text}': the parameter must be positive")
    anonymizer = BaselineAnonymizer(kind, param, _rng=np.random.default_rng(seed))

    def apply(images: np.ndarray) -> np.ndarray:
        # channel-symmetric desensitizations, so RGB in = RGB out; computed at 256×128 and resized back
        return np.stack([anonymizer.protect_one(img) for img in images]) if len(images) else images.copy()

    name = f"{kind}:{param:g}"
    return Protection(
        name=name,
        kind="baseline",
        apply=apply,
        spec={"kind": kind, "param": param, "computed_at_hw": list(anonymizer.work_size_hw)},
    )
