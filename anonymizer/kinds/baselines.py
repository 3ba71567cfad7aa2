"""The hand-made protections of ``anonymizer.baselines`` as anonymizer kinds: mosaic, blur, noise."""

from __future__ import annotations

from anonymizer.baselines import DEFAULT_PARAMS, BaselineAnonymizer
from anonymizer.kinds import ANONYMIZERS

for _kind in DEFAULT_PARAMS:
    ANONYMIZERS.add(_kind, BaselineAnonymizer)
