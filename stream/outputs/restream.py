"""``restream``: each camera's anonymized video pushed to an RTSP server (``OUTPUT.RESTREAM``; off when empty)."""

from __future__ import annotations

from stream.outputs import SINKS, SinkContext
from stream.restream import RestreamSink, restream_url


@SINKS.register("restream")
def restream(ctx: SinkContext) -> RestreamSink | None:
    template = str(ctx.cfg.OUTPUT.RESTREAM)
    if not template:
        return None
    # redacted frames only, like the file; its outages never stop the camera
    return RestreamSink(restream_url(template, ctx.camera_id), ctx.width, ctx.height, ctx.source_fps, ctx.camera_id)
