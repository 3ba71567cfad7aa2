"""The recovery audit log comes first: intent is on disk before any restored pixel, the log is a
hash chain that shows tampering, only a regular file can be the log, and restored output is private."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import cv2
import pytest

import anonymizer.recover as recover_mod
import anonymizer.recovery_log as rlog
from anonymizer.recover import main as recover_main
from anonymizer.recovery_log import GENESIS, AuditLog, AuditLogError, canonical, record_hash, verify_file
from tests.test_recovery import N_FRAMES, make_recovery_setup

REAL_VIDEO_WRITER = cv2.VideoWriter


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_recovery_setup(tmp_path_factory.mktemp("rec_audit"))


def _args(setup, output: Path, audit: Path, *extra: str) -> list[str]:
    root, bundle, _, video, obs = setup
    return [
        "--bundle",
        str(bundle),
        "--key-file",
        str(root / "right.key"),
        "--video",
        str(video),
        "--observations",
        str(obs),
        "--output",
        str(output),
        "--audit-log",
        str(audit),
        "--operator",
        "auditor-test",
        "--reason",
        "audit test",
        "--quiet",
        *extra,
    ]


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_decrypt(monkeypatch):
    """Fails the test if G_R is ever unsealed: a refused recovery must stop before that."""

    def refuse(*a, **k):
        raise AssertionError("G_R was decrypted although the recovery should have been refused")

    monkeypatch.setattr(recover_mod, "load_recovery", refuse)


# ----------------------------------------------------------------------------- order of events
def test_completed_recovery_is_recorded_twice_and_private(setup, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out, log = out_dir / "rec.mp4", tmp_path / "logs" / "audit.jsonl"
    old = os.umask(0o022)  # a usual umask must not make restored people readable
    try:
        assert recover_main(_args(setup, out, log, "--tracks", "1")) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert sorted(p.name for p in out_dir.iterdir()) == ["rec.mp4"]  # no temporary left
    started, completed = _records(log)
    assert (started["status"], completed["status"]) == ("started", "completed")
    assert started["recovery_id"] == completed["recovery_id"]
    assert started["prev"] == GENESIS and completed["prev"] == started["hash"] == record_hash(started)
    _, _, _, video, obs = setup
    for key in ("operator", "os_user", "host", "key_id", "bundle_fingerprint", "time"):
        assert started[key], key
    assert started["video"] == str(video.resolve()) and started["video_sha256"] == _sha256(video)
    assert started["observations"] == str(obs.resolve()) and started["output"] == str(out.resolve())
    assert started["tracks_requested"] == ["1"] and "output_sha256" not in started
    assert completed["output_sha256"] == _sha256(out)
    assert completed["frames_restored"] == N_FRAMES and completed["tracks"] == ["1"]
    assert recover_main(["verify-log", str(log)]) == 0
    assert "OK, 2 records" in capsys.readouterr().out


def test_intent_is_on_disk_before_decryption_and_a_failed_write_leaves_nothing(setup, tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, log = out_dir / "rec.mp4", out_dir / "audit.jsonl"
    seen: dict[str, Any] = {}
    real_load = recover_mod.load_recovery

    def load_after_checking(*a, **k):
        seen["at_decrypt"] = [r["status"] for r in _records(log)]
        return real_load(*a, **k)

    class FailingWriter:
        """The real writer, until the third frame: then the disk is 'full'."""

        def __init__(self, path: str, *a: Any) -> None:
            seen["partial"] = Path(path)
            seen["partial_mode"] = stat.S_IMODE(os.stat(path).st_mode)
            self._w, self._n = REAL_VIDEO_WRITER(path, *a), 0

        def isOpened(self) -> bool:
            return self._w.isOpened()

        def write(self, frame) -> None:
            self._n += 1
            if self._n == 3:
                raise OSError(errno.ENOSPC, "injected: no space left on device")
            self._w.write(frame)

        def release(self) -> None:
            self._w.release()

    monkeypatch.setattr(recover_mod, "load_recovery", load_after_checking)
    monkeypatch.setattr(recover_mod.cv2, "VideoWriter", FailingWriter)
    assert recover_main(_args(setup, out, log)) == 1
    assert seen["at_decrypt"] == ["started"]
    assert seen["partial"].parent == out_dir and seen["partial_mode"] == 0o600
    assert sorted(p.name for p in out_dir.iterdir()) == ["audit.jsonl"]  # neither output nor partial file
    started, failed = _records(log)
    assert (started["status"], failed["status"]) == ("started", "failed")
    assert failed["recovery_id"] == started["recovery_id"] and "no space left" in failed["error"]
    assert verify_file(log)[0] == 0


def test_unrecorded_completion_removes_the_restored_output(setup, tmp_path, monkeypatch, capsys):
    out, log = tmp_path / "rec.mp4", tmp_path / "audit.jsonl"
    real_append = AuditLog.append

    def append(self, record):
        if record.get("status") == "completed":
            raise AuditLogError("injected: completion record lost")
        return real_append(self, record)

    monkeypatch.setattr(AuditLog, "append", append)
    assert recover_main(_args(setup, out, log)) == 2
    assert not out.exists() and "was removed" in capsys.readouterr().err
    assert [r["status"] for r in _records(log)] == ["started", "failed"]
    assert "completion record not written" in _records(log)[1]["error"]


# ----------------------------------------------------------------------------- unusable logs
@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_audit_folder_refuses_before_anything(setup, tmp_path, no_decrypt, capsys):
    logs, out_dir = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out_dir.mkdir()
    logs.chmod(0o500)
    try:
        rc = recover_main(_args(setup, out_dir / "rec.mp4", logs / "audit.jsonl"))
    finally:
        logs.chmod(0o700)
    assert rc == 2 and "audit log" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == [] and list(logs.iterdir()) == []


def test_read_only_file_system_refuses_before_anything(setup, tmp_path, monkeypatch, no_decrypt, capsys):
    """Runs as root too: the file system's refusal is injected at the log's open()."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    log = tmp_path / "ro" / "audit.jsonl"
    real_open = os.open

    def open_(path, flags, *a, **k):
        if Path(path) == log:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(rlog.os, "open", open_)
    assert recover_main(_args(setup, out_dir / "rec.mp4", log)) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and "Nothing was decrypted or written" in err
    assert list(out_dir.iterdir()) == []


