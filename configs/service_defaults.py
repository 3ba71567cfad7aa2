"""Defaults of the cross-camera matching service (``python -m reid.service``).

``configs/service.yaml`` restates them. Every key can be overridden on the command line as
``KEY VALUE`` (e.g. ``MATCHER.THRESHOLD 0.7``); the CLI flags ``--bootstrap``, ``--topic``,
``--group``, ``--output-topic``, ``--out`` and ``--snapshot-dir`` are shortcuts for the keys below.
The Kafka security keys mean exactly what they mean in the pipeline's ``KAFKA`` section.
"""

from yacs.config import CfgNode as CN

from configs.kafka_security import add_security_keys

_C = CN()

_C.BOOTSTRAP = "127.0.0.1:9092"  # HOST:PORT[,HOST:PORT] of the Kafka cluster
_C.TOPIC = "reid.features"  # input: the feature contract (docs/kafka-contract.md)
_C.GROUP = "reid-matcher"  # consumer group; instances of one group share the partitions
_C.OUTPUT_TOPIC = "reid.matches"  # match events ('' = do not publish them)
_C.DLQ_TOPIC = ""  # rejected input with a reason ('' = TOPIC + '.dlq')
_C.CONTROL_TOPIC = "reid.control"  # erasure commands (python -m reid.service erase ...)
_C.OUT = ""  # also append match events to this JSONL file ('' = no file)

_C.MATCHER = CN()
_C.MATCHER.THRESHOLD = 0.65  # cosine similarity to join an existing identity (model-dependent)
_C.MATCHER.MIN_OBSERVATIONS = 1  # observations of a track before its identity is decided
_C.MATCHER.EXPIRY_S = 3600.0  # forget tracks not seen for this long (capture time)
# The one Re-ID model (fingerprint and dimension) whose features are accepted. Never learned from
# the input (a forged first message would otherwise lock out every real camera): set
# REID_FINGERPRINT + EMBEDDING_DIM, BUNDLE or REID_MODEL, else the service refuses to start (exit 2).
# When several are set they must agree.
_C.MATCHER.REID_FINGERPRINT = ""  # sha256 hex, as in the messages' reid_fingerprint
_C.MATCHER.BUNDLE = ""  # a learned anonymizer bundle folder: its Re-ID fingerprint (read-only)
_C.MATCHER.REID_MODEL = ""  # a Re-ID ONNX model file (REID.MODEL of the pipeline): sha256 of the file
_C.MATCHER.EMBEDDING_DIM = 0  # length of the vectors (0 = from BUNDLE / REID_MODEL; needed with REID_FINGERPRINT)

# Plausibility of what a writer of the topic claims (reid/trust.py). Failures go to the DLQ.
_C.TRUST = CN()
_C.TRUST.MAX_FUTURE_SKEW_S = 300.0  # capture time may be this far ahead of the record time (and of our clock)
# How far a capture time may lie behind its record time. Recorded files carry their creation time
# (years old is legitimate), and spooled messages are replayed late, so this only catches the absurd.
_C.TRUST.MAX_AGE_S = 315576000.0  # 10 years
_C.TRUST.MAX_FRAME_JUMP = 300  # a track's frame index may exceed its last one by this many frames ...
_C.TRUST.MAX_FPS = 240.0  # ... plus this many per second of capture time elapsed since then
_C.TRUST.MAX_TRACK_BACKSTEP_S = 10.0  # a newer frame of a track may not be older than its last by more

# Message authentication (stream/message_auth.py): HMAC-SHA256 headers from the publisher.
_C.AUTH = CN()
_C.AUTH.KEYS_FILE = ""  # YAML/JSON: one key for all cameras, or per camera ('' = off)
_C.AUTH.REQUIRE = True  # with KEYS_FILE: refuse records without a MAC (False: only check present ones)

_C.STATE = CN()
_C.STATE.SNAPSHOT_DIR = ""  # gallery snapshots ('' = next to OUT, or none when OUT is '' too)
_C.STATE.SNAPSHOT_INTERVAL_S = 30.0  # also snapshot on partition hand-over, erasure and shutdown

_C.KAFKA = CN()
add_security_keys(_C.KAFKA)  # SECURITY_PROTOCOL, SASL_*, SSL_* (configs/kafka_security.py)
_C.KAFKA.COMPRESSION = "lz4"  # for the match events and the DLQ (gzip|snappy|lz4|zstd|none)
_C.KAFKA.MAX_POLL_RECORDS = 500
_C.KAFKA.FETCH_MAX_WAIT_MS = 100  # the broker answers a fetch after this long even without new data
_C.KAFKA.COMMIT_INTERVAL_MS = 250  # flush outputs + commit offsets at most this often (and on hand-over/stop)
_C.KAFKA.MAX_POLL_INTERVAL_MS = 10000  # also the group's rebalance timeout: joins wait up to this long
_C.KAFKA.SESSION_TIMEOUT_MS = 10000
_C.KAFKA.HEARTBEAT_INTERVAL_MS = 1000
_C.KAFKA.CONNECT_TIMEOUT_MS = 5000
_C.KAFKA.DLQ_MAX_VALUE_BYTES = 16384  # a rejected message is copied to the DLQ up to this size


def get_service_defaults() -> CN:
    """A fresh copy of the matching service defaults."""
    return _C.clone()
