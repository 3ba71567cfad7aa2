"""What the matching service believes of a message, beyond its being well-formed.

Anyone who may write ``reid.features`` controls every field of a message, and a few of them steer
the gallery for everyone else: the Re-ID fingerprint decides which messages are comparable, the
capture time drives track expiry (``Gallery.expire`` follows the newest capture time), and the
frame index decides what is a duplicate. So the service takes none of these on trust:

* **Model** (fingerprint and embedding dimension) from the configuration only (:func:`resolve_model`),
  never from the first message: one forged message would otherwise decide the model and send
  every real one to the DLQ.
* **Capture time** inside a window around the record's time (:meth:`TrustPolicy.check_time`):
  not more than ``MAX_FUTURE_SKEW_S`` ahead of the Kafka record timestamp *and* of the service's
  clock (a writer also sets the record timestamp of a CreateTime topic), not more than
  ``MAX_AGE_S`` behind it. A rejected time never reaches the gallery, so it cannot expire tracks.
* **Per-track progress** (:meth:`TrustPolicy.check_track`): a newer frame index may exceed the
  track's last accepted one by at most ``MAX_FRAME_JUMP`` plus ``MAX_FPS`` per second of capture
  time elapsed, and may not go back in time by more than ``MAX_TRACK_BACKSTEP_S``. A copied message
  with a huge frame index would otherwise make every later real observation a "duplicate".
* **Snapshots** are state written by an earlier run, possibly from input accepted before these
  rules: :meth:`TrustPolicy.sanitize_snapshot` drops entries with an impossible time, and the
  service refuses snapshots of another model.
* **Authentication** (optional, :mod:`transport.message_auth`): HMAC headers per camera.

Within the window a writer of the topic can still forge plausible observations; only message
authentication (``AUTH.KEYS_FILE``) and Kafka ACLs stop that. The checks bound the damage of
what is implausible, deterministically: the same record gets the same verdict when it is replayed
to rebuild a gallery (the service clock only caps forged record timestamps from the future).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privreid.hashing import sha256_file as _sha256_file
from transport.message_auth import Verifier
from transport.schema import FeatureMessage, SchemaError, decode_message

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
Rejection = tuple[str, str]


class TrustConfigError(ValueError):
    """The service's trust settings are missing or contradictory; the message names the keys."""


def _onnx_output_dim(path: Path) -> int:
    """Width of the model's first output (``[N, dim]``), or 0 when it is symbolic or unknowable here."""
    try:
        import onnxruntime as ort

        shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()[0].shape
    except Exception as exc:  # onnxruntime missing or the file is not a model
        log.debug("cannot read the output shape of %s: %r", path, exc)
        return 0
    return int(shape[-1]) if shape and isinstance(shape[-1], int) and shape[-1] > 0 else 0


def resolve_model(matcher_cfg: Any) -> tuple[str, int]:
    """The accepted Re-ID fingerprint and embedding dimension, from the configuration only.

    Fingerprint: ``MATCHER.REID_FINGERPRINT`` / ``BUNDLE`` / ``REID_MODEL``; dimension:
    ``MATCHER.EMBEDDING_DIM``, else the bundle's ``reid.embed_dim`` or the ONNX model's output width.
    Both are public (every message carries them), so learning either from the input would let one
    forged first message lock out every real camera. Raises :class:`TrustConfigError` when either
    is unknown, a source cannot be read, or two sources disagree.
    """
    fps: dict[str, str] = {}
    dims: dict[str, int] = {}
    explicit = str(getattr(matcher_cfg, "REID_FINGERPRINT", "") or "")
    if explicit:
        if not _SHA256_RE.fullmatch(explicit):
            raise TrustConfigError(f"MATCHER.REID_FINGERPRINT={explicit[:80]!r} is not a lowercase sha256 hex digest")
        fps["MATCHER.REID_FINGERPRINT"] = explicit
    dim = int(getattr(matcher_cfg, "EMBEDDING_DIM", 0) or 0)
    if dim < 0 or dim > 4096:
        raise TrustConfigError(f"MATCHER.EMBEDDING_DIM={dim} outside 1..4096 (0 = from the bundle or model)")
    if dim:
        dims["MATCHER.EMBEDDING_DIM"] = dim
    bundle = str(getattr(matcher_cfg, "BUNDLE", "") or "")
    if bundle:
        from anonymizer.bundle import read_bundle_yaml, reid_fingerprint  # lazily: only this path needs it

        try:
            _, meta = read_bundle_yaml(bundle)
            fps["MATCHER.BUNDLE"] = reid_fingerprint(meta)
            dims["MATCHER.BUNDLE"] = int(meta["reid"]["embed_dim"])
        except Exception as exc:  # BundleError, a YAML error, a missing key: all mean "cannot tell"
            raise TrustConfigError(f"MATCHER.BUNDLE={bundle!r}: cannot read its Re-ID fingerprint ({exc})") from None
    model = str(getattr(matcher_cfg, "REID_MODEL", "") or "")
    if model:
        if not Path(model).is_file():
            raise TrustConfigError(f"MATCHER.REID_MODEL={model!r}: file not found")
        fps["MATCHER.REID_MODEL"] = _sha256_file(Path(model))
        if (width := _onnx_output_dim(Path(model))) > 0:
            dims["MATCHER.REID_MODEL"] = width
    if not fps:
        raise TrustConfigError(
            "no Re-ID fingerprint configured: set MATCHER.REID_FINGERPRINT (sha256 of the Re-ID model, as in the "
            "messages) with MATCHER.EMBEDDING_DIM, MATCHER.BUNDLE (a learned anonymizer bundle folder) or "
            "MATCHER.REID_MODEL (the Re-ID ONNX file the pipeline uses). The service does not learn it from the input."
        )
    for what, found in (("Re-ID fingerprints", fps), ("embedding dimensions", dims)):
        if len(set(found.values())) > 1:
            shown = ", ".join(f"{k} -> {str(v)[:12]}" for k, v in found.items())
            raise TrustConfigError(f"the configured {what} disagree: {shown}")
    if not dims:
        raise TrustConfigError(
            "the embedding dimension is unknown: set MATCHER.EMBEDDING_DIM (e.g. 512), or give "
            "MATCHER.BUNDLE / MATCHER.REID_MODEL, from which it is read"
        )
    return next(iter(fps.values())), next(iter(dims.values()))


