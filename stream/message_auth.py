"""Moved to :mod:`transport.message_auth` (the bottom layer that stream/ and reid/ share).

This path stays as a re-export because run_pipeline.py imports it and the docs run ``python -m
stream.message_auth generate``; new code imports ``transport.message_auth``.
"""

import sys

from transport.message_auth import *  # noqa: F403
from transport.message_auth import __all__  # noqa: F401

if __name__ == "__main__":
    from transport.message_auth import main

    sys.exit(main())
