"""Moved to :mod:`transport.kafka_io` (the bottom layer that stream/ and reid/ share).

This path stays as a re-export because run_pipeline.py imports it; new code imports
``transport.kafka_io``.
"""

from transport.kafka_io import *  # noqa: F403
from transport.kafka_io import __all__  # noqa: F401