@dataclass(frozen=True)
class TrustPolicy:
    """Plausibility rules for capture times and per-track frame indexes (``TRUST`` config section)."""

    max_future_skew_ms: int = 300_000
    max_age_ms: int = 315_576_000_000
    max_frame_jump: int = 300
    max_fps: float = 240.0
    max_track_backstep_ms: int = 10_000

    @classmethod
    def from_config(cls, trust_cfg: Any) -> TrustPolicy:
        def seconds(key: str) -> float:
            v = float(getattr(trust_cfg, key))
            if not math.isfinite(v) or v <= 0:
                raise TrustConfigError(f"TRUST.{key} must be a positive number of seconds, got {v}")
            return v

        jump, fps = int(trust_cfg.MAX_FRAME_JUMP), float(trust_cfg.MAX_FPS)
        if jump < 1:
            raise TrustConfigError(f"TRUST.MAX_FRAME_JUMP must be >= 1, got {jump}")
        if not math.isfinite(fps) or fps <= 0:
            raise TrustConfigError(f"TRUST.MAX_FPS must be > 0, got {fps}")
        return cls(
            max_future_skew_ms=int(seconds("MAX_FUTURE_SKEW_S") * 1000),
            max_age_ms=int(seconds("MAX_AGE_S") * 1000),
            max_frame_jump=jump,
            max_fps=fps,
            max_track_backstep_ms=int(seconds("MAX_TRACK_BACKSTEP_S") * 1000),
        )

    def latest_plausible_ms(self, now_ms: int) -> int:
        """No capture time beyond this is believable now (caps expiry and snapshot contents)."""
        return int(now_ms) + self.max_future_skew_ms

    def check_time(self, timestamp_ms: int, record_timestamp_ms: int | None, now_ms: int) -> Rejection | None:
        """Capture time against the record time (capped by our clock: producers set CreateTime)."""
        ref = int(now_ms)
        if record_timestamp_ms is not None and record_timestamp_ms >= 0:
            ref = min(int(record_timestamp_ms), ref)
        if timestamp_ms > ref + self.max_future_skew_ms:
            return (
                "timestamp_future",
                f"timestamp_ms {timestamp_ms} is {(timestamp_ms - ref) / 1000:.0f} s after the "
                f"record time {ref} (TRUST.MAX_FUTURE_SKEW_S {self.max_future_skew_ms / 1000:g})",
            )
        if timestamp_ms < ref - self.max_age_ms:
            return (
                "timestamp_too_old",
                f"timestamp_ms {timestamp_ms} is {(ref - timestamp_ms) / 86_400_000:.0f} days "
                f"before the record time {ref} (TRUST.MAX_AGE_S {self.max_age_ms / 1000:g})",
            )
        return None

    def check_track(self, last_frame: int, last_ts_ms: int, frame_index: int, timestamp_ms: int) -> Rejection | None:
        """A newer observation of a known track (``frame_index > last_frame``) against its last accepted one."""
        if frame_index <= last_frame:
            return None  # a redelivery: the gallery counts it as a duplicate
        elapsed_ms = max(0, int(timestamp_ms) - int(last_ts_ms))
        allowed = self.max_frame_jump + int(self.max_fps * elapsed_ms / 1000.0)
        if frame_index - last_frame > allowed:
            return (
                "frame_jump",
                f"frame_index {frame_index} is {frame_index - last_frame} frames after the track's "
                f"last {last_frame}, {elapsed_ms / 1000:.1f} s later (at most {allowed}: TRUST.MAX_FRAME_JUMP + "
                "TRUST.MAX_FPS x elapsed)",
            )
        if timestamp_ms < last_ts_ms - self.max_track_backstep_ms:
            return (
                "track_time_jump",
                f"frame {frame_index} is {(last_ts_ms - timestamp_ms) / 1000:.1f} s older than "
                f"the track's last observation (TRUST.MAX_TRACK_BACKSTEP_S {self.max_track_backstep_ms / 1000:g})",
            )
        return None

    def sanitize_snapshot(
        self, meta: dict[str, Any], means: np.ndarray, now_ms: int
    ) -> tuple[dict[str, Any], np.ndarray, int]:
        """Drop snapshot entries whose capture times are impossible now (written before these rules,
        or by a hostile writer of the snapshot folder); clamp tombstone times the same way.

        An entry from the future would otherwise become the gallery's newest capture time on
        import and expire every other track, i.e. bring back the damage of a rejected message.
        """
        limit = self.latest_plausible_ms(now_ms)
        entries = list(meta.get("entries", []))
        keep = []
        for i, e in enumerate(entries):
            try:
                first, last = int(e["first_seen_ms"]), int(e["last_seen_ms"])
            except (KeyError, TypeError, ValueError):
                continue
            if 0 <= first <= last <= limit:
                keep.append(i)
        dropped = len(entries) - len(keep)
        if not dropped and all(int(t[3]) <= limit for t in meta.get("tombstones", [])):
            return meta, means, 0
        tombs = [[t[0], t[1], t[2], min(int(t[3]), limit)] for t in meta.get("tombstones", [])]
        clean = {**meta, "entries": [entries[i] for i in keep], "tombstones": tombs}
        return clean, means[keep], dropped


