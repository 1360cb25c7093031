"""How darkfold compiles its numba kernels: the options every kernel shares.

At the ground of the package, so that the kernels beside their users (nms.py, resize.py,
thread_flags.py) and the engine's (kernels/) compile alike without importing one another.
"""

import numba
import numpy as np

# error_model="numpy": with Python's, every division tests for zero and raises, and that branch
# keeps LLVM from vectorising the loop.
kernel = numba.njit(cache=True, nogil=True, error_model="numpy")

f32 = np.float32  # constants in float32, so numba keeps the arithmetic in single precision
