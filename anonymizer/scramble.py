"""A keyed scramble of a payload-carrying protected crop: what makes the recovery code readable only
to the key holder.

Why. A G that writes a scattered recovery code (:mod:`anonymizer.payload`) publishes where the code
is: the scatter's seed, scale and grid are in ``bundle.yaml``, because G_R must find it. Whoever has
the bundle can therefore train a payload reader of their own from G's public spec, and the privacy
harness measured that such a reader comes within 2 dB of the key holder's G_R. A secret inside G
would not help either: G ships to every pipeline and is public by the threat model.

What. After G, every protected crop (at the bundle's size, where the code was written) has the pixels
inside each block of the mosaic's grid permuted, each channel on its own, by a permutation drawn
from a fresh random 32-byte seed per crop. On a mosaic-skip G (``MODEL.G_SKIP_MOSAIC``) this keeps
the picture's visible part, the block means, exactly (the mosaic is what the privacy bound and the
outside attackers were measured against), and turns everything finer than a block, the code and G's
own residual detail alike, into noise with no spatial order. The seed is sealed to the key holder:
an X25519 key pair is derived from the recovery key (HKDF-SHA256), its public half is stored in
``bundle.yaml`` when the bundle is exported, and each seed is encrypted to it (ephemeral X25519,
HKDF-SHA256, AES-256-GCM: a sealed box). A pipeline needs only the public half, so it can scramble
but not unscramble, and a thief of its disk learns nothing from the seeds either. The key holder
opens the seed, undoes the permutation exactly, and G_R sees the crop it was trained on.

Why per crop and not one key per deployment: with one fixed permutation, an attacker who films
themselves past a camera has (scrambled, original) pairs, from which a decoder can learn that fixed
permutation; with a fresh seed per crop, pairs share nothing but the block means.

Where it does not apply: a G without a mosaic skip (a blur-skip G) has no block grid whose means
carry the visible picture, so scrambling would change what it looks like; such bundles keep their
public payload and say so (:func:`scramble_spec` returns None).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from anonymizer.bundle_files import G_FILE
from anonymizer.crypto import RecoveryKeyError

SEED_BYTES = 32
#: sealed seed: ephemeral public key (32) ‖ AES-GCM ciphertext of the seed (32) ‖ tag (16)
SEALED_BYTES = 32 + SEED_BYTES + 16
_PAIR_INFO = b"privreid-scramble-x25519-v1"
_BOX_INFO = b"privreid-scramble-box-v1"
_ZERO_NONCE = bytes(12)  # each box key is derived from a fresh ephemeral key and used once


# ------------------------------------------------------------------------------- the permutation
def _cells(shape_hw: tuple[int, int], block: int) -> tuple[int, int, int, int]:
    """Rows and columns of blocks, and the padded height and width (whole blocks)."""
    h, w = shape_hw
    rows, cols = -(-h // block), -(-w // block)
    return rows, cols, rows * block, cols * block


def _layout(image: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(cells, valid): ``image`` (H×W×C) zero-padded to whole blocks and laid out one block of one
    channel per row [C·rows·cols, block²]; ``valid`` marks the positions that are real pixels."""
    h, w, c = image.shape
    rows, cols, hp, wp = _cells((h, w), block)
    padded = np.zeros((hp, wp, c), image.dtype)
    padded[:h, :w] = image
    mask = np.zeros((hp, wp), bool)
    mask[:h, :w] = True

    def to_cells(a: np.ndarray) -> np.ndarray:
        a = a.reshape(rows, block, cols, block, -1).transpose(4, 0, 2, 1, 3)
        return a.reshape(a.shape[0] * rows * cols, block * block)

    cells = to_cells(padded)
    valid = np.tile(to_cells(mask[:, :, None]), (c, 1))
    return cells, valid


def _from_layout(cells: np.ndarray, shape: tuple[int, int, int], block: int) -> np.ndarray:
    h, w, c = shape
    rows, cols, hp, wp = _cells((h, w), block)
    a = cells.reshape(c, rows, cols, block, block).transpose(1, 3, 2, 4, 0).reshape(hp, wp, c)
    return np.ascontiguousarray(a[:h, :w])


