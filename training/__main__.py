"""``python -m training --config_file configs/AGW_baseline.yml [KEY VALUE ...]``

The seed's ``tools/main.py`` command line: every seed command runs with ``tools/main.py`` replaced
by ``-m training``. Multi-process: ``torchrun --nproc_per_node N -m training ...``.
"""

from __future__ import annotations

import argparse
import sys

from configs import ConfigError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config_file", default="", help="YAML config (e.g. configs/AGW_baseline.yml)")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, as in the seed")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from .config import load_config

    try:
        cfg = load_config(args.config_file or None, args.opts)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.dump())
        return 0
    from reid.models import PretrainUnavailableError

    from . import engine
    from .datasets import DatasetError

    try:
        engine.run(cfg)
    except (DatasetError, PretrainUnavailableError, engine.ModeNotAvailableError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
