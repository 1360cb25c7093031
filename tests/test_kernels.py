"""The numba kernels against plain numpy, on the edge cases the engine's layers reach."""

import numpy as np
import oracle
import pytest

from darkfold import kernels
from darkfold.activations import ACTIVATIONS


@pytest.mark.parametrize("name", sorted(set(ACTIVATIONS) - {"revleaky"}))
def test_activation_matches_darknets_formula(name):
    x = np.concatenate([np.linspace(-100, 100, 20001), [-80.0, -30.0, -20.0, -4.0, -2.0, -1.0, 0.0, 1.0, 4.0, 6.0, 20.0]])
    x = x.astype(np.float32)[None]
    out = x.copy()
    kernels.bias_activate(out, np.zeros(x.shape[1], np.float32), ACTIVATIONS[name])
    expected = oracle.activate(x.astype(np.float64), name)
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=2e-6)


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
        kernels.im2col_nchw(x, start, stop, size, stride_x, stride_y, padding, dilation, out_h, out_w, planes)
        np.testing.assert_array_equal(planes, expected[:, start:stop])
        windows = np.full((stop - start, size * size * c), np.nan, np.float32)
        kernels.im2col_nhwc(nhwc, start, stop, size, stride_x, stride_y, padding, dilation, out_h, out_w, windows)
        # (ky, kx, c) order in NHWC rows
        reordered = expected[:, start:stop].reshape(c, size, size, -1).transpose(3, 1, 2, 0).reshape(stop - start, -1)
        np.testing.assert_array_equal(windows, reordered)


