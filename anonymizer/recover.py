"""Authorized recovery: undo the learned anonymization with the sealed decoder G_R.

Python API::

    from anonymizer import load_recovery
    r = load_recovery("models/demo", "recovery.key")
    raw_like = r.recover(protected_crops)        # BGR uint8 crops of any size

Command line (restores the person regions of an anonymized video; audited)::

    python -m anonymizer.recover --bundle models/demo --key-file recovery.key \\
        --video cam1.anonymized.mp4 --observations cam1.observations.jsonl \\
        --output cam1.recovered.mp4 [--sidecar cam1.crops] [--tracks 3,7] \\
        [--operator alice --reason "case 2024-17"] [--audit-log audit.jsonl]
    python -m anonymizer.recover verify-log audit.jsonl [--anchor HEAD_HASH]

Security behaviour, in this order (each step fails closed with exit status 2 and a named reason):

1. The key is checked against the bundle's key id, and the audit log is opened (a regular file
   only, created 0600, its hash chain intact) — a wrong key or an unusable log writes nothing.
2. A ``started`` record of intent (operator, OS user, host, key id, bundle fingerprint, video,
   observations and sidecar with their sha256, output path, tracks asked for) is appended and
   fsynced *before* G_R is decrypted, so no restored pixel can exist without a record.
3. The restored video goes to a 0600 temporary file next to the output, is fsynced, and is renamed
   into place; any failure removes it and appends a ``failed`` record with the reason.
4. A ``completed`` record (output sha256, tracks, frames, regions) is appended; if it cannot be
   written, the restored output is deleted again.

The log format and its verification are in :mod:`anonymizer.recovery_log`. Restored pixels go to
the output file only: sidecar crops are read into memory, never written out.

Observations: the pipeline's ``<cam>.observations.jsonl``, one JSON object per line with at least
``frame_index``, ``track_id`` and ``box`` [x1, y1, x2, y2]; ``region`` (the area actually replaced,
after margin and clipping) is used when present. Lines without a box/region (e.g. frame or summary
records), with ``region: null`` or with ``protected: false`` (masked solid, nothing to undo) are
skipped.

Pairing with the video: by ``output_frame``, the video frame the pipeline wrote the observed
picture to, and also the ``output_repeats`` frames after it that repeat that picture (a live
camera's video keeps real time by repeating the last picture where frames were missing).
``output_frame: null`` (processed, left out of the video) restores nothing. A live camera's
``frame_index`` is not its place in the video once frames were dropped, so pairing by position
would put a person's restored crop onto another moment. Logs written before ``output_frame``
existed are paired as they were, video frame *i* with ``frame_index`` *i*, with a warning when
the log names frames the video does not have (frames were dropped: that pairing is off). The
sidecar is always looked up by ``frame_index`` (its records are keyed by source frame).

Segmented output (``OUTPUT.SEGMENT_S``): the camera's one observations log covers all its segment
files, and each record names its ``segment`` (file name) and its ``output_frame`` inside that file.
Pass one segment as ``--video`` and the camera's log as ``--observations``: only the records of
that segment (matched by file name) are used, so one segment is restored on its own::

    python -m anonymizer.recover ... --video door.20240501T120500Z.mp4 \
        --observations door.observations.jsonl --output door.20240501T120500Z.recovered.mp4

A log with segments that does not know the video's file name is refused (exit 2): a renamed file
or the wrong camera's log would restore nothing, or the wrong people. Logs without segments are
read as they always were.

Why one file of this length: the security order above is one sequence (key check, intent record,
decryption, private temporary output, completion record or removal) that :func:`main` runs and
:func:`recover_video` and :func:`load_recovery` serve; kept together, a reviewer sees every step
that can leave restored pixels behind in one place. The audit log format (:mod:`anonymizer.recovery_log`),
the sidecar (:mod:`anonymizer.sidecar`) and the network runtime (:mod:`backends`) are already outside.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import getpass
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anonymizer.bundle import load_generator_weights
from anonymizer.bundle_files import (
    BUNDLE_YAML,
    G_FILE,
    GR_FILE,
    BundleError,
    _chunks,
    bundle_fingerprint,
    crops_to_unit_batch,
    read_bundle_yaml,
    unit_batch_to_crops,
    verified_bytes,
)
from anonymizer.crypto import KEY_ENV, RecoveryKeyError, key_id, load_key, open_sealed
from anonymizer.recovery_log import AuditLog, AuditLogError
from anonymizer.scramble import Unscrambler
from anonymizer.sidecar import SidecarRecord, read_sidecar, sidecar_key
from backends import Backend, load_backend
from privreid.hashing import sha256_file as sha256_path

log = logging.getLogger("anonymizer.recover")
AUDIT_ENV = "PRIVREID_AUDIT_LOG"


@dataclass
class Recovery:
    """The unsealed recovery decoder of one bundle (kept in memory only), on the torch backend.

    G_R only ever exists in memory (it is decrypted from ``G_R.sealed`` on each load), so it runs as
    the ``nn.Module`` rebuilt from its safetensors state; there is no ONNX file of it to give to
    another runtime.
    """

    bundle_path: Path
    meta: dict[str, Any]
    g_r: Backend
    key_id: str
    device: str = "cpu"
    batch_size: int = 32
    #: opens the sealed seeds of a scrambled bundle's crops (None: the bundle's crops are not scrambled)
    unscrambler: Unscrambler | None = None

    @property
    def input_hw(self) -> tuple[int, int]:
        h, w = self.meta["input"]["size_hw"]
        return int(h), int(w)

    def recover_unit(self, unit: np.ndarray) -> np.ndarray:
        """G_R on an N×3×H×W RGB [0, 1] batch at the bundle size; same layout out."""
        outs = [(self.g_r(unit[sl] * 2.0 - 1.0) + 1.0) / 2.0 for sl in _chunks(len(unit), self.batch_size)]
        return np.concatenate(outs, 0) if outs else unit.copy()

    def recover(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Recovered BGR uint8 crops, each of its input's shape."""
        crops = list(crops)
        if not crops:
            return []
        return unit_batch_to_crops(self.recover_unit(crops_to_unit_batch(crops, self.input_hw)), crops)


