"""The error every output of a camera raises, and an operator's reading of a write error.

Its own module because every output (video, segments, logs, timelines) raises it and the pipeline
catches it: a :class:`SinkError` ends that camera only.
"""

from __future__ import annotations

import errno

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class SinkError(RuntimeError):
    """The output cannot be written (disk full, encoder died); ends that camera only."""


def describe_os_error(exc: BaseException) -> str:
    """An operator's reading of a write error: a full disk (or file-size limit) is named as such."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        what = "disk full" if exc.errno != errno.EFBIG else "disk full or file-size limit reached"
        return f"{what} ({exc.strerror or exc})"
    return str(exc)
