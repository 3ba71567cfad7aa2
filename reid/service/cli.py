"""``python -m reid.service`` / ``privreid match`` and ``privreid erase``: the service's command line.

    python -m reid.service [run] --bootstrap HOST:PORT [--topic reid.features] [--group reid-matcher]
        [--output-topic reid.matches] [--out matches.jsonl] [--exit-when-idle SECONDS]
        [--snapshot-dir DIR] [--config-file configs/service.yaml] [KEY VALUE ...]
    python -m reid.service erase --global-id N [--bootstrap HOST:PORT] [--snapshot-dir DIR]

Flags are spellings of config keys (``configs/service_defaults.py``); the config decides.
Exit status: 0 after a clean stop, 1 when the service stopped otherwise, 2 on a usage or config error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence

from configs import ConfigError, build_config
from configs.service_defaults import get_service_defaults
from reid.service.erasure import erase_in_snapshots, send_erase_command
from reid.service.loop import MatchingService
from transport.kafka_io import KafkaConfigError


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reid.service",
        description="Cross-camera matching service (consumer group member). Subcommand 'erase' removes an identity.",
    )
    p.add_argument("--bootstrap", help="HOST:PORT[,HOST:PORT] (config key BOOTSTRAP)")
    p.add_argument("--topic", help="input topic (TOPIC, default reid.features)")
    p.add_argument("--group", help="consumer group (GROUP, default reid-matcher)")
    p.add_argument("--output-topic", help="match events topic (OUTPUT_TOPIC, default reid.matches; '' = none)")
    p.add_argument("--out", help="also append match events to this JSONL file (OUT)")
    p.add_argument("--snapshot-dir", help="gallery snapshots (STATE.SNAPSHOT_DIR)")
    p.add_argument("--exit-when-idle", type=float, metavar="SECONDS", help="exit after SECONDS without input")
    p.add_argument("--config-file", help="YAML on top of configs/service_defaults.py")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("overrides", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. MATCHER.THRESHOLD 0.7")
    return p


def _erase_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m reid.service erase",
        description="Erase every embedding of one global identity: publish a command "
        "that running services apply (--bootstrap), and/or edit the "
        "snapshots of a stopped service (--snapshot-dir).",
    )
    p.add_argument("--global-id", type=int, required=True)
    p.add_argument("--bootstrap", help="publish the command to the control topic of this cluster")
    p.add_argument("--control-topic", help="default: CONTROL_TOPIC (reid.control)")
    p.add_argument("--snapshot-dir", help="edit the snapshot files in this folder directly")
    p.add_argument("--reason", default="", help="free text recorded with the command")
    p.add_argument("--config-file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service (``[run] ...``) or the erase tool (``erase ...``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if argv[:1] == ["erase"]:
        args = _erase_parser().parse_args(argv[1:])
        if not args.bootstrap and not args.snapshot_dir:
            print("error: give --bootstrap (running services) and/or --snapshot-dir (stopped service)", file=sys.stderr)
            return 2
        try:
            cfg = build_config(get_service_defaults(), args.config_file)
            if args.snapshot_dir:
                n = erase_in_snapshots(args.snapshot_dir, args.global_id)
                print(f"removed {n} tracks of global id {args.global_id} from the snapshots in {args.snapshot_dir}")
            if args.bootstrap:
                rid = send_erase_command(args.bootstrap, args.global_id, cfg, args.control_topic, args.reason)
                print(
                    f"erase command {rid} for global id {args.global_id} published to "
                    f"{args.control_topic or cfg.CONTROL_TOPIC}"
                )
        except (ConfigError, KafkaConfigError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if argv[:1] == ["run"]:
        argv = argv[1:]
    args = _run_parser().parse_args(argv)
    logging.getLogger().setLevel(getattr(logging, args.log_level))
    overrides = list(args.overrides)
    for flag, key in (
        (args.bootstrap, "BOOTSTRAP"),
        (args.topic, "TOPIC"),
        (args.group, "GROUP"),
        (args.output_topic, "OUTPUT_TOPIC"),
        (args.out, "OUT"),
        (args.snapshot_dir, "STATE.SNAPSHOT_DIR"),
    ):
        if flag is not None:
            overrides += [key, repr(flag)]
    try:
        cfg = build_config(get_service_defaults(), args.config_file, overrides)
        service = MatchingService(None, cfg)
    except (ConfigError, KafkaConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop())
    summary = service.run(exit_when_idle_s=args.exit_when_idle)
    print(json.dumps({k: v for k, v in summary.items()}, sort_keys=True))
    return 0 if summary.get("state") == "stopped" else 1