def load_recovery(
    path: str | Path,
    key_file: str | Path | None = None,
    *,
    key: bytes | None = None,
    device: str = "cpu",
    key_env: str = KEY_ENV,
) -> Recovery:
    """Unseal a bundle's G_R with the key (``key`` bytes, else ``key_file``, else ``$key_env``).

    Raises :class:`RecoveryKeyError` when the key is missing, malformed or not this bundle's key,
    :class:`BundleError` when bundle files are missing or were modified, and
    :class:`backends.BackendError` when ``device`` (``auto | cpu | cuda | cuda:N``) is not available.
    """
    from safetensors.torch import load as load_safetensors

    root, meta = read_bundle_yaml(path, verify=True)  # every file, the manifest and its signature
    rec = meta.get("recovery") or {}
    if not rec:
        raise BundleError(f"{root / BUNDLE_YAML} has no recovery section: this bundle is not reversible")
    key = key if key is not None else load_key(key_file, key_env)
    expected = rec.get("key_id")
    if expected and key_id(key) != expected:
        raise RecoveryKeyError(
            f"wrong recovery key: this key has id {key_id(key)}, but {root.name} was sealed with key id {expected}"
        )
    g_sha = meta["files"][G_FILE]
    verified_bytes(root, meta, G_FILE)  # G_R is bound to exactly this G
    sealed = verified_bytes(root, meta, rec.get("file", GR_FILE))
    state = load_safetensors(open_sealed(sealed, key, context=f"G_R for G {g_sha}"))
    g_r = load_backend("torch", load_generator_weights(rec.get("generator", meta["generator"]["spec"]), state), device)
    return Recovery(
        bundle_path=root,
        meta=meta,
        g_r=g_r,
        key_id=key_id(key),
        device=str(g_r.device),
        unscrambler=Unscrambler.from_meta(meta, key),
    )


def _unscrambled(recovery: Recovery, record: SidecarRecord) -> np.ndarray:
    """A native sidecar crop as G wrote it: a scrambled crop (it carries its sealed seed) is opened
    with the recovery key first. A sealed seed the key cannot open stops the recovery (a
    RecoveryKeyError): a wrong key or a record moved from another bundle restores nobody."""
    if record.sealed_seed is None:
        return record.crop
    if recovery.unscrambler is None:
        raise RecoveryKeyError(
            f"the sidecar's crop of frame {record.frame_index} is scrambled, but this bundle declares no "
            "scramble key (recovery.scramble): it belongs to another bundle"
        )
    return recovery.unscrambler.restore(record.crop, record.sealed_seed)


