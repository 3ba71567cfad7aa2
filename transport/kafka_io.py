"""Kafka client settings built from the project's config, in one place for producer and consumers.

The pipeline (``KAFKA`` section of ``configs/pipeline_defaults.py``) and the matching service
(``KAFKA`` section of ``configs/service_defaults.py``) share the security keys, so a cluster with
SASL and/or TLS is configured the same way for both. Secrets never sit in config files: the SASL
password is read from the environment variable named by ``SASL_PASSWORD_ENV``.

Wrong settings raise :class:`KafkaConfigError` naming the key, before any connection is tried.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kafka import codec as kafka_codec

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_COMPRESSION = {
    "none": (None, lambda: True, ""),
    "gzip": ("gzip", kafka_codec.has_gzip, ""),
    "snappy": ("snappy", kafka_codec.has_snappy, "python-snappy"),
    "lz4": ("lz4", kafka_codec.has_lz4, "lz4"),
    "zstd": ("zstd", kafka_codec.has_zstd, "zstandard"),
}
_HOSTPORT_RE = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})")  # always fullmatch


class KafkaConfigError(ValueError):
    """A Kafka setting is wrong; the message names the config key."""


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def parse_bootstrap(bootstrap: str) -> list[str]:
    """``"h1:9092,h2:9092"`` to ``["h1:9092", "h2:9092"]``, refusing anything that is not HOST:PORT."""
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise KafkaConfigError("KAFKA.BOOTSTRAP is empty; expected HOST:PORT[,HOST:PORT]")
    out = []
    for part in bootstrap.split(","):
        part = part.strip()
        m = _HOSTPORT_RE.fullmatch(part)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise KafkaConfigError(f"KAFKA.BOOTSTRAP: {part!r} is not HOST:PORT (from {bootstrap!r})")
        out.append(part)
    return out


def security_config(cfg: Any) -> dict[str, Any]:
    """SASL/TLS keyword arguments for kafka-python clients from the config's security keys."""
    protocol = str(_get(cfg, "SECURITY_PROTOCOL", "PLAINTEXT") or "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise KafkaConfigError(f"KAFKA.SECURITY_PROTOCOL={protocol!r}; expected one of {SECURITY_PROTOCOLS}")
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        mech = str(_get(cfg, "SASL_MECHANISM", "") or "").upper()
        if mech not in SASL_MECHANISMS:
            raise KafkaConfigError(f"KAFKA.SASL_MECHANISM={mech!r} with {protocol}; expected one of {SASL_MECHANISMS}")
        user = str(_get(cfg, "SASL_USERNAME", "") or "")
        if not user:
            raise KafkaConfigError(f"KAFKA.SASL_USERNAME is empty but KAFKA.SECURITY_PROTOCOL is {protocol}")
        env = str(_get(cfg, "SASL_PASSWORD_ENV", "KAFKA_SASL_PASSWORD") or "")
        password = os.environ.get(env) if env else None
        if not password:
            raise KafkaConfigError(
                f"the SASL password is read from the environment variable named by "
                f"KAFKA.SASL_PASSWORD_ENV ({env!r}), which is not set"
            )
        out.update(sasl_mechanism=mech, sasl_plain_username=user, sasl_plain_password=password)
    if protocol.endswith("SSL"):
        for key, arg in (
            ("SSL_CAFILE", "ssl_cafile"),
            ("SSL_CERTFILE", "ssl_certfile"),
            ("SSL_KEYFILE", "ssl_keyfile"),
        ):
            value = str(_get(cfg, key, "") or "")
            if value:
                if not Path(value).is_file():
                    raise KafkaConfigError(f"KAFKA.{key}={value!r}: file not found")
                out[arg] = value
        if bool(out.get("ssl_certfile")) != bool(out.get("ssl_keyfile")):
            raise KafkaConfigError("KAFKA.SSL_CERTFILE and KAFKA.SSL_KEYFILE go together (client certificate)")
    return out


def compression_type(name: str) -> str | None:
    """kafka-python's ``compression_type`` for ``KAFKA.COMPRESSION``; names the pip package when missing."""
    key = str(name or "none").lower()
    if key not in _COMPRESSION:
        raise KafkaConfigError(f"KAFKA.COMPRESSION={name!r}; expected one of {sorted(_COMPRESSION)}")
    value, available, package = _COMPRESSION[key]
    if not available():
        raise KafkaConfigError(
            f"KAFKA.COMPRESSION={key!r} needs the Python package {package!r} (pip install {package})"
        )
    return value


def producer_config(cfg: Any, bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Idempotent, ``acks=all``, compressed producer settings.

    Idempotence plus ``acks=all`` means a retried batch is written once and in order; the publisher
    relies on that for per-camera ordering. ``max_block_ms`` is short because ``send()`` runs in the
    pipeline's thread: an unknown topic or a full buffer must turn into spooling, not a stalled video.
    """
    conf: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "client_id": str(_get(cfg, "CLIENT_ID", "privreid-publisher") or "privreid-publisher"),
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,
        "compression_type": compression_type(_get(cfg, "COMPRESSION", "gzip")),
        "linger_ms": int(_get(cfg, "LINGER_MS", 20)),
        "batch_size": int(_get(cfg, "BATCH_KB", 256)) * 1024,
        "max_block_ms": int(_get(cfg, "MAX_BLOCK_MS", 2000)),
        "request_timeout_ms": int(_get(cfg, "REQUEST_TIMEOUT_MS", 10000)),
        "delivery_timeout_ms": int(_get(cfg, "DELIVERY_TIMEOUT_MS", 30000)),
        "bootstrap_timeout_ms": int(_get(cfg, "CONNECT_TIMEOUT_MS", 2000)),
        "reconnect_backoff_max_ms": 1000,
    }
    conf["linger_ms"] = max(0, conf["linger_ms"])
    conf.update(security_config(cfg))
    conf.update(overrides)
    return conf


def consumer_config(cfg: Any, bootstrap: str, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    """Consumer settings with manual commits: the service commits only after its outputs are flushed."""
    conf: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "client_id": str(_get(cfg, "CLIENT_ID", "privreid-matcher") or "privreid-matcher"),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": str(_get(cfg, "AUTO_OFFSET_RESET", "earliest")),
        "max_poll_records": int(_get(cfg, "MAX_POLL_RECORDS", 500)),
        # how long the broker may hold a fetch while waiting for data: the floor of end-to-end latency
        "fetch_max_wait_ms": int(_get(cfg, "FETCH_MAX_WAIT_MS", 100)),
        "max_poll_interval_ms": int(_get(cfg, "MAX_POLL_INTERVAL_MS", 30000)),
        "session_timeout_ms": int(_get(cfg, "SESSION_TIMEOUT_MS", 10000)),
        "heartbeat_interval_ms": int(_get(cfg, "HEARTBEAT_INTERVAL_MS", 1000)),
        "fetch_max_bytes": 16 * 1024 * 1024,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "bootstrap_timeout_ms": int(_get(cfg, "CONNECT_TIMEOUT_MS", 2000)),
        "reconnect_backoff_max_ms": 1000,
    }
    conf.update(security_config(cfg))
    conf.update(overrides)
    return conf


def admin_config(cfg: Any, bootstrap: str, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap_servers": parse_bootstrap(bootstrap),
        "client_id": "privreid-admin",
        "bootstrap_timeout_ms": int(_get(cfg, "CONNECT_TIMEOUT_MS", 2000)),
    }
    conf.update(security_config(cfg))
    conf.update(overrides)
    return conf


__all__ = [
    "SECURITY_PROTOCOLS",
    "SASL_MECHANISMS",
    "KafkaConfigError",
    "parse_bootstrap",
    "security_config",
    "compression_type",
    "producer_config",
    "consumer_config",
    "admin_config",
]
