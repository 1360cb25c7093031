"""darkfold.kernels.winograd against a direct convolution in float64."""


import numpy as np
import oracle
import pytest

from darkfold.activations import LEAKY
from darkfold.convolution import WinogradConvolution
from darkfold.kernels.winograd import winograd_channels, winograd_input, winograd_output, winograd_tiles


@pytest.mark.parametrize("pool_first", [False, True])
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("n, h, w, c, f, pool", [
    (1, 13, 13, 16, 32, False), (2, 7, 10, 17, 5, False), (1, 1, 1, 16, 3, False), (1, 9, 22, 8, 16, False),
    (2, 10, 6, 16, 8, True), (1, 26, 12, 8, 16, True),  # pool: the 2x2 stride-2 max of the output
])
def test_winograd_matches_a_direct_convolution(tile, n, h, w, c, f, pool, pool_first):
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
        winograd_input(x, start, min(start + 7, tiles), *grid, bt.astype(np.float32), v, 3 + start)
    products = np.matmul(v[:, 3:], transformed.astype(np.float32))
    out = np.full((n, h // 2, w // 2, f) if pool else (n, h, w, f), np.nan, np.float32)
    for start in range(0, tiles, 5):
        winograd_output(np.ascontiguousarray(products[:, start:start + 5]), start, *grid,
                                at.astype(np.float32), biases, LEAKY, out, 0, pool, pool_first)
    for image in range(n):
        direct = oracle.conv2d(x[image].transpose(2, 0, 1).astype(np.float64), weights, 1, 1, 1)
        expected = oracle.activate(direct + biases[:, None, None], "leaky").transpose(1, 2, 0)
        if pool:
            expected = expected.reshape(h // 2, 2, w // 2, 2, f).max(axis=(1, 3))
        np.testing.assert_allclose(out[image], expected, rtol=1e-5, atol=1e-4)


def _winograd_case(seed, n, h, w, c, f, tile, edges, transposed):
    """A random 3x3 layer, and its weights transformed and stored in blocks ``edges`` as
    WinogradConvolution.prepare stores them (transposed or not)."""
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
        winograd_tiles(x, *grid, bt, at, flat, edges, transposed, biases, LEAKY, out, 0, False,
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
    winograd_input(x, 0, tiles, *grid, bt, v, 0)
    out = np.full((n, h, w, f + 3), np.nan, np.float32)
    m = np.empty(positions * tiles * 16, np.float32)
    started = np.zeros(1, np.int64)
    for first in range(2):
        winograd_channels(v, *grid, at, flat, edges, biases, LEAKY, out, 3, False, False, first, 2,
                                  m, started)
    assert started[0] == 1
    assert np.isnan(out[..., :3]).all()
    _expect_convolution(out[..., 3:], x, weights, biases)
