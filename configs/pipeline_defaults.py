"""Defaults of the video pipeline (``run_pipeline.py``). ``configs/pipeline.yaml`` restates them.

Every key can be overridden on the command line as ``KEY VALUE`` (e.g. ``DETECTOR.CONF 0.3``).
"""

from yacs.config import CfgNode as CN

from configs.kafka_security import add_security_keys

_C = CN()

_C.SOURCE = CN()
_C.SOURCE.QUEUE_SIZE = 8  # decoded frames buffered per camera before the reader waits
_C.SOURCE.LIVE_DROP_OLD = True  # live sources (RTSP, webcam): drop stale frames instead of lagging
_C.SOURCE.RECONNECT_ATTEMPTS = 3  # live sources at start: a camera that never answers is reported (wrong URL?)
_C.SOURCE.RECONNECT_DELAY_S = 1.0  # first wait after a live source is lost; doubles per attempt ...
_C.SOURCE.RECONNECT_MAX_DELAY_S = (
    2.0  # ... up to this (with +-20 % jitter): a camera is dark at most this long after it is back
)
_C.SOURCE.GIVE_UP_AFTER_S = 0.0  # end a live camera lost for this long (0 = reconnect for as long as the run lasts)
_C.SOURCE.READ_TIMEOUT_S = 10.0  # live sources (RTSP/HTTP, read by FFmpeg): a connection or a read that hangs
# this long counts as lost (OpenCV's open and read timeouts; webcams have none)
_C.SOURCE.IMAGE_FOLDER_FPS = 10.0  # frame rate written for image folders
_C.SOURCE.MAX_PIXELS = 33177600  # larger frames end that camera with a clear error (8K UHD; 0 = no limit)

_C.DETECTOR = CN()
_C.DETECTOR.KIND = "auto"  # auto | hog | a model path (Ultralytics .pt/.onnx/*_openvino_model/.engine, or an
# OpenVINO SSD .xml); 'A,B' = an ensemble, the union of both detectors' regions
_C.DETECTOR.WEIGHTS = "yolo11n.pt"  # what 'auto' tries first (Ultralytics downloads it when online)
_C.DETECTOR.CONF = 0.25  # tracked, observed and published as a person from this score up
_C.DETECTOR.MASK_CONF = 0.05  # masked (never published) from this score up: recall first (docs/privacy-recall.md)
_C.DETECTOR.IOU = 0.5
_C.DETECTOR.IMGSZ = 640
_C.DETECTOR.BATCH = 8  # frames per detector call, gathered across cameras
_C.DETECTOR.DEVICE = ""  # cpu | cuda:0 ...; '' = ANONYMIZER.DEVICE. --device sets all three DEVICE keys (this one,
# ANONYMIZER.DEVICE, REID.DEVICE) except those given as KEY VALUE, which win
_C.DETECTOR.TILES = "auto"  # sliced inference: auto (tiles for frames > 1.5x IMGSZ) | off | COLSxROWS, e.g. 3x2
_C.DETECTOR.TILE_OVERLAP = 0.2  # share of a tile overlapping its neighbour (people cut by one border fit the next)
_C.DETECTOR.HOG_UPSCALE = 1.5  # HOG's window is 64x128 px: run it on the frame enlarged by this factor ...
_C.DETECTOR.HOG_WIDTH = 1920  # ... but never wider than this (speed; 640 = the old downscaled HOG)
_C.DETECTOR.HOG_HIT_THRESHOLD = 0.0
_C.DETECTOR.HOG_MIN_SCORE = 0.3