def _orders(seed: bytes, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, dest) per row: the real pixels of each block, in a random order drawn from ``seed``
    (``source``) and in raster order (``dest``); padding positions follow, in raster order, in both.

    NumPy's PCG64 seeded from SHA-256 of the seed: ``tests/test_scramble.py`` pins its output, so a
    library change that altered the permutation (and made every sealed crop unreadable) fails there."""
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(hashlib.sha256(seed).digest(), "little")))
    n = valid.shape[1]
    keys = np.where(valid, rng.random(valid.shape), 2.0 + np.arange(n) / n)
    source = np.argsort(keys, axis=1)  # distinct keys: any sort gives the same order (introsort is 3x faster)
    dest = np.argsort(~valid, axis=1, kind="stable")
    return source, dest


def _checked(image: np.ndarray, block: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"scramble expects an H×W×C image, got shape {image.shape}")
    if int(block) < 2:
        raise ValueError(f"scramble block {block}: at least 2 pixels")
    return image


def scramble(image: np.ndarray, seed: bytes, block: int) -> np.ndarray:
    """``image`` (H×W×C, any dtype) with the pixels of every block×block cell of the grid anchored at
    the top-left corner permuted, each channel apart, by the permutation ``seed`` draws. Partial cells
    at the right and bottom edges are permuted among their own pixels. Each cell's mean is kept."""
    return _permute(image, seed, block, inverse=False)


def unscramble(image: np.ndarray, seed: bytes, block: int) -> np.ndarray:
    """The inverse of :func:`scramble` with the same seed and block: the original image exactly."""
    return _permute(image, seed, block, inverse=True)


def _permute(image: np.ndarray, seed: bytes, block: int, inverse: bool) -> np.ndarray:
    image = _checked(image, block)
    cells, valid = _layout(image, block)
    source, dest = _orders(seed, valid)
    take, put = (dest, source) if inverse else (source, dest)
    out = np.empty_like(cells)
    np.put_along_axis(out, put, np.take_along_axis(cells, take, axis=1), axis=1)
    return _from_layout(out, image.shape, block)


def sorted_blocks(image: np.ndarray, block: int) -> np.ndarray:
    """Each cell's pixels sorted (per channel) and laid back in raster order. The same image for every
    seed, so this is what an attacker without the seed can compute from a scrambled crop: it strips the
    permutation off and keeps exactly what the scramble does not hide, the multiset of each block's
    values (its mean, spread and histogram), with no trace of where in the block each value was."""
    image = _checked(image, block)
    cells, valid = _layout(image, block)
    dest = np.argsort(~valid, axis=1, kind="stable")  # real pixels first, in raster order
    top = np.iinfo(cells.dtype).max if np.issubdtype(cells.dtype, np.integer) else np.inf
    values = np.sort(np.where(valid, cells, top), axis=1)  # padding sorts last
    out = np.zeros_like(cells)
    np.put_along_axis(out, dest, values, axis=1)
    return _from_layout(out, image.shape, block)


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


# ---------------------------------------------------------------------------------- the sealing
def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def scramble_private_key(recovery_key: bytes) -> X25519PrivateKey:
    """The X25519 private key that opens sealed seeds, derived from the recovery key (no new secret)."""
    return X25519PrivateKey.from_private_bytes(_hkdf(recovery_key, _PAIR_INFO))


