"""``python -m reid.service ...``: the matching service's command line (:func:`reid.service.cli.main`)."""

import os
import sys

# One matrix-vector product per new track: multi-threaded BLAS only adds synchronisation at these
# sizes (benchmarks/matcher_scaling.py). Must be set before numpy loads, hence here and before the
# import below (the package's __init__ loads nothing); an operator's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from reid.service.cli import main  # noqa: E402  (after the BLAS settings above)

if __name__ == "__main__":
    sys.exit(main())
