"""One planned frame through redaction to the camera's outputs, its observations and Kafka.

:class:`FrameEmitter` is the pipeline's per-frame work after region planning: the redactor replaces
every region (fail-closed: a crop that cannot be protected, or whose protection comes too late, is
filled), the redacted frame goes to the video and the other sinks, the frame's records go to the
observations log once the frame is with the encoder (never before), the sidecar gets the protected
crops, and the Re-ID features of protected person crops are published. Nothing raw leaves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anonymizer.base import CropAnonymizer
from anonymizer.redactor import Redactor
from detectors.tracker import Observation
from stream.camera_state import CameraState, Embedder
from stream.log_records import gap_records, placed_records, tally_records
from stream.regions import PlannedFrame
from stream.sink_errors import SinkError, describe_os_error
from stream.sinks import OnWritten
from stream.sources import Frame


class FrameEmitter:
    """The per-frame work shared by every camera of a pipeline (one redactor, anonymizer, publisher)."""

    def __init__(
        self,
        redactor: Redactor,
        anonymizer: CropAnonymizer,
        publisher: Any = None,
        embedder: Embedder | None = None,
        reid_fingerprint: str = "",
        reid_batch: int = 32,
    ) -> None:
        self.redactor = redactor
        self.anonymizer = anonymizer
        self.publisher = publisher
        self.embedder = embedder
        self.reid_fingerprint = reid_fingerprint
        self.reid_batch = max(1, int(reid_batch))

    def emit(self, cam: CameraState, planned: PlannedFrame) -> None:
        """Redact one planned frame, hand it to every sink, count it, and publish its protected crops."""
        frame, observations = planned.frame, planned.observations
        boxes = [o.box for o in observations]
        redactor = cam.redactor or self.redactor
        result = redactor.mask_all(frame.image, boxes) if planned.mask_frame else redactor.redact(frame.image, boxes)
        native = result.native or [None] * len(observations)
        sealed = result.sealed or [None] * len(observations)
        for_reid = result.for_reid or [None] * len(observations)
        records = [
            {
                "frame_index": frame.index,
                "timestamp_ms": frame.timestamp_ms,
                "track_id": obs.track_id,
                "box": [round(v, 2) for v in obs.box],
                "score": round(obs.score, 4),
                "region": list(region) if region else None,
                "held": obs.held,
                "kind": obs.kind,
                "protected": prot is not None,
            }
            for obs, region, prot in zip(observations, result.regions, result.protected, strict=True)
        ]
        if cam.source.is_live:  # a reconnect gap before this frame: noted where the video resumes
            gaps, cam.gaps_noted = gap_records(
                getattr(cam.source, "gaps", ()), cam.gaps_noted, frame.index, frame.timestamp_ms
            )
            records = gaps + records
        # the observations are written by the sink's thread once the frame is with the encoder, never before,
        # with the output frame its picture landed on (live: placed by capture time, maybe repeated after)
        cam.sink.write(
            result.frame,
            on_written=self._observations_writer(cam, records) if records else None,
            timestamp_ms=frame.timestamp_ms,
            frame_index=frame.index,
        )
        for extra in cam.extra_sinks:  # the same redacted picture (a re-stream: a slow or absent target drops)
            extra.write(result.frame)
        cam.frames += 1
        cam.masked_frames += planned.mask_frame
        cam.fallback_masks += result.fallback_masks
        cam.floor_masks += result.floor_masks
        publishable: list[tuple[Observation, np.ndarray]] = []
        for obs, region, prot, nat, seed, plain in zip(
            observations, result.regions, result.protected, native, sealed, for_reid, strict=True
        ):
            self._count(cam, obs, prot is not None)
            if cam.sidecar is not None and prot is not None:  # protected pixels only, losslessly
                self._sidecar_write(cam, frame.index, obs.track_id, region, prot, "region", None)
                if nat is not None:
                    self._sidecar_write(cam, frame.index, obs.track_id, region, nat, "native", seed)
            if prot is not None and obs.is_person and obs.track_id >= 0:
                # C reads the crop before a scramble (in memory only); the pixels that leave are ``prot``
                publishable.append((obs, plain if plain is not None else prot))
        if cam.sidecar is not None:
            self._sidecar_write(cam)
        if self.publisher is not None and publishable:
            self._publish(cam, frame, publishable)

    @staticmethod
    def _observations_writer(cam: CameraState, records: list[dict[str, Any]]) -> OnWritten:
        """The sink's callback for one frame: its records, told which output frame shows them.

        ``output_frame`` is what recovery pairs by (a live frame's index is not its place in the
        video once frames were dropped or repeated); ``output_repeats`` more output frames show the
        same picture; ``output_frame: null``: the frame was processed but left out of the video.
        Segmented output adds ``segment`` (the file), its output frames counted in that file, and
        ``continued`` on the records of a picture whose repeats run on into the next segment."""
        writer = cam.observations

        def written(
            output_frame: int | None, repeats: int, segment: str | None = None, continued: bool = False
        ) -> None:
            writer.write_frame(placed_records(records, output_frame, repeats, segment, continued))
            if not continued:  # (the writer thread; read once it has ended)
                cam.logged.update(tally_records(records))

        return written

    @staticmethod
    def _sidecar_write(cam: CameraState, *record: Any) -> None:
        """One sidecar record (frame index, track id, region, crop, kind, sealed seed), or, without one,
        a flush; a write error (full disk) ends the camera."""
        assert cam.sidecar is not None
        try:
            if record:
                frame_index, track_id, region, crop, kind, seed = record
                cam.sidecar.write(frame_index, track_id, region, crop, kind=kind, sealed_seed=seed)
            else:
                cam.sidecar.flush()
        except OSError as exc:
            raise SinkError(f"cannot write {cam.sidecar.path}: {describe_os_error(exc)}") from exc

    @staticmethod
    def _count(cam: CameraState, obs: Observation, protected: bool) -> None:
        if obs.is_person:
            cam.person_observations += 1
            cam.anonymized_observations += protected
        elif obs.kind == "held":
            cam.held_masks += 1
        elif obs.kind == "low_score":
            cam.low_score_masks += 1
        elif obs.kind == "motion":
            cam.motion_masks += 1
        elif obs.kind == "lookahead":
            cam.lookahead_masks += 1

    def _publish(self, cam: CameraState, frame: Frame, items: list[tuple[Observation, np.ndarray]]) -> None:
        assert self.embedder is not None and self.publisher is not None  # Pipeline checked both
        crops = [prot for _, prot in items]  # protected crops only, never raw
        # at most REID.BATCH crops per Re-ID call: a crowded frame does not make one huge batch
        embeddings = [
            e for i in range(0, len(crops), self.reid_batch) for e in self.embedder(crops[i : i + self.reid_batch])
        ]
        for (obs, _), emb in zip(items, embeddings, strict=True):
            sent = self.publisher.publish(
                camera_id=cam.spec.camera_id,
                frame_index=frame.index,
                timestamp_ms=frame.timestamp_ms,
                track_id=obs.track_id,
                box=tuple(obs.box),
                score=obs.score,
                embedding=emb,
                reid_fingerprint=self.reid_fingerprint,
                anonymizer_fingerprint=self.anonymizer.fingerprint,
                anonymization=self.anonymizer.kind,
            )
            cam.published += bool(sent)
