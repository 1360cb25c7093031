"""numpy's own BLAS, made callable from numba kernels: its sgemm, and its thread count.

The engine runs each thread's share of a layer (im2col, product, bias, activation, pool,
tile after tile) as one numba call. A numba kernel cannot call ``np.matmul``, so this module
registers BLAS's ``cblas_sgemm`` with LLVM under one name, ``SYMBOL``, which the kernels
call through ``sgemm`` (kernels.gemm wraps it). Calling it from Python tile by tile would make
the threads queue for the GIL between calls, so two threads would barely beat one.

Where numpy's bundled OpenBLAS is not found (a numpy built against another BLAS: conda's MKL,
macOS's Accelerate), the name is given to ``portable_sgemm()``, plain numba loops: correct but
several times slower, and darkfold warns once.
"""

import ctypes
import glob
import os
import warnings

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types

SYMBOL = "darkfold_cblas_sgemm"
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # cblas.h's enums

# cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), with the
# 64-bit integers of numpy's OpenBLAS ("ILP64"); pointers pass as 64-bit integers.
_ARGUMENTS = (types.int32, types.int32, types.int32, types.int64, types.int64, types.int64, types.float32,
              types.int64, types.int64, types.int64, types.int64, types.float32, types.int64, types.int64)
sgemm = types.ExternalFunction(SYMBOL, types.void(*_ARGUMENTS))

# numpy >= 2 wheels, then numpy 1.22-1.26 wheels: both ILP64.
_SGEMM_NAMES = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")


def _numpy_openblas_libraries():
    """The OpenBLAS libraries bundled with numpy's wheels (numpy.libs, or .dylibs on macOS)."""
    root = os.path.dirname(np.__file__)
    for folder in (os.path.join(root, os.pardir, "numpy.libs"), os.path.join(root, ".dylibs")):
        for path in sorted(glob.glob(os.path.join(folder, "*openblas*"))):
            try:
                yield ctypes.CDLL(path)
            except OSError:
                continue


def _find_openblas():
    """(library, address of its ILP64 cblas_sgemm), or (None, None)."""
    for library in _numpy_openblas_libraries():
        for name in _SGEMM_NAMES:
            function = getattr(library, name, None)
            if function is not None:
                return library, ctypes.cast(function, ctypes.c_void_p).value
    return None, None


_POINTER = types.CPointer(types.float32)
_C_SIGNATURE = types.void(*_ARGUMENTS[:7], _POINTER, types.int64, _POINTER, types.int64, types.float32, _POINTER,
                          types.int64)


def _row_major_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """cblas_sgemm for row-major matrices (the only order the kernels use), in plain loops."""
    for i in range(m):
        for j in range(n):  # beta = 0: C is not read (it may hold NaNs), as in BLAS
            c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        for p in range(k):
            scale = alpha * (a[i * lda + p] if trans_a == NO_TRANS else a[p * lda + i])
            if trans_b == NO_TRANS:
                for j in range(n):
                    c[i * ldc + j] += scale * b[p * ldb + j]
            else:
                for j in range(n):
                    c[i * ldc + j] += scale * b[j * ldb + p]


def portable_sgemm():
    """The address of ``_row_major_sgemm`` compiled as a C function (compiled on first use)."""
    return numba.cfunc(_C_SIGNATURE, cache=True, error_model="numpy")(_row_major_sgemm).address


_library, _address = _find_openblas()
if _library is None:
    warnings.warn("darkfold: numpy's bundled OpenBLAS was not found, so the engine multiplies matrices with "
                  "its own portable loops (about 3x slower); numpy's wheels from PyPI bring OpenBLAS",
                  RuntimeWarning, stacklevel=2)
llvm.add_symbol(SYMBOL, _address if _library is not None else portable_sgemm())


def _thread_setter():
    """OpenBLAS's ``openblas_set_num_threads_local`` (OpenBLAS >= 0.3.27), or None: it sets
    the calling thread's BLAS threads only, so the user's own numpy calls keep theirs."""
    setter = getattr(_library, "openblas_set_num_threads_local", None) if _library is not None else None
    if setter is not None:
        setter.argtypes = [ctypes.c_int]
        setter.restype = ctypes.c_int  # the thread's previous setting
    return setter


set_threads = _thread_setter()
