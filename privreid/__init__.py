"""The ``privreid`` command: one entry point for every job of the project (see :mod:`privreid.cli`)."""
