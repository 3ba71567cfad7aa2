"""Moved to :mod:`transport.schema` (the bottom layer that stream/ and reid/ share).

This path stays as a re-export because docs/kafka-contract.md runs ``python -m stream.schema
--json-schema``; new code imports ``transport.schema``.
"""

import sys

from transport.schema import *  # noqa: F403
from transport.schema import __all__  # noqa: F401

if __name__ == "__main__":
    from transport.schema import main

    sys.exit(main())
