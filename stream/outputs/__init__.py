"""The outputs a camera's redacted frames go to, one registered factory per kind (``OUTPUT.SINKS``).

A contributor adds one module to this package and decorates a factory in it::

    # stream/outputs/preview.py
    from stream.outputs import SINKS, SinkContext

    @SINKS.register("preview")
    def preview(ctx: SinkContext):
        return None if not ctx.cfg.OUTPUT.PREVIEW else PreviewSink(...)  # None: off for this camera

and names it in ``OUTPUT.SINKS`` (plus its own config keys in ``configs/pipeline_defaults.py``). The
registry imports this package's modules the first time a name is asked for (``privreid.registry``).

What every sink promises: it is handed :class:`anonymizer.redactor.RedactedFrame` objects only and
refuses anything else (fail-closed: nothing raw leaves), ``write(frame)`` and ``close()``. ``video``
is the camera's record, the one the observations log follows (placement callbacks, frames counted in
the file after closing): it is always built, first; the others (``restream``) are by-products whose
outages never stop the camera, built when their own settings turn them on (a factory returns None
otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privreid.registry import Registry

PRIMARY = "video"  # the sink whose file the observations log describes; required in OUTPUT.SINKS


@dataclass(frozen=True)
class SinkContext:
    """What a sink factory may use for one camera: its config (camera-file overrides applied), where
    and under which name its files go, and its video's geometry and rates."""

    cfg: Any  # the camera's pipeline config
    out_dir: Path
    stem: str  # file name stem: the camera id, or id.N after a restart (stream.pipeline.CameraSpec)
    camera_id: str
    width: int
    height: int
    fps: float  # the output video's rate (a capped live camera: its cap)
    source_fps: float  # the source's own rate
    live: bool
    audio_from: Path | None = None
    audio_codec: str | None = None
    on_segment: Callable[[Any], None] | None = None  # segmented video: called when a segment starts


SinkFactory = Callable[[SinkContext], Any]  # a sink, or None when it is off for this camera

SINKS: Registry[SinkFactory] = Registry("output sink", key="OUTPUT.SINKS", package="stream.outputs")


def sink_names(cfg: Any) -> list[str]:
    """``OUTPUT.SINKS`` as a list of names (a single name is accepted too)."""
    value = cfg.OUTPUT.SINKS
    names = [value] if isinstance(value, str) else list(value)
    return [str(n).strip().lower() for n in names if str(n).strip()]


def check_sink_names(cfg: Any) -> None:
    """Every name in ``OUTPUT.SINKS`` registered, and the primary video sink among them; raises
    ``ValueError`` (a :class:`privreid.registry.RegistryError` for an unknown name) otherwise."""
    names = sink_names(cfg)
    if PRIMARY not in names:
        raise ValueError(f"OUTPUT.SINKS must include {PRIMARY!r} (the video the observations describe), got {names}")
    for name in names:
        SINKS.get(name)  # raises, naming the key and the known sinks
    if len(set(names)) != len(names):
        raise ValueError(f"OUTPUT.SINKS names a sink twice: {names}")


def build_sinks(ctx: SinkContext, opened: list[Any]) -> tuple[Any, list[Any]]:
    """The camera's primary video sink and its other sinks, in ``OUTPUT.SINKS`` order. Each one made is
    appended to ``opened`` at once, so that the caller closes them again when a later one fails."""
    primary = SINKS.get(PRIMARY)(ctx)
    opened.append(primary)
    extras: list[Any] = []
    for name in sink_names(ctx.cfg):
        if name == PRIMARY:
            continue
        sink = SINKS.get(name)(ctx)
        if sink is not None:
            opened.append(sink)
            extras.append(sink)
    return primary, extras