def has_payload(meta: dict[str, Any]) -> bool:
    """Whether the bundle's G writes a scattered recovery code (MODEL.G_PAYLOAD_SCALE)."""
    return (meta.get("generator", {}).get("spec", {}) or {}).get("payload_role") == "write"


# ------------------------------------------------------------------------------- video tool
def _records(path: str | Path) -> Iterable[dict]:
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc})") from None


def observation_segments(path: str | Path) -> list[str]:
    """The segment files a segmented observations log names, in order of appearance ([] for one video)."""
    seen: dict[str, None] = {}
    for obs in _records(path):
        if isinstance(obs, dict) and isinstance(obs.get("segment"), str):
            seen.setdefault(obs["segment"], None)
    return list(seen)


def read_observations(
    path: str | Path, tracks: set[str] | None = None, segment: str | None = None
) -> dict[int, list[dict]]:
    """``video frame → [observation]`` for lines that carry a region or box (and a wanted track).

    The video frame is ``output_frame`` (and each of its ``output_repeats``), else, in logs from
    before it existed, ``frame_index``; such observations are marked ``_legacy``. Each observation
    keeps its source frame in ``_frame`` (the sidecar's key). ``segment``: only the records of that
    segment file (their ``output_frame`` counts in that file)."""
    by_frame: dict[int, list[dict]] = {}
    for obs in _records(path):
        if segment is not None and (not isinstance(obs, dict) or obs.get("segment") != segment):
            continue
        # ``region`` is what the pipeline replaced; None there (or protected: false) means the
        # region was masked solid or not protected by G, so there is nothing to recover.
        rect = obs["region"] if "region" in obs else obs.get("box")
        if rect is None or "frame_index" not in obs or obs.get("protected") is False:
            continue
        if tracks is not None and str(obs.get("track_id")) not in tracks:
            continue
        obs["_rect"] = [int(round(float(v))) for v in rect[:4]]
        obs["_frame"] = int(obs["frame_index"])
        if "output_frame" not in obs:
            obs["_legacy"] = True
            by_frame.setdefault(obs["_frame"], []).append(obs)
            continue
        if obs["output_frame"] is None:  # processed but left out of the video: nothing there to restore
            continue
        first = int(obs["output_frame"])
        for shown in range(first, first + 1 + max(0, int(obs.get("output_repeats") or 0))):
            by_frame.setdefault(shown, []).append(obs)
    return by_frame


def warn_if_misaligned(by_frame: dict[int, list[dict]], video_frames: int) -> bool:
    """Warn when a log without ``output_frame`` names frames beyond the video; True when it does.

    Without ``output_frame``, video frame *i* is paired with ``frame_index`` *i*, which holds only
    when no frame was dropped; a log that names more frames than the video has proves some were,
    so restored crops may sit on the wrong frames (those after the first drop)."""
    legacy = [index for index, items in by_frame.items() if any(o.get("_legacy") for o in items)]
    beyond = [index for index in legacy if index >= video_frames]
    if not beyond:
        return False
    log.warning(
        "the observations have no output_frame (written by an older pipeline), so video frame i is paired "
        "with frame_index i; but they name frames up to %d and the video has %d: frames were dropped "
        "(a live camera that fell behind), and restored regions after the first drop are on the wrong "
        "frames; %d observed frames beyond the video were not restored",
        max(beyond),
        video_frames,
        len(beyond),
    )
    return True


def camera_name(observations: Path, by_frame: dict[int, list[dict]], override: str | None) -> str:
    if override:
        return override
    for obs_list in by_frame.values():
        for obs in obs_list:
            for k in ("camera", "camera_id", "cam"):
                if obs.get(k):
                    return str(obs[k])
    name = observations.name
    return name.split(".observations")[0] if ".observations" in name else observations.stem


