"""Certificates for the claims of the learned-preconditioner reports.

`python -m certify` runs every registered claim through pytest and writes
report/claims.json, report/CLAIMS.md and report/figures/.
"""

__version__ = "0.1.0"

import os as _os

# Before numpy loads: one BLAS thread per process (see certify/plugin.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")
