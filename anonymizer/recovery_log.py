"""Tamper-evident, append-only audit log of authorized recoveries (JSON Lines with a hash chain).

Restoring people's original crops is the one operation this project exists to keep rare and
accountable, so the log is written *before* any restored pixel exists (a ``started`` record of
intent) and again when the restored output is in place (``completed``) or abandoned (``failed``).
A recovery whose intent cannot be recorded does not happen.

Format: one canonical JSON object per line (keys sorted, no whitespace, UTF-8)::

    {"event":"recovery","hash":"<64 hex>","prev":"<64 hex>","seq":1,"status":"started","v":1,...}

* ``hash`` — sha256 (hex) of the record's canonical JSON without ``hash`` itself, so an edited
  record is named at its own line unless the editor also recomputed it;
* ``prev`` — the previous record's ``hash`` (:data:`GENESIS` for the first), so editing, deleting,
  reordering or inserting a record breaks the link after it even when hashes were recomputed;
* ``seq`` — the 1-based position of the record in the file (names deletions and moves directly);
* ``recovery_id`` — the same random id in a recovery's ``started`` and outcome records.

A chain cannot show that its *tail* was cut off: ``verify`` prints the head hash, which can be kept
elsewhere (a ticket, a second log) and passed back as ``--anchor`` to prove nothing was truncated
since. A ``started`` record without an outcome is reported as a warning: a killed process leaves
one too.

Writers take an exclusive ``fcntl.flock`` on the log for read-tail-then-append, so concurrent
recoveries append one after the other instead of forking the chain, and every append is fsynced
(file and folder) before the caller goes on. Only a regular file is accepted as the log (no
symlink, FIFO, socket, device such as ``/dev/null``, or folder: each would let records vanish); a
new log is created with mode 0600 because it names cameras, tracks and operators.

Command line::

    python -m anonymizer.recovery_log verify LOG [--anchor HEAD_HASH]   # 0 intact, 1 broken, 2 unreadable
    python -m anonymizer.recover verify-log LOG [--anchor HEAD_HASH]    # the same
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import os
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
GENESIS = hashlib.sha256(b"privreid recovery audit log v1 genesis").hexdigest()
CHAIN_FIELDS = ("v", "seq", "prev", "hash")


class AuditLogError(RuntimeError):
    """The audit log cannot be used (wrong kind of file, not writable, broken chain, failed write)."""


def canonical(record: dict[str, Any]) -> bytes:
    """The one byte string a record hashes to: re-serializing a parsed line must give the same hash."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def record_hash(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON, its own ``hash`` field left out."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_log_path(path: str | Path) -> Path:
    """``path`` if it is a regular file or does not exist yet; :class:`AuditLogError` otherwise.

    Checked up front for a clear message; :class:`AuditLog` checks the opened file again, so a
    file swapped in between is caught as well.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise AuditLogError(f"audit log {path}: cannot stat it ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise AuditLogError(
            f"audit log {path} is {_kind(st.st_mode)}; it must be a regular file, so that every record is kept"
        )
    return path


# ------------------------------------------------------------------------------- verification
@dataclass
class ChainReport:
    """What :func:`verify_chain` found; ``broken_line`` is None when the chain is intact."""

    records: int = 0
    head: str = GENESIS
    broken_line: int | None = None
    problem: str = ""
    hashes: list[str] = field(default_factory=list)
    open_recoveries: dict[str, int] = field(default_factory=dict)  # recovery_id → line of 'started'

    @property
    def ok(self) -> bool:
        return self.broken_line is None


def _check_line(raw: bytes, n: int, prev: str, last_torn: bool) -> tuple[dict[str, Any] | None, str]:
    """(record, "") when line ``n`` is a well-formed link after ``prev``, else (None, what is wrong)."""
    if last_torn:
        return None, "the last record has no line end (a torn write, or an edit)"
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "not a JSON record (edited, or inserted text)"
    if not isinstance(rec, dict) or any(k not in rec for k in CHAIN_FIELDS):
        return None, f"not an audit record (missing one of {', '.join(CHAIN_FIELDS)})"
    if rec["hash"] != record_hash(rec):
        return None, "the record's hash does not match its content: it was edited"
    if rec["seq"] != n:
        return None, f"record has seq {rec['seq']!r} at line {n}: records were deleted, inserted or reordered"
    if rec["prev"] != prev:
        return None, (
            "its prev hash is not the hash of the record before it: a record was edited and "
            "re-hashed, replaced, deleted, inserted or moved"
        )
    return rec, ""


def verify_chain(data: bytes) -> ChainReport:
    """Check every link of a log's bytes; stops at the first broken line."""
    rep = ChainReport()
    if not data:
        return rep
    lines = data.split(b"\n")
    torn = lines[-1] != b""
    if not torn:
        lines = lines[:-1]
    for n, raw in enumerate(lines, 1):
        rec, problem = _check_line(raw, n, rep.head, last_torn=torn and n == len(lines))
        if rec is None:
            rep.broken_line, rep.problem = n, problem
            return rep
        rep.head = rec["hash"]
        rep.hashes.append(rep.head)
        rep.records = n
        rid, status = rec.get("recovery_id"), rec.get("status")
        if rid is not None:
            if status == "started":
                rep.open_recoveries[str(rid)] = n
            else:
                rep.open_recoveries.pop(str(rid), None)
    return rep


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _fsync_dir(folder: Path) -> None:
    dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# ------------------------------------------------------------------------------- writing