_C.PRIVACY = CN()
_C.PRIVACY.MOTION_NET = "auto"  # auto | on | off: mask moving foreground no detection covers (static cameras)
_C.PRIVACY.MOTION_WIDTH = 320  # the background model runs on frames resized to this width
_C.PRIVACY.MOTION_WARMUP_FRAMES = 100  # frames learned before the net is trusted: files read them ahead, live
# cameras mask whole frames meanwhile (see detectors/motion.py)
_C.PRIVACY.MOTION_MIN_HEIGHT = 0.025  # smallest blob kept, as a share of the frame height
_C.PRIVACY.MOTION_MIN_AREA = 0.0001  # smallest blob kept, as a share of the frame area
_C.PRIVACY.MOTION_COVERED = 0.9  # a blob this much inside masked regions is already masked (0.6 left a
# walker's back raw beside a large held box: docs/privacy-recall.md)
_C.PRIVACY.FLOOR_SSIM = 0.65  # a protected crop (or box) whose grey SSIM to raw exceeds this stays solid
_C.PRIVACY.FLOOR_MIN_CHANGED = 0.15  # ... as does one whose least-changed half has fewer pixels changed (0 = off)
_C.PRIVACY.LOOKAHEAD_FRAMES = (
    10  # files only (0 = off): output delayed this many frames so a track also masks the frames before it was found
)

_C.TRACKER = CN()
_C.TRACKER.KIND = "bytetrack"  # bytetrack | botsort (Ultralytics' trackers)
_C.TRACKER.HOLD_FRAMES = 15  # keep masking a lost track's predicted box this many frames

_C.ANONYMIZER = CN()
_C.ANONYMIZER.KIND = "auto"  # auto (learned demo bundle, else mosaic) | mosaic | blur | noise | path to a bundle
_C.ANONYMIZER.DEFAULT_BUNDLE = "models/demo"
# comma-separated public key files/folders a bundle must be signed by
# ('' = configs/trusted_keys, and unsigned bundles load with a warning)
_C.ANONYMIZER.TRUSTED_KEYS = ""
_C.ANONYMIZER.MARGIN = 0.1  # box grown by this fraction of its size on each side, clipped to the frame (>= 0)
# a box narrower than this x its height is first widened about its centre (0 = off; docs/privacy-recall.md)
_C.ANONYMIZER.MIN_ASPECT = 0.3
_C.ANONYMIZER.TIMEOUT_S = 2.0  # a crop batch slower than this is masked instead
_C.ANONYMIZER.FILL = (0, 0, 0)  # BGR colour of the fail-closed mask
# learned bundles: auto (the fastest runtime that runs on the device) | torch | onnxruntime | openvino | tensorrt
_C.ANONYMIZER.BACKEND = "auto"
_C.ANONYMIZER.DEVICE = "cpu"  # the device of every network whose own DEVICE key is '' (DETECTOR, REID); --device
_C.ANONYMIZER.MOSAIC_SIZE = 24  # block size at 256x128 (minimum 8: smaller leaves people recognizable)
_C.ANONYMIZER.BLUR_RADIUS = 12.0  # minimum 4.0
_C.ANONYMIZER.NOISE_SIGMA = 0.5  # minimum 0.2
_C.ANONYMIZER.SIDECAR = False  # also write protected crops losslessly (for full-quality recovery)

_C.OUTPUT = CN()
_C.OUTPUT.VIDEO_CODEC = "libx264"
_C.OUTPUT.CRF = 23
_C.OUTPUT.PRESET = "ultrafast"  # x264 preset: the encoder shares the CPU with detection (docs/benchmarks.md)
_C.OUTPUT.THREADS = 1  # encoder threads per camera (0 = FFmpeg decides)
_C.OUTPUT.COPY_AUDIO = True
_C.OUTPUT.KEYFRAME_S = 1.0  # a keyframe at least this often (0 = the encoder's choice: smaller files, the same
# crash loss, since fragments need not start on a keyframe; see docs/security.md)
_C.OUTPUT.RESTREAM = ""  # also push each camera's anonymized video to rtsp://HOST:PORT/path ('{camera_id}' is
# replaced; '' = off; --restream). Only redacted frames; a target that goes away is retried
_C.OUTPUT.FRAGMENT_S = 1.0  # MP4 fragment length in seconds of video: a crash (kill -9) loses at most about
# this much; keyframes stay where the encoder puts them (0 = at keyframes only)
_C.OUTPUT.LIVE_TIMING = "wallclock"  # live cameras: wallclock (constant rate, frames placed by capture time, missing
# ones filled with the previous redacted picture, so the video keeps real time)
# | frames (every processed frame once: plays fast when frames were dropped).
# Files and image folders are always frame for frame
_C.OUTPUT.MAX_FILL_S = 2.0  # wallclock: longest gap filled with repeats; after a longer outage the video jumps
_C.OUTPUT.SEGMENT_S = 0.0  # 0 = one video per camera, <stem>.mp4 (a re-run overwrites it). > 0: rolling MP4
# segments of this many seconds of video, <stem>.<UTC start YYYYMMDDTHHMMSSZ>.mp4,
# each closed and playable on its own, starting on a keyframe; live cameras cut by
# wall-clock time (and at a jump after a long outage), files at the video's own
# time. Observations name each record's segment and its frame in it. Must be
# >= FRAGMENT_S; minutes (300-3600) suit cameras that run for days. Per camera too
_C.OUTPUT.SINKS = ["video", "restream"]  # where redacted frames go, registered in stream/outputs/ (a module and
# a decorator per kind); 'video' is required (the file the observations describe); 'restream' runs only when
# OUTPUT.RESTREAM is set. Per camera too

