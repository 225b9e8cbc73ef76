"""Everything in ocld that touches the outside world, and the runtime that drives the learners.

One BLAS/OpenMP thread by default (set before numpy loads, when ``stream`` is imported
first; ``stream.runtime.limit_threads`` enforces it afterwards): the learners' matrices are
small, and on a busy 2-core machine a multi-threaded OpenBLAS spins and runs many times
slower (measured here: the Kalman head at 438 instead of ~20,000 samples/s). Set the
variables yourself to override.
"""

import os as _os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")
