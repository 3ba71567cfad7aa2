#!/usr/bin/python3
"""A real RTSP camera for tests: GStreamer's gst-rtsp-server streaming a video file as H.264.

Run with Debian's ``/usr/bin/python3`` (python3-gi, gir1.2-gst-rtsp-server-1.0):
    /usr/bin/python3 tests/rtsp_server.py --file vtest.avi --port 8554 --mount /cam
Prints ``READY rtsp://127.0.0.1:PORT/MOUNT`` once it listens. The stream plays the file once at
its own rate, then ends (the client sees end-of-stream), unless ``--loop``.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--file", required=True)
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--mount", default="/cam")
    p.add_argument("--fps", type=int, default=10)
    args = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    launch = (
        f"( filesrc location={args.file} ! decodebin ! videoconvert ! videorate ! "
        f"video/x-raw,framerate={args.fps}/1 ! "
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 bitrate=2000 ! "
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_launch(launch)
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on 127.0.0.1:{args.port}", flush=True)
        return 1
    print(f"READY rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    try:
        GLib.MainLoop().run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