def _clip(rect: Sequence[int], w: int, h: int) -> tuple[int, int, int, int] | None:
    x1, y1, x2, y2 = rect
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return x1, y1, x2, y2


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_video(
    recovery: Recovery,
    video: Path,
    by_frame: dict[int, list[dict]],
    output: Path,
    sidecar: dict | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``output`` = ``video`` with every observed region restored; returns statistics.

    Restored frames go to a temporary file created 0600 next to ``output`` (so the rename stays
    on one file system and nobody else can open it meanwhile), which is fsynced and renamed into
    place only when every frame is written; on any failure it is removed.
    """
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=f".partial{output.suffix}", dir=output.parent)
    except BaseException:
        cap.release()
        raise
    os.close(fd)  # mkstemp made it 0600; the writer reopens it by name and keeps that mode
    tmp = Path(tmp_name)
    stats: dict[str, Any] = {
        "frames": 0,
        "frames_restored": 0,
        "regions": 0,
        "from_sidecar": 0,
        "tracks": set(),
        "frame_range": [None, None],
    }
    bar = None
    placed = False
    try:
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]  # (missing from OpenCV's stubs)
        writer = cv2.VideoWriter(str(tmp), fourcc, fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"cannot open a video writer for {output}")
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc="recovering", file=sys.stderr)
        try:
            index = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                jobs = []
                for obs in by_frame.get(index, []):
                    rect = _clip(obs["_rect"], width, height)
                    if rect is None:
                        continue
                    x1, y1, x2, y2 = rect
                    src = frame[y1:y2, x1:x2]
                    if sidecar is not None:  # keyed by the source frame, which a repeat shares with its picture
                        recs = sidecar.get(sidecar_key(obs.get("_frame", index), obs["_rect"]), {})
                        if "native" in recs:
                            src = _unscrambled(recovery, recs["native"])
                            stats["from_sidecar"] += 1
                        elif "region" in recs:
                            src = recs["region"].crop
                            stats["from_sidecar"] += 1
                    jobs.append((rect, src, obs))
                if jobs:
                    restored = recovery.recover([j[1] for j in jobs])
                    for (rect, _, obs), rec in zip(jobs, restored, strict=True):
                        x1, y1, x2, y2 = rect
                        if rec.shape[:2] != (y2 - y1, x2 - x1):
                            rec = cv2.resize(rec, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
                        frame[y1:y2, x1:x2] = rec
                        stats["regions"] += 1
                        stats["tracks"].add(str(obs.get("track_id")))
                        lo, hi = stats["frame_range"]
                        stats["frame_range"] = [
                            index if lo is None else min(lo, index),
                            index if hi is None else max(hi, index),
                        ]
                    stats["frames_restored"] += 1
                writer.write(frame)
                stats["frames"] += 1
                index += 1
                if bar is not None:
                    bar.update(1)
        finally:
            writer.release()
        warn_if_misaligned(by_frame, stats["frames"])
        os.chmod(tmp, 0o600)
        _fsync_path(tmp)
        stats["output_sha256"] = sha256_path(tmp)
        os.replace(tmp, output)
        placed = True
        _fsync_path(output.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if placed:
            output.unlink(missing_ok=True)
        raise
    finally:
        cap.release()
        if bar is not None:
            bar.close()
    stats["tracks"] = sorted(stats["tracks"], key=lambda t: (len(t), t))
    return stats


def remove_output(output: Path) -> bool:
    """Delete a restored output whose recovery could not be recorded; True when it is gone."""
    try:
        output.unlink(missing_ok=True)
        _fsync_path(output.parent, directory=True)
    except OSError:
        return not output.exists()
    return True


def check_key(bundle: str | Path, key_file: str | Path | None) -> tuple[Path, dict[str, Any], str]:
    """(bundle folder, bundle.yaml, key id) once the key is known to be the bundle's — decrypts nothing.

    Lets the tool refuse a wrong key before it writes anything, the audit log included.
    """
    root, meta = read_bundle_yaml(bundle)
    rec = meta.get("recovery") or {}
    if not rec:
        raise BundleError(f"{root / BUNDLE_YAML} has no recovery section: this bundle is not reversible")
    kid = key_id(load_key(key_file))
    expected = rec.get("key_id")
    if expected and kid != expected:
        raise RecoveryKeyError(
            f"wrong recovery key: this key has id {kid}, but {root.name} was sealed with key id {expected}"
        )
    return root, meta, kid


class RecoveryInterrupted(BaseException):
    """SIGTERM during a recovery: raised so that the partial output is removed and the failure recorded."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise RecoveryInterrupted(f"terminated by signal {signum}")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        return str(os.getuid())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def main(argv: Iterable[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv and argv[0] == "verify-log":
        from anonymizer.recovery_log import verify_main

        return verify_main(argv[1:], prog="python -m anonymizer.recover verify-log")
    ap = argparse.ArgumentParser(
        prog="python -m anonymizer.recover",
        description="Restore the person regions of an anonymized video (authorized use only; audited).",
        epilog="Check an audit log: python -m anonymizer.recover verify-log LOG [--anchor HASH]",
    )
    ap.add_argument("--bundle", required=True, help="learned anonymizer bundle folder")
    ap.add_argument("--key-file", default=None, help=f"recovery key file (default: ${KEY_ENV})")
    ap.add_argument("--video", required=True, help="anonymized video written by the pipeline")
    ap.add_argument("--observations", required=True, help="the pipeline's <cam>.observations.jsonl")
    ap.add_argument("--output", required=True, help="recovered video to write (.mp4)")
    ap.add_argument("--sidecar", default=None, help="lossless protected-crop sidecar (full-quality recovery)")
    ap.add_argument("--tracks", default=None, help="comma-separated track ids to restore (default: all)")
    ap.add_argument("--camera", default=None, help="camera name for the audit log (default: from the observations)")
    ap.add_argument("--operator", default=None, help="who asks for recovery (default: the OS user)")
    ap.add_argument("--reason", default="", help="why (case number, request id) for the audit log")
    ap.add_argument(
        "--audit-log",
        default=None,
        help=f"hash-chained audit log (JSON Lines, a regular file) to append to (default: ${AUDIT_ENV} or "
        "recovery_audit.jsonl next to --output); check it with: verify-log LOG",
    )
    ap.add_argument("--device", default="cpu", help="where G_R runs: auto, cpu, cuda or cuda:N")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    video, observations, output = Path(args.video), Path(args.observations), Path(args.output)
    sidecar_path = Path(args.sidecar) if args.sidecar else None
    for p, what in ((video, "video"), (observations, "observations"), (sidecar_path, "sidecar")):
        if p is not None and not p.is_file():
            print(f"error: {what} file {p} does not exist", file=sys.stderr)
            return 2
    audit_path = Path(args.audit_log or os.environ.get(AUDIT_ENV) or output.parent / "recovery_audit.jsonl")
    if output.is_dir():
        print(f"error: --output {output} is a directory; name the video file to write", file=sys.stderr)
        return 2
    for p, what in (
        (video, "the input video"),
        (observations, "the observations"),
        (sidecar_path, "the sidecar"),
        (audit_path, "the audit log"),
    ):
        if p is not None and _same_file(output, p):
            print(f"error: --output {output} is {what}; recovery would overwrite it", file=sys.stderr)
            return 2
    try:
        root, meta, kid = check_key(args.bundle, args.key_file)
    except (RecoveryKeyError, BundleError) as exc:
        print(f"error: recovery refused: {exc}. Nothing was written.", file=sys.stderr)
        return 2
    tracks = {t.strip() for t in args.tracks.split(",") if t.strip()} if args.tracks else None
    try:
        segments = observation_segments(observations)
        segment = video.name if segments else None
        if segment is not None and segment not in segments:
            raise ValueError(
                f"this log is of segmented output, and none of its {len(segments)} segments "
                f"({segments[0]} ... {segments[-1]}) is named {segment}: pass the log of this "
                "camera and run, and the segment under the name the pipeline gave it"
            )
        by_frame = read_observations(observations, tracks, segment=segment)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: recovery refused: observations {observations}: {exc}. Nothing was written.", file=sys.stderr)
        return 2
    try:
        audit = AuditLog(audit_path)
    except AuditLogError as exc:
        print(f"error: recovery refused: {exc}. Nothing was decrypted or written.", file=sys.stderr)
        return 2
    with audit:
        intent = {
            "event": "recovery",
            "recovery_id": uuid.uuid4().hex,
            "operator": args.operator or _os_user(),
            "os_user": _os_user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "reason": args.reason,
            "camera": camera_name(observations, by_frame, args.camera),
            "video": str(video.resolve()),
            **({"segment": segment} if segment is not None else {}),
            "video_sha256": sha256_path(video),
            "observations": str(observations.resolve()),
            "observations_sha256": sha256_path(observations),
            "sidecar": str(sidecar_path.resolve()) if sidecar_path else None,
            "sidecar_sha256": sha256_path(sidecar_path) if sidecar_path else None,
            "source": "sidecar" if sidecar_path else "video",
            "output": str(output.resolve()),
            "tracks_requested": sorted(tracks) if tracks else "all",
            "bundle": str(root.resolve()),
            "bundle_fingerprint": bundle_fingerprint(root, meta),
            "bundle_g_sha256": meta["files"][G_FILE],
            "key_id": kid,
        }
        try:
            audit.append({**intent, "status": "started", "time": _now()})
        except Exception as exc:
            print(f"error: recovery refused: {exc}. Nothing was decrypted or written.", file=sys.stderr)
            return 2

        def failed(reason: str) -> None:
            try:
                audit.append({**intent, "status": "failed", "time": _now(), "error": reason})
            except Exception as exc:
                print(f"error: the failure could not be recorded either: {exc}", file=sys.stderr)

        t0 = time.time()
        old_umask = os.umask(0o077)  # whatever else gets created on the way is private too
        old_term = None
        try:  # SIGTERM unwinds like an error: partial output removed, failure recorded
            old_term = signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # not the main thread: no handler, no change
            pass
        try:
            try:
                output.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                recovery = load_recovery(args.bundle, args.key_file, device=args.device)
                if recovery.key_id != kid:
                    raise RecoveryKeyError(
                        f"the key changed during recovery (id {kid} recorded, {recovery.key_id} loaded)"
                    )
                sidecar = None
                if sidecar_path is not None:
                    sidecar = read_sidecar(sidecar_path)
                    log.info("sidecar %s: %d protected crops", sidecar_path, len(sidecar))
                stats = recover_video(recovery, video, by_frame, output, sidecar, progress=not args.quiet)
            except (RecoveryKeyError, BundleError) as exc:
                failed(f"{type(exc).__name__}: {exc}")
                print(f"error: recovery refused: {exc}. No restored output was written.", file=sys.stderr)
                return 2
            except Exception as exc:
                failed(f"{type(exc).__name__}: {exc}")
                print(
                    f"error: recovery failed: {type(exc).__name__}: {exc}. No restored output was left.",
                    file=sys.stderr,
                )
                return 1
            except BaseException as exc:
                failed(f"interrupted: {type(exc).__name__}: {exc}")
                if isinstance(exc, RecoveryInterrupted):
                    print(f"error: recovery {exc}. No restored output was left.", file=sys.stderr)
                    return 128 + signal.SIGTERM
                raise
            try:
                audit.append(
                    {
                        **intent,
                        "status": "completed",
                        "time": _now(),
                        "output_sha256": stats["output_sha256"],
                        "tracks": stats["tracks"],
                        "frames": {
                            "first": stats["frame_range"][0],
                            "last": stats["frame_range"][1],
                            "total": stats["frames"],
                        },
                        "frames_restored": stats["frames_restored"],
                        "regions": stats["regions"],
                        "regions_from_sidecar": stats["from_sidecar"],
                        "seconds": round(time.time() - t0, 2),
                    }
                )
            except BaseException as exc:  # unrecorded restored output must not stay (fail closed)
                gone = remove_output(output)
                what = "removed" if gone else "could NOT be removed"
                if not isinstance(exc, Exception):
                    failed(f"interrupted before the completion record; restored output {what}")
                    if isinstance(exc, RecoveryInterrupted):
                        print(f"error: recovery {exc}. The restored output was {what}.", file=sys.stderr)
                        return 128 + signal.SIGTERM
                    raise
                failed(f"completion record not written ({exc}); restored output {what}")
                print(
                    f"error: {exc}. The restored output {output} "
                    + ("was removed." if gone else "could NOT be removed: delete it by hand."),
                    file=sys.stderr,
                )
                return 2
        finally:
            os.umask(old_umask)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
    from_video = stats["regions"] - stats["from_sidecar"]
    if from_video and has_payload(recovery.meta):
        log.warning(
            "%d of %d regions were recovered from the decoded video, but this bundle's G hides its recovery "
            "code as pixel-level noise, which resizing and video compression destroy: expect those regions "
            "at about the protected image's quality (docs/experiments/05-scattered-payload.md). Pass the "
            "pipeline's lossless --sidecar for full-quality recovery.",
            from_video,
            stats["regions"],
        )
    print(
        f"recovered {stats['regions']} regions of {len(stats['tracks'])} tracks in {stats['frames']} frames "
        f"→ {output}; audit records appended to {audit_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