@pytest.mark.parametrize("pool_first", [False, True])
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("n, h, w, c, f, pool", [
    (1, 13, 13, 16, 32, False), (2, 7, 10, 17, 5, False), (1, 1, 1, 16, 3, False), (1, 9, 22, 8, 16, False),
    (2, 10, 6, 16, 8, True), (1, 26, 12, 8, 16, True),  # pool: the 2x2 stride-2 max of the output
])
def test_winograd_matches_a_direct_convolution(tile, n, h, w, c, f, pool, pool_first):
    from darkfold.convolution import WinogradConvolution

    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, h, w, c), dtype=np.float32)
    weights = rng.standard_normal((f, c, 3, 3), dtype=np.float32)
    biases = rng.standard_normal(f, dtype=np.float32)
    at, g, bt = WinogradConvolution.MATRICES[tile]
    positions = len(bt) ** 2
    grid = (-(-h // tile), -(-w // tile))
    tiles = n * grid[0] * grid[1]
    transformed = np.einsum("ai,fcij,bj->abcf", g, weights.astype(np.float64), g).reshape(positions, c, f)
    v = np.full((positions, tiles + 3, c), np.nan, np.float32)  # 3 spare rows: row0 is honoured
    for start in range(0, tiles, 7):  # runs of tiles that start and stop mid tile row
        kernels.winograd_input(x, start, min(start + 7, tiles), *grid, bt.astype(np.float32), v, 3 + start)
    products = np.matmul(v[:, 3:], transformed.astype(np.float32))
    out = np.full((n, h // 2, w // 2, f) if pool else (n, h, w, f), np.nan, np.float32)
    for start in range(0, tiles, 5):
        kernels.winograd_output(np.ascontiguousarray(products[:, start:start + 5]), start, *grid,
                                at.astype(np.float32), biases, kernels.LEAKY, out, 0, pool, pool_first)
    for image in range(n):
        direct = oracle.conv2d(x[image].transpose(2, 0, 1).astype(np.float64), weights, 1, 1, 1)
        expected = oracle.activate(direct + biases[:, None, None], "leaky").transpose(1, 2, 0)
        if pool:
            expected = expected.reshape(h // 2, 2, w // 2, 2, f).max(axis=(1, 3))
        np.testing.assert_allclose(out[image], expected, rtol=1e-5, atol=1e-4)


def _winograd_case(seed, n, h, w, c, f, tile, edges, transposed):
    """A random 3x3 layer, and its weights transformed and stored in blocks ``edges`` as
    WinogradConvolution.prepare stores them (transposed or not)."""
    from darkfold.convolution import WinogradConvolution

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c), dtype=np.float32)
    weights = rng.standard_normal((f, c, 3, 3), dtype=np.float32)
    biases = rng.standard_normal(f, dtype=np.float32)
    at, g, bt = (m.astype(np.float32) for m in WinogradConvolution.MATRICES[tile])
    positions = len(bt) ** 2
    transformed = np.einsum("ai,fcij,bj->abcf", g, weights, g).reshape(positions, c, f).astype(np.float32)
    blocks = [transformed[:, :, a:b] for a, b in zip(edges, edges[1:])]
    flat = np.concatenate([(block.transpose(0, 2, 1) if transposed else block).reshape(-1) for block in blocks])
    grid = (-(-h // tile), -(-w // tile))
    return x, weights, biases, at, bt, positions, flat, np.array(edges, np.int64), grid


def _expect_convolution(out, x, weights, biases):
    for image in range(x.shape[0]):
        direct = oracle.conv2d(x[image].transpose(2, 0, 1).astype(np.float64), weights, 1, 1, 1)
        expected = oracle.activate(direct + biases[:, None, None], "leaky").transpose(1, 2, 0)
        np.testing.assert_allclose(out[image], expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("transposed", [False, True], ids=["rows-per-channel", "transposed"])
def test_winograd_tiles_runs_chunks_and_blocks_of_output_channels(transposed):
    """One thread's loop over chunks of tiles, with the weights stored as blocks of output
    channels (as WinogradConvolution.prepare leaves them), against a direct convolution."""
    n, h, w, c, f, tile = 2, 11, 9, 8, 21, 2
    x, weights, biases, at, bt, positions, flat, edges, grid = _winograd_case(2, n, h, w, c, f, tile,
                                                                              [0, 16, 17, 21], transposed)
    out = np.full((n, h, w, f), np.nan, np.float32)
    chunk = 7
    v, m = np.empty(positions * chunk * c, np.float32), np.empty(positions * chunk * f, np.float32)
    started = np.zeros(1, np.int64)
    for first in range(2):  # two "threads", taking every other chunk
        kernels.winograd_tiles(x, *grid, bt, at, flat, edges, transposed, biases, kernels.LEAKY, out, 0, False,
                               False, first * chunk, 2 * chunk, chunk, v, m, started)
    assert started[0] == 1
    _expect_convolution(out, x, weights, biases)


def test_winograd_channels_runs_blocks_of_output_channels():
    """One thread's loop over blocks of output channels (every other block, from ``first``),
    on the input transformed once, against a direct convolution; into channels 3: of ``out``."""
    n, h, w, c, f, tile = 2, 9, 11, 5, 40, 4
    x, weights, biases, at, bt, positions, flat, edges, grid = _winograd_case(3, n, h, w, c, f, tile,
                                                                              [0, 16, 32, 33, 40], True)
    tiles = n * grid[0] * grid[1]
    v = np.empty((positions, tiles, c), np.float32)
    kernels.winograd_input(x, 0, tiles, *grid, bt, v, 0)
    out = np.full((n, h, w, f + 3), np.nan, np.float32)
    m = np.empty(positions * tiles * 16, np.float32)
    started = np.zeros(1, np.int64)
    for first in range(2):
        kernels.winograd_channels(v, *grid, at, flat, edges, biases, kernels.LEAKY, out, 3, False, False, first, 2,
                                  m, started)
    assert started[0] == 1
    assert np.isnan(out[..., :3]).all()
    _expect_convolution(out[..., 3:], x, weights, biases)


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
    kernels.matmul_streaming(a, b_rows, out[:, 1:1 + cols])
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
    kernels.gemm(a, b, out[:, 4:27])  # into a view of rows, as the engine writes channel blocks
    np.testing.assert_allclose(out[:, 4:27], a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    assert np.isnan(out[:, :4]).all() and np.isnan(out[:, 27:]).all()


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (0.5, 2.0)])
def test_the_portable_sgemm_matches_numpy(trans_a, trans_b, alpha, beta):
    """The GEMM the kernels call where numpy's OpenBLAS is not found (blas.py), called as BLAS is."""
    import ctypes

    from darkfold import blas

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