class Admission:
    """Every check between a Kafka record and the gallery, in order: MAC (when keys are
    configured), contract, key = camera id, model (fingerprint, dimension), capture time, track
    progress. ``admit`` returns the message or a ``(reason, detail)`` for the DLQ; it depends only on
    the record, the gallery and (for forged future record times) the clock, so a silent replay
    reaches the same verdicts."""

    def __init__(self, fingerprint: str, dim: int, policy: TrustPolicy, verifier: Verifier | None = None) -> None:
        self.fingerprint, self.dim, self.policy, self.verifier = fingerprint, int(dim), policy, verifier

    @classmethod
    def from_config(cls, cfg: Any) -> Admission:
        """From the service config; raises :class:`TrustConfigError` / ``AuthConfigError`` (both
        ``ValueError``) so the CLI exits 2 with the key named."""
        fingerprint, dim = resolve_model(cfg.MATCHER)
        keys = str(cfg.AUTH.KEYS_FILE or "")
        verifier = Verifier.from_file(keys, bool(cfg.AUTH.REQUIRE)) if keys else None
        if verifier is None:
            log.warning(
                "AUTH.KEYS_FILE is not set: feature messages are not authenticated, so any writer of the "
                "topic can impersonate a camera (docs/kafka-contract.md, Production)"
            )
        return cls(fingerprint, dim, TrustPolicy.from_config(cfg.TRUST), verifier)

    def admit(self, rec: Any, gallery: Any, now_ms: int) -> tuple[FeatureMessage, None] | tuple[None, Rejection]:
        if self.verifier is not None:
            bad = self.verifier.check(rec.key, rec.value, getattr(rec, "headers", None))
            if bad is not None:
                return None, bad
        try:
            msg = decode_message(rec.value)
        except SchemaError as exc:
            return None, (exc.reason, exc.detail)
        if rec.key is None or rec.key != msg.camera_id.encode("utf-8"):
            return None, ("bad_key", "the message key must be the camera_id")
        if msg.reid_fingerprint != self.fingerprint:
            return None, (
                "fingerprint_mismatch",
                f"reid_fingerprint {msg.reid_fingerprint[:12]}… but the service "
                f"accepts {self.fingerprint[:12]}… (features of different models are not comparable)",
            )
        if msg.dim != self.dim:
            return None, ("dim_mismatch", f"embedding_dim {msg.dim}, configured {self.dim}")
        bad = self.policy.check_time(msg.timestamp_ms, getattr(rec, "timestamp", None), now_ms)
        if bad is None and (last := gallery.progress(msg.track_key)) is not None:
            bad = self.policy.check_track(last[0], last[1], msg.frame_index, msg.timestamp_ms)
        return (msg, None) if bad is None else (None, bad)
