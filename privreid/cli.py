"""``privreid SUBCOMMAND ...``: one command for every job, each subcommand the job's own CLI.

Why a dispatcher and not one big parser: every job keeps its ``python -m`` form and its own
``--help``, so the two spellings cannot drift apart; the subcommand's module is imported only when
it is chosen (a pipeline run never loads the training package, and ``privreid --help`` is instant).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with main(argv), fixed leading arguments, one-line help)
SUBCOMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "run": ("run_pipeline", (), "anonymize videos, image folders and live cameras (run_pipeline.py)"),
    "audit": ("anonymizer.audit", (), "check that an anonymized video left no person raw"),
    "recover": ("anonymizer.recover", (), "restore original crops with the recovery key (audited)"),
    "evaluate-privacy": (
        "anonymizer.evaluate_privacy",
        (),
        "measure a protection against outside, adaptive and recovery attackers",
    ),
    "verify-log": ("anonymizer.recovery_log", ("verify",), "verify the recovery audit log's hash chain"),
    "sign": ("anonymizer.bundle_signing", (), "keygen | sign | verify | bound for anonymizer bundles"),
    "broker": ("stream.broker", (), "a loopback Kafka-protocol broker (tansu) for tests and demos"),
    "hmac-key": ("transport.message_auth", (), "write a per-camera message authentication key"),
    "match": ("reid.service", (), "the cross-camera matching service (Kafka consumer group)"),
    "erase": ("reid.service", ("erase",), "erase every embedding of a global identity"),
    "train": ("training.__main__", (), "train Re-ID / the learned anonymizer (the paper's protocol)"),
    "split": ("training.split", (), "make a dataset's validation split"),
    "export": ("training.export", (), "turn a training run into an anonymizer bundle (--sign-key to sign it)"),
    "bench": ("privreid.bench", (), "run a benchmark of a checkout's benchmarks/ (no NAME: list them)"),
}


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: privreid SUBCOMMAND [ARGS...]   (privreid SUBCOMMAND --help for its options)", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"privreid: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, lead, _ = SUBCOMMANDS[name]
    job = importlib.import_module(module)
    sys.argv = [f"privreid {name}", *lead, *rest]  # jobs that read sys.argv see what the user typed
    code = job.main([*lead, *rest])
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
