"""``video``: the camera's anonymized video, one fragmented MP4 or rolling segments (``OUTPUT.SEGMENT_S``)."""

from __future__ import annotations

from stream.outputs import SINKS, SinkContext
from stream.segments import open_video_sink
from stream.sinks import VideoSink


@SINKS.register("video")
def video(ctx: SinkContext) -> VideoSink:
    return open_video_sink(
        ctx.cfg.OUTPUT,
        ctx.out_dir,
        ctx.stem,
        ctx.width,
        ctx.height,
        ctx.fps,
        live=ctx.live,
        audio_from=ctx.audio_from,
        audio_codec=ctx.audio_codec,
        on_segment=ctx.on_segment,
    )
