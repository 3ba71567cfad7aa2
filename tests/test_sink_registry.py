"""Outputs are registered sinks (``OUTPUT.SINKS``): a contributed sink gets every redacted frame and
nothing else, and a name nobody registered stops the run before any frame is read."""

from __future__ import annotations

import json

import pytest

import run_pipeline
from anonymizer.redactor import RedactedFrame
from stream.outputs import SINKS, SinkContext
from tests.conftest import vtest_path

FRAMES = 12


class CaptureSink:
    """A by-product output that keeps what it was handed (types and shapes, not pixels)."""

    def __init__(self) -> None:
        self.kinds: list[type] = []
        self.shapes: list[tuple[int, ...]] = []
        self.closed = False

    def write(self, frame) -> None:
        self.kinds.append(type(frame))
        self.shapes.append(tuple(frame.image.shape))

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def capture_sink():
    made: list[CaptureSink] = []

    def factory(ctx: SinkContext) -> CaptureSink:
        made.append(CaptureSink())
        return made[-1]

    SINKS.add("capture", factory)
    try:
        yield made
    finally:
        SINKS._entries.pop("capture", None)  # registrations are process-wide; keep this one inside the test


def test_a_registered_sink_receives_every_redacted_frame(tmp_path, capture_sink) -> None:
    code = run_pipeline.main(
        [
            "--source", str(vtest_path()), "--output", str(tmp_path), "--max-frames", str(FRAMES),
            "--detector", "hog", "--anonymizer", "mosaic",
            "OUTPUT.SINKS", "['video', 'capture']", "LOG.PROGRESS", "False",
        ]
    )  # fmt: skip
    assert code == 0
    (sink,) = capture_sink
    assert sink.closed
    assert sink.kinds and set(sink.kinds) == {RedactedFrame}
    summary = json.loads(next(tmp_path.glob("*.summary.json")).read_text())
    assert len(sink.kinds) == summary["frames"] == FRAMES
    assert set(sink.shapes) == {(summary["height"], summary["width"], 3)}


def test_an_unknown_sink_is_refused_at_start(tmp_path, capsys) -> None:
    code = run_pipeline.main(
        ["--source", str(vtest_path()), "--output", str(tmp_path), "--max-frames", "3", "--detector", "hog",
         "--anonymizer", "mosaic", "OUTPUT.SINKS", "['video', 'no-such-sink']"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "OUTPUT.SINKS" in err and "no-such-sink" in err and "restream" in err
    assert not list(tmp_path.glob("*.mp4"))  # refused before a camera opened
