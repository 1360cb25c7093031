"""darkfold.blas: the GEMM the kernels call where numpy's OpenBLAS is not found."""

import ctypes

import numpy as np
import pytest

from darkfold import blas


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (0.5, 2.0)])
def test_the_portable_sgemm_matches_numpy(trans_a, trans_b, alpha, beta):
    """The GEMM the kernels call where numpy's OpenBLAS is not found (blas.py), called as BLAS is."""
    pointer, integer = ctypes.c_void_p, ctypes.c_int64
    sgemm = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, integer, integer, integer,
                             ctypes.c_float, pointer, integer, pointer, integer, ctypes.c_float, pointer,
                             integer)(blas.portable_sgemm())
    rng = np.random.default_rng(4)
    m, n, k = 5, 7, 3
    a = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    c = rng.standard_normal((m, n), dtype=np.float32) if beta else np.full((m, n), np.nan, np.float32)
    expected = alpha * (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b) + beta * np.nan_to_num(c)
    flag = {False: blas.NO_TRANS, True: blas.TRANS}
    sgemm(blas.ROW_MAJOR, flag[trans_a], flag[trans_b], m, n, k, alpha, a.ctypes.data, a.shape[1], b.ctypes.data,
          b.shape[1], beta, c.ctypes.data, n)
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5)
