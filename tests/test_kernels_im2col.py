"""darkfold.kernels.im2col against plain numpy, on the edge cases the engine's layers reach."""

import numpy as np
import oracle
import pytest

from darkfold.activations import LEAKY
from darkfold.batchnorm import NO_BATCHNORM
from darkfold.kernels.im2col import NCHW_PLANES, NHWC_WINDOWS, POINTWISE, conv_rows, im2col_nchw, im2col_nhwc


def im2col_reference(x, size, stride_x, stride_y, padding, dilation, out_h, out_w):
    """(c*size*size, n*out_h*out_w) columns of NCHW ``x``, in Darknet's (c, ky, kx) order."""
    c = x.shape[1]
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding + 32), (padding, padding + 32)))
    rows = []
    for ci in range(c):
        for ky in range(size):
            for kx in range(size):
                y0, x0 = ky * dilation, kx * dilation
                rows.append(padded[:, ci, y0:y0 + stride_y * out_h:stride_y, x0:x0 + stride_x * out_w:stride_x]
                            .reshape(-1))
    return np.array(rows, np.float32)


@pytest.mark.parametrize("n, c, h, w, size, stride_x, stride_y, padding, dilation", [
    (1, 3, 16, 16, 3, 1, 1, 1, 1),
    (2, 3, 15, 17, 3, 2, 2, 1, 1),
    (1, 3, 10, 12, 3, 1, 2, 2, 2),
    (2, 4, 12, 8, 3, 2, 1, 0, 1),
    (1, 5, 9, 9, 1, 1, 1, 0, 1),
    (1, 2, 11, 10, 5, 3, 3, 2, 1),
])
def test_both_im2col_layouts_match_a_reference_on_any_row_range(n, c, h, w, size, stride_x, stride_y, padding,
                                                                  dilation):
    out_h = (h + 2 * padding - dilation * (size - 1) - 1) // stride_y + 1
    out_w = (w + 2 * padding - dilation * (size - 1) - 1) // stride_x + 1
    x = np.random.default_rng(0).random((n, c, h, w), dtype=np.float32)
    expected = im2col_reference(x, size, stride_x, stride_y, padding, dilation, out_h, out_w)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    rows = n * out_h * out_w
    for start, stop in [(0, rows), (3, rows - 5), (out_w - 1, out_w + 2)]:
        planes = np.full((c * size * size, stop - start), np.nan, np.float32)
        im2col_nchw(x, start, stop, size, stride_x, stride_y, padding, dilation, out_h, out_w, planes)
        np.testing.assert_array_equal(planes, expected[:, start:stop])
        windows = np.full((stop - start, size * size * c), np.nan, np.float32)
        im2col_nhwc(nhwc, start, stop, size, stride_x, stride_y, padding, dilation, out_h, out_w, windows)
        # (ky, kx, c) order in NHWC rows
        reordered = expected[:, start:stop].reshape(c, size, size, -1).transpose(3, 1, 2, 0).reshape(stop - start, -1)
        np.testing.assert_array_equal(windows, reordered)


@pytest.mark.parametrize("left, size, padding", [(POINTWISE, 1, 0), (NHWC_WINDOWS, 3, 1), (NCHW_PLANES, 3, 1)])
def test_conv_rows_builds_each_kind_of_left_operand_and_convolves(left, size, padding):
    """One thread's tiles (every other tile of 5 rows), into channels 2: of a wider output."""
    rng = np.random.default_rng(6)
    n, c, h, w, f = 2, 3, 6, 7, 4
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weights = rng.standard_normal((f, c, size, size), dtype=np.float32)
    biases = rng.standard_normal(f, dtype=np.float32)
    if left == NCHW_PLANES:  # rows of the right side in (c, ky, kx) order, as Darknet stores them
        source, matrix = x, weights.reshape(f, -1).T.copy()
    else:  # (ky, kx, c) order, as im2col_nhwc lays out a window
        source, matrix = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), weights.transpose(2, 3, 1, 0).reshape(-1, f).copy()
    out = np.full((n * h * w, f + 2), np.nan, np.float32)
    tile, k = 5, matrix.shape[0]
    cols, product, started = np.empty(tile * k, np.float32), np.empty(tile * f, np.float32), np.zeros(1, np.int64)
    for first in (0, tile):
        conv_rows(source, left, (size, 1, 1, padding, 1, h, w), matrix, biases, NO_BATCHNORM, LEAKY, out, 2, False,
                  False, first, 2 * tile, tile, cols, product, started)
    assert started[0] == 1 and np.isnan(out[:, :2]).all()
    for image in range(n):
        direct = oracle.conv2d(x[image].astype(np.float64), weights, 1, 1, padding)
        expected = oracle.activate(direct + biases[:, None, None], "leaky").transpose(1, 2, 0).reshape(-1, f)
        np.testing.assert_allclose(out[image * h * w:(image + 1) * h * w, 2:], expected, rtol=1e-5, atol=1e-5)
