"""darkfold.kernels.gemm: the products the kernels call, against numpy in float64."""

import numpy as np
import pytest

from darkfold.kernels.gemm import gemm, matmul_streaming


@pytest.mark.parametrize("rows, depth, cols", [(49, 512, 64), (4, 16, 4), (7, 33, 9), (3, 5, 2), (1, 1, 1),
                                               (13, 100, 3), (8, 2304, 12), (6, 0, 5)])
@pytest.mark.parametrize("layout", ["row views", "transposed"])
def test_matmul_streaming_is_a_matrix_product_for_any_shape(rows, depth, cols, layout):
    """4x4 blocks, leftover rows and columns, prefetching past a block; operands that are
    views into wider matrices, or transposed; ``out`` a view of columns."""
    rng = np.random.default_rng(rows * 1000 + cols)
    a = rng.standard_normal((rows, depth), dtype=np.float32)
    wider = rng.standard_normal((cols, depth + 3), dtype=np.float32)
    b_rows = wider[:, 1:1 + depth]
    if layout == "transposed":
        a, b_rows = np.asfortranarray(a), np.asfortranarray(b_rows)
    out = np.full((rows, cols + 2), np.nan, np.float32)
    matmul_streaming(a, b_rows, out[:, 1:1 + cols])
    expected = a.astype(np.float64) @ b_rows.T.astype(np.float64)
    np.testing.assert_allclose(out[:, 1:1 + cols], expected, rtol=1e-5, atol=1e-5 * np.sqrt(depth))
    assert np.isnan(out[:, 0]).all() and np.isnan(out[:, -1]).all()


def _operands(rng, rows, cols):
    """The same matrix as the kernels meet it: C-contiguous, transposed, and a view of rows."""
    matrix = rng.standard_normal((rows, cols), dtype=np.float32)
    wider = np.zeros((rows, cols + 5), np.float32)
    wider[:, 2:2 + cols] = matrix
    return {"C": matrix, "transposed": np.ascontiguousarray(matrix.T).T, "view": wider[:, 2:2 + cols]}


@pytest.mark.parametrize("a_kind", ["C", "transposed", "view"])
@pytest.mark.parametrize("b_kind", ["C", "transposed", "view"])
def test_gemm_matches_numpy_for_every_operand_layout(a_kind, b_kind):
    rng = np.random.default_rng(3)
    a, b = _operands(rng, 37, 19)[a_kind], _operands(rng, 19, 23)[b_kind]
    out = np.full((37, 30), np.nan, np.float32)
    gemm(a, b, out[:, 4:27])  # into a view of rows, as the engine writes channel blocks
    np.testing.assert_allclose(out[:, 4:27], a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    assert np.isnan(out[:, :4]).all() and np.isnan(out[:, 27:]).all()