class AuditLog:
    """An open audit log that appends chained records; create it before anything sensitive happens.

    Opening fails with :class:`AuditLogError` when the log is not a regular file, cannot be
    created or written (read-only folder or file system), or its chain is already broken: a
    recovery must not start without a place to record it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_log_path(path)
        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditLogError(f"audit log folder {folder} cannot be created ({exc.strerror})") from None
        existed = self.path.exists()
        # O_NONBLOCK: opening a FIFO for writing would otherwise wait for a reader. O_NOFOLLOW: a
        # symlink planted after the check above is refused, not followed.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise AuditLogError(f"audit log {self.path} is a symbolic link; it must be a regular file") from None
            if exc.errno == errno.ENXIO:
                raise AuditLogError(f"audit log {self.path} is a FIFO or socket; it must be a regular file") from None
            raise AuditLogError(f"audit log {self.path} cannot be opened for appending ({exc.strerror})") from None
        try:
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                raise AuditLogError(f"audit log {self.path} is {_kind(st.st_mode)}; it must be a regular file")
            if not existed:
                os.fchmod(self._fd, 0o600)  # exactly 0600 whatever the umask
                _fsync_dir(folder)
            elif st.st_mode & 0o077:
                print(
                    f"warning: audit log {self.path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                    "it names cameras, tracks and operators",
                    file=sys.stderr,
                )
            with self._locked():
                rep = verify_chain(_read_all(self._fd))
            if not rep.ok:
                raise AuditLogError(
                    f"audit log {self.path} is broken at line {rep.broken_line}: {rep.problem}. "
                    "Investigate it (python -m anonymizer.recovery_log verify) and start a new log"
                )
        except OSError as exc:
            os.close(self._fd)
            raise AuditLogError(f"audit log {self.path} cannot be used ({exc.strerror})") from None
        except BaseException:
            os.close(self._fd)
            raise

    def _locked(self) -> _Flock:
        return _Flock(self._fd)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Chain ``record`` to the current tail, write it and fsync; returns the record as written.

        Raises :class:`AuditLogError` when the record is not on disk afterwards; a partly written
        line is cut off again so that the chain stays verifiable.
        """
        if any(k in record for k in CHAIN_FIELDS):
            raise ValueError(f"audit record must not set {', '.join(CHAIN_FIELDS)} itself")
        with self._locked():
            try:
                data = _read_all(self._fd)
                rep = verify_chain(data)
                if not rep.ok:
                    raise AuditLogError(f"audit log {self.path} is broken at line {rep.broken_line}: {rep.problem}")
                full = {**record, "v": FORMAT_VERSION, "seq": rep.records + 1, "prev": rep.head}
                try:
                    full["hash"] = record_hash(full)
                    line = canonical(full) + b"\n"
                except (TypeError, ValueError) as exc:  # NaN, or a value JSON cannot hold
                    raise AuditLogError(f"audit record cannot be serialized ({exc})") from None
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(self._fd, view) :]
                    os.fsync(self._fd)
                    _fsync_dir(self.path.parent)
                except OSError:
                    try:
                        os.ftruncate(self._fd, len(data))
                        os.fsync(self._fd)
                    except OSError:
                        pass
                    raise
            except OSError as exc:
                raise AuditLogError(f"audit record could not be written to {self.path} ({exc.strerror})") from None
        return full

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Flock:
    def __init__(self, fd: int, op: int = fcntl.LOCK_EX) -> None:
        self.fd, self.op = fd, op

    def __enter__(self) -> None:
        fcntl.flock(self.fd, self.op)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------- command line
def verify_file(path: str | Path, anchor: str | None = None) -> tuple[int, str]:
    """(exit status, message) for ``verify``: 0 intact, 1 broken or anchor missing, 2 unreadable."""
    path = Path(path)
    try:
        check_log_path(path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except AuditLogError as exc:
        return 2, f"error: {exc}"
    except OSError as exc:
        return 2, f"error: audit log {path} cannot be read ({exc.strerror})"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return 2, f"error: audit log {path} is not a regular file"
        with _Flock(fd, fcntl.LOCK_SH):  # a record half-appended by a running recovery is not a break
            rep = verify_chain(_read_all(fd))
    finally:
        os.close(fd)
    if not rep.ok:
        return 1, f"{path}: BROKEN at line {rep.broken_line}: {rep.problem} ({rep.records} records intact before it)"
    if anchor is not None and anchor.lower() not in rep.hashes:
        return 1, (
            f"{path}: chain intact ({rep.records} records) but no record has the anchor hash {anchor}: "
            "records were cut off the end, or the log was rewritten"
        )
    lines = [f"{path}: OK, {rep.records} records, chain intact; head {rep.head}"]
    for rid, n in rep.open_recoveries.items():
        lines.append(
            f"warning: line {n}: recovery {rid} started but has no completed/failed record "
            "(killed, still running, or its record was cut off the end)"
        )
    return 0, "\n".join(lines)


def verify_main(argv: Iterable[str] | None = None, prog: str = "python -m anonymizer.recovery_log verify") -> int:
    """``verify LOG [--anchor HASH]``: 0 intact, 1 broken (the first bad line is named), 2 unreadable."""
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Check a recovery audit log's hash chain: exit 0 when "
        "intact, 1 naming the first broken line, 2 when it cannot be read.",
    )
    ap.add_argument("log", help="audit log (JSON Lines)")
    ap.add_argument(
        "--anchor",
        default=None,
        help="a head hash printed by an earlier verify: fail if no record has it (truncated log)",
    )
    args = ap.parse_args(list(argv) if argv is not None else None)
    rc, message = verify_file(args.log, args.anchor)
    print(message, file=sys.stderr if rc else sys.stdout)
    return rc


def main(argv: Iterable[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m anonymizer.recovery_log", description="Recovery audit log tools.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("verify", help="check the hash chain: exit 0 intact, 1 broken (names the first bad line)")
    ap.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