def _non_regular(kind: str, tmp_path: Path) -> tuple[Path, Any]:
    if kind == "dev-null":
        return Path("/dev/null"), None
    path = tmp_path / f"log-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
        return path, None
    if kind == "directory":
        path.mkdir()
        return path, None
    if kind == "symlink":
        target = tmp_path / "elsewhere.jsonl"
        target.touch()
        path.symlink_to(target)
        return path, target
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return path, sock


@pytest.mark.parametrize("kind", ["dev-null", "fifo", "socket", "directory", "symlink"])
def test_non_regular_audit_log_is_refused(kind, setup, tmp_path, no_decrypt, capsys):
    log, extra = _non_regular(kind, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    try:
        assert recover_main(_args(setup, out_dir / "rec.mp4", log)) == 2
    finally:
        if isinstance(extra, socket.socket):
            extra.close()
    assert "must be a regular file" in capsys.readouterr().err
    assert list(out_dir.iterdir()) == []
    if kind == "symlink":
        assert extra.read_bytes() == b""  # the link's target was not written through


def test_output_may_not_overwrite_the_audit_log(setup, tmp_path, no_decrypt):
    log = tmp_path / "audit.jsonl"
    assert recover_main(_args(setup, log, log)) == 2
    assert not log.exists()


# ----------------------------------------------------------------------------- the hash chain
def _log_with(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "chain.jsonl"
    with AuditLog(path) as log:
        for i in range(n):
            log.append({"event": "recovery", "status": "started", "recovery_id": f"r{i}", "operator": f"op{i}"})
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines))


def _edit(line: str, rehash: bool) -> str:
    rec = json.loads(line)
    rec["operator"] = "someone else"
    if rehash:
        rec["hash"] = record_hash(rec)
    return canonical(rec).decode() + "\n"


def _tamper(kind: str, path: Path) -> None:
    lines = _lines(path)
    if kind == "edit":
        lines[1] = _edit(lines[1], rehash=False)
    elif kind == "edit-and-rehash":
        lines[1] = _edit(lines[1], rehash=True)
    elif kind == "delete":
        del lines[1]
    elif kind == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif kind == "insert":
        lines.insert(2, lines[1])  # a replayed record
    elif kind == "insert-text":
        lines.insert(2, "\n")
    elif kind == "torn":
        lines[-1] = lines[-1][:-20]
    _rewrite(path, lines)


@pytest.mark.parametrize(
    "kind,line",
    [
        ("edit", 2),
        ("edit-and-rehash", 3),
        ("delete", 2),
        ("reorder", 2),
        ("insert", 3),
        ("insert-text", 3),
        ("torn", 4),
    ],
)
def test_verify_names_the_first_broken_line(kind, line, tmp_path, capsys):
    path = _log_with(tmp_path)
    assert recover_main(["verify-log", str(path)]) == 0
    _tamper(kind, path)
    assert recover_main(["verify-log", str(path)]) == 1
    assert f"BROKEN at line {line}:" in capsys.readouterr().err
    assert rlog.main(["verify", str(path)]) == 1  # the module's own command line agrees


def test_anchor_shows_a_cut_off_tail(tmp_path, capsys):
    path = _log_with(tmp_path)
    assert verify_file(path)[0] == 0
    head = json.loads(_lines(path)[-1])["hash"]
    assert recover_main(["verify-log", str(path), "--anchor", head]) == 0
    _rewrite(path, _lines(path)[:-1])
    assert recover_main(["verify-log", str(path)]) == 0  # a chain alone cannot tell...
    assert recover_main(["verify-log", str(path), "--anchor", head]) == 1  # ...its anchor can
    assert "anchor" in capsys.readouterr().err


def test_recovery_refuses_to_append_to_a_broken_log(setup, tmp_path, no_decrypt, capsys):
    path = _log_with(tmp_path)
    _tamper("delete", path)
    before = path.read_bytes()
    assert recover_main(_args(setup, tmp_path / "rec.mp4", path)) == 2
    assert "broken at line 2" in capsys.readouterr().err
    assert path.read_bytes() == before and not (tmp_path / "rec.mp4").exists()


def test_concurrent_writers_keep_one_chain(tmp_path):
    path = tmp_path / "shared.jsonl"
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with AuditLog(path) as log:
                for i in range(15):
                    log.append({"event": "test", "writer": w, "i": i})
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rc, message = verify_file(path)
    assert rc == 0 and "60 records" in message
    assert [r["seq"] for r in _records(path)] == list(range(1, 61))


def test_records_cannot_set_their_own_chain_fields(tmp_path):
    with AuditLog(tmp_path / "a.jsonl") as log, pytest.raises(ValueError):
        log.append({"event": "x", "prev": GENESIS})