_C.REID = CN()
_C.REID.MODEL = ""  # '' = the anonymizer bundle's Re-ID network; or an ONNX / bundle path
_C.REID.BATCH = 32  # protected crops per Re-ID call (a crowded frame is embedded in several calls; >= 1)
_C.REID.DEVICE = ""  # device of REID.MODEL: cpu | cuda:0 ...; '' = ANONYMIZER.DEVICE (--device sets it)

_C.KAFKA = CN()
_C.KAFKA.BOOTSTRAP = "off"  # off | embedded | HOST:PORT[,HOST:PORT]
_C.KAFKA.TOPIC = "reid.features"
_C.KAFKA.EMBEDDING_DTYPE = "float16"  # float16 | float32
_C.KAFKA.EVERY_KTH = 1  # publish only every k-th observation of a track
_C.KAFKA.COMPRESSION = "lz4"
_C.KAFKA.SPOOL_DIR = ""  # '' = OUTPUT_DIR/kafka-spool
_C.KAFKA.SPOOL_MAX_MB = 256.0
add_security_keys(_C.KAFKA)  # SECURITY_PROTOCOL, SASL_*, SSL_* (configs/kafka_security.py)
_C.KAFKA.HMAC_KEY_FILE = ""  # sign every record (HMAC-SHA256 headers, stream/message_auth.py); '' = off
_C.KAFKA.MATCHER = True  # with 'embedded', also run the matching service for the run
_C.KAFKA.MATCHER_CONFIG = ""  # YAML for that matching service ('' = configs/service_defaults.py)
_C.KAFKA.LINGER_MS = 20  # producer batching delay (throughput vs latency)
_C.KAFKA.BATCH_KB = 256  # producer batch size per partition
_C.KAFKA.UNREACHABLE_AFTER_S = 5.0  # no acknowledgement for this long = broker down: switch to the spool
_C.KAFKA.RETRY_INTERVAL_S = 1.0  # while spooling, try to reconnect (and replay) this often
_C.KAFKA.MAX_IN_FLIGHT = 50000  # more unacknowledged messages than this = broker lagging: spool instead
_C.KAFKA.SPOOL_FSYNC = "interval"  # interval (fsync each second) | always | never; see stream/spool.py
_C.KAFKA.CONNECT_TIMEOUT_MS = 2000  # first contact with the cluster (start-up and each reconnect attempt)
_C.KAFKA.MAX_BLOCK_MS = 2000  # longest a send may wait for topic metadata in the pipeline's thread
_C.KAFKA.DELIVERY_TIMEOUT_MS = 30000  # kafka-python's own retry budget for one batch

_C.LOG = CN()
_C.LOG.PROGRESS = True

_C.RUN = CN()
_C.RUN.STOP_TIMEOUT_S = 20.0  # SIGTERM/SIGINT: finish, close, flush and exit within this; then exit anyway
_C.RUN.METRICS_PORT = 0  # Prometheus /metrics, /healthz, /readyz on this port (0 = off; --metrics-port)
_C.RUN.CAMERA_POLL_S = 1.0  # --cameras: how often the camera file is checked for changes (also on SIGHUP)


def get_pipeline_defaults() -> CN:
    """A fresh copy of the pipeline defaults."""
    return _C.clone()