def scramble_public_key(recovery_key: bytes) -> bytes:
    """Its public half, 32 raw bytes: what ``bundle.yaml`` stores and a pipeline seals seeds to."""
    return (
        scramble_private_key(recovery_key)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def _box_key(shared: bytes, eph_public: bytes, recipient: bytes, context: bytes) -> bytes:
    return _hkdf(shared + eph_public + recipient, _BOX_INFO + b"|" + context)


def seal_seed(public_key: bytes, seed: bytes, context: bytes = b"") -> bytes:
    """``seed`` encrypted to the holder of ``public_key`` (a sealed box); ``context`` (e.g. the
    bundle's fingerprint) must be given again to open it, so a sealed seed cannot be moved to another
    bundle's crops unnoticed."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a scramble seed has {SEED_BYTES} bytes, got {len(seed)}")
    recipient = X25519PublicKey.from_public_bytes(public_key)
    eph = X25519PrivateKey.generate()
    eph_public = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = _box_key(eph.exchange(recipient), eph_public, public_key, context)
    return eph_public + AESGCM(key).encrypt(_ZERO_NONCE, seed, context)


def open_seed(private_key: X25519PrivateKey, sealed: bytes, context: bytes = b"") -> bytes:
    """The seed of a :func:`seal_seed` box; :class:`RecoveryKeyError` for a wrong key, another
    context, or a modified box."""
    if len(sealed) != SEALED_BYTES:
        raise RecoveryKeyError(f"a sealed scramble seed has {SEALED_BYTES} bytes, got {len(sealed)}")
    eph_public, ct = sealed[:32], sealed[32:]
    recipient = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = _box_key(private_key.exchange(X25519PublicKey.from_public_bytes(eph_public)), eph_public, recipient, context)
    try:
        return AESGCM(key).decrypt(_ZERO_NONCE, ct, context)
    except InvalidTag:
        raise RecoveryKeyError(
            "the recovery key does not open this crop's scramble seed: wrong key, another bundle, "
            "or a modified record (AES-GCM authentication failed)"
        ) from None


# ---------------------------------------------------------------------------------- bundle spec
@dataclass(frozen=True)
class ScrambleSpec:
    """What ``bundle.yaml`` says about the scramble (``recovery.scramble``)."""

    block: int
    public_key: bytes

    def as_meta(self) -> dict[str, Any]:
        return {
            "block": self.block,
            "public_key": self.public_key.hex(),
            "scheme": "per-crop pixel permutation inside each block and channel; seed sealed to an "
            "X25519 key derived from the recovery key (HKDF-SHA256, AES-256-GCM)",
        }


def scramble_block(generator_spec: dict[str, Any]) -> int:
    """The block a bundle's G is scrambled on: its mosaic's block when G writes a payload on a mosaic,
    else 0 (no scramble: see the module docstring)."""
    if (generator_spec or {}).get("payload_role") != "write":
        return 0
    return int((generator_spec or {}).get("skip_mosaic_block", 0) or 0)


def scramble_spec(meta: dict[str, Any]) -> ScrambleSpec | None:
    """The scramble a bundle's metadata declares, or None (no payload, no mosaic, or an older bundle)."""
    entry = ((meta or {}).get("recovery") or {}).get("scramble")
    if not entry:
        return None
    try:
        block, public_key = int(entry["block"]), bytes.fromhex(str(entry["public_key"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bundle.yaml recovery.scramble is malformed: {exc}") from None
    if block < 2 or len(public_key) != 32:
        raise ValueError("bundle.yaml recovery.scramble: block must be >= 2 and public_key 32 bytes of hex")
    return ScrambleSpec(block, public_key)


def seal_context(meta: dict[str, Any]) -> bytes:
    """What a sealed seed is bound to: the bundle's G weights (as G_R is), so a seed of one bundle's
    crops does not open as another's."""
    return f"scramble seed for G {((meta or {}).get('files') or {}).get(G_FILE, '')}".encode()


@dataclass(frozen=True)
class Scrambler:
    """The pipeline's side: scrambles a protected crop with a fresh seed and seals that seed."""

    spec: ScrambleSpec
    context: bytes

    @property
    def block(self) -> int:
        return self.spec.block

    def release(self, image: np.ndarray, seed: bytes | None = None) -> tuple[np.ndarray, bytes]:
        """(the scrambled image, its sealed seed). The seed itself is forgotten here. ``seed`` None
        (the pipeline): a fresh random one; an evaluation passes seeds of its own generator so that
        its numbers repeat."""
        seed = new_seed() if seed is None else seed
        return scramble(image, seed, self.spec.block), seal_seed(self.spec.public_key, seed, self.context)


@dataclass(frozen=True)
class Unscrambler:
    """The key holder's side: opens a crop's sealed seed and undoes its scramble."""

    block: int
    private_key: X25519PrivateKey
    context: bytes

    @classmethod
    def from_meta(cls, meta: dict[str, Any], recovery_key: bytes) -> Unscrambler | None:
        """For a bundle that declares a scramble (None otherwise). Refuses a key whose public half is
        not the bundle's: the crops would not open."""
        spec = scramble_spec(meta)
        if spec is None:
            return None
        private = scramble_private_key(recovery_key)
        mine = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if mine != spec.public_key:
            raise RecoveryKeyError("this recovery key is not the one the bundle's scramble key was derived from")
        return cls(spec.block, private, seal_context(meta))

    def restore(self, image: np.ndarray, sealed: bytes) -> np.ndarray:
        return unscramble(image, open_seed(self.private_key, sealed, self.context), self.block)


def scrambler_for(meta: dict[str, Any]) -> Scrambler | None:
    """The scrambler a bundle's metadata asks for, or None."""
    spec = scramble_spec(meta)
    return None if spec is None else Scrambler(spec, seal_context(meta))
