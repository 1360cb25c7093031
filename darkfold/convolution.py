"""[convolutional] layers, the engine's main cost: im2col + GEMM, or Winograd F(2x2, 3x3).

Tensors are NHWC, so a (batch * height * width, channels) matrix is a GEMM operand as it is,
the whole batch in one matrix. im2col (numba), the product (numpy's BLAS) and bias +
activation (numba) run tile by tile, so each tile's im2col rows are still in cache for the
product; layers with few pixels split by output channels instead, one block per thread.
"""

import itertools
import math

import numpy as np

from . import kernels
from .activations import activation_code
from .fold import fold_own_batchnorm, runtime_batchnorm

# Tiles of fewer GEMM rows make BLAS repack the weights too often (PERF-NOTES.md); layers
# with fewer rows than this per thread split by output channels instead.
MIN_TILE_ROWS = 256
ROWS_PER_THREAD_FOR_TILES = 1024
# With few columns (the first layer: 27 x 16) BLAS is bound by memory: 2048-row tiles keep
# operands and product in L2 (measured 1.3x faster than 4096).
MAX_TILE_ROWS = 2048
# An im2col tile of about this many floats stays in a core's L2 cache.
TILE_VALUES = 1 << 17
# Winograd tiles per GEMM: fewer make BLAS's products inefficient.
MIN_WINOGRAD_TILES = 64


def float32_array(array):
    """``array`` as C-contiguous float32: the one array type the kernels are compiled for."""
    return np.ascontiguousarray(array, dtype=np.float32)


class Convolution:
    """[convolutional]: im2col, GEMM, bias (or explicit BatchNorm) and activation."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.code = activation_code(layer)
        self.batchnorm = None  # (rolling_mean, deviation, scales) when applied at run time
        if layer.batch_normalize and fold:
            arrays = fold_own_batchnorm(arrays)
        elif layer.batch_normalize:
            self.batchnorm = runtime_batchnorm(arrays)
        weights, self.biases = arrays["weights"], float32_array(arrays["biases"])
        filters, _, size, _ = weights.shape
        groups = layer.groups
        self.reads_planes = layer.index == 0 and groups == 1 and layer.input.c <= 4
        if self.reads_planes:
            # Rows of the GEMM's right side in (c, ky, kx) order: Darknet's own weight order.
            self.matrices = [float32_array(weights.reshape(filters, -1).T)]
        else:
            # (ky, kx, c) order, as im2col_nhwc lays out a window.
            step = filters // groups
            self.matrices = [float32_array(weights[g * step:(g + 1) * step].transpose(2, 3, 1, 0).reshape(-1, step))
                             for g in range(groups)]
        # A 1x1 convolution reads its input as it is, a (pixels, channels) matrix: NHWC only.
        self.pointwise = (not self.reads_planes and size == 1 and layer.stride_x == layer.stride_y == 1
                          and layer.padding == 0)
        self._blocks = {}

    # -- the parts -------------------------------------------------------------------------

    def _finish(self, gemm, out, col0, f0, f1):
        """Bias (or BatchNorm) and activation of GEMM columns f0:f1, then into out[:, col0:];
        ``out=None`` when the product was written to the output already."""
        if self.batchnorm is not None:
            mean, deviation, scales = self.batchnorm
            kernels.batchnorm_activate(gemm, mean[f0:f1], deviation[f0:f1], scales[f0:f1], self.biases[f0:f1],
                                       self.code)
        else:
            kernels.bias_activate(gemm, self.biases[f0:f1], self.code)
        if out is not None:
            out[:, col0:col0 + (f1 - f0)] = gemm

    def _im2col(self, x, row0, row1, cols):
        layer = self.layer
        kernel = kernels.im2col_nchw if self.reads_planes else kernels.im2col_nhwc
        kernel(x, row0, row1, layer.size, layer.stride_x, layer.stride_y, layer.padding * layer.dilation,
               layer.dilation, layer.output.h, layer.output.w, cols)

    def _left(self, x, flat, row0, row1, workers):
        """The GEMM's left operand for rows row0:row1: a view of x, or im2col in scratch."""
        if self.pointwise:
            return flat[row0:row1]
        k = self.matrices[0].shape[0]
        cols = workers.buffer("cols", (row1 - row0) * k)
        if self.reads_planes:
            cols = cols.reshape(k, row1 - row0)
            self._im2col(x, row0, row1, cols)
            return cols.T
        cols = cols.reshape(row1 - row0, k)
        self._im2col(x, row0, row1, cols)
        return cols

    def _by_rows(self, x, flat, out, workers, matrix, col0, f0):
        """Each thread takes every T-th tile of rows: im2col, product, finish."""
        rows, (k, f) = out.shape[0], matrix.shape
        threads = workers.threads
        tile = max(MIN_TILE_ROWS, min(MAX_TILE_ROWS, TILE_VALUES // k))
        tiles = threads * math.ceil(rows / (threads * tile))
        tile = math.ceil(rows / tiles)

        def task(part):
            for start in range(part * tile, rows, threads * tile):
                stop = min(start + tile, rows)
                left = self._left(x, flat, start, stop, workers)
                if f == out.shape[1]:  # the product goes straight to the output rows
                    gemm, target = out[start:stop], None
                else:
                    gemm = workers.buffer("gemm", (stop - start) * f).reshape(stop - start, f)
                    target = out[start:stop]
                np.matmul(left, matrix, out=gemm)
                self._finish(gemm, target, col0, f0, f0 + f)

        workers.run(task, threads)

    def _by_channels(self, x, flat, out, workers, matrix, col0, f0):
        """Few rows: im2col once (split by rows), then each thread one block of output channels."""
        rows, k = out.shape[0], matrix.shape[0]
        if self.pointwise:
            left = flat
        else:
            left = workers.shared(rows * k).reshape((k, rows) if self.reads_planes else (rows, k))
            if self.reads_planes:
                workers.split(lambda a, b: self._im2col(x, a, b, left[:, a:b]), rows)
                left = left.T
            else:
                workers.split(lambda a, b: self._im2col(x, a, b, left[a:b]), rows)
        blocks = self._column_blocks(matrix, workers.threads)

        def task(part):
            b0, b1, block = blocks[part]
            gemm = workers.buffer("gemm", rows * (b1 - b0)).reshape(rows, b1 - b0)
            np.matmul(left, block, out=gemm)
            self._finish(gemm, out, col0 + b0, f0 + b0, f0 + b1)

        workers.run(task, len(blocks))

    def _column_blocks(self, matrix, threads):
        key = (id(matrix), threads)
        if key not in self._blocks:
            edges = _block_edges(matrix.shape[1], threads)
            self._blocks[key] = [(a, b, matrix[:, a:b]) for a, b in itertools.pairwise(edges)]
        return self._blocks[key]

    # -- the call ----------------------------------------------------------------------------

    def __call__(self, x, outputs, out, workers):
        rows = out.shape[0] * out.shape[1] * out.shape[2]
        out = out.reshape(rows, -1)
        groups = len(self.matrices)
        run = self._by_rows if rows >= workers.threads * ROWS_PER_THREAD_FOR_TILES else self._by_channels
        if groups == 1:
            flat = x.reshape(-1, x.shape[-1]) if self.pointwise else None
            run(x, flat, out, workers, self.matrices[0], 0, 0)
            return
        step_in = x.shape[-1] // groups
        for g, matrix in enumerate(self.matrices):
            part = np.ascontiguousarray(x[..., g * step_in:(g + 1) * step_in])
            flat = part.reshape(-1, step_in) if self.pointwise else None
            step_out = matrix.shape[1]
            run(part, flat, out, workers, matrix, g * step_out, g * step_out)


class WinogradConvolution:
    """A 3x3, stride 1, pad 1 [convolutional] as Winograd F(2x2, 3x3): 16 GEMMs with 4/9 of
    the multiplications of im2col's one. Per 2x2 tile of output pixels: input transform
    (numba), 16 products (BLAS), output transform + bias + activation (numba)."""

    # G in U = G g G^T (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks").
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])

    @staticmethod
    def applies(layer, fold):
        return (layer.size == 3 and layer.stride_x == layer.stride_y == 1 and layer.dilation == 1
                and layer.padding == 1 and layer.groups == 1 and layer.input.c >= 16
                and (fold or not layer.batch_normalize))

    def __init__(self, layer, arrays, fold):
        self.code = activation_code(layer)
        if layer.batch_normalize:
            arrays = fold_own_batchnorm(arrays)
        weights, self.biases = arrays["weights"], float32_array(arrays["biases"])
        # U = G g G^T for every (filter, channel) at once: U[a, b] = sum g[i, j] G[a, i] G[b, j],
        # one product with kron(G, G). G holds 1, 1/2 and 0, so only the sums round.
        filters, channels = weights.shape[:2]
        taps = float32_array(np.asarray(weights).transpose(2, 3, 1, 0)).reshape(9, channels * filters)  # (i, j), c, f
        transformed = np.kron(self.G, self.G).astype(np.float32) @ taps
        self.weights = transformed.reshape(16, channels, filters)
        self._blocks = {}

    def __call__(self, x, outputs, out, workers):
        n, h, w, _ = x.shape
        grid = ((h + 1) // 2, (w + 1) // 2)
        tiles = n * grid[0] * grid[1]
        if tiles >= workers.threads * 4 * MIN_WINOGRAD_TILES:
            self._by_tiles(x, out, workers, grid, tiles)
        else:
            self._by_channels(x, out, workers, grid, tiles)

    def _by_tiles(self, x, out, workers, grid, tiles):
        c, f = self.weights.shape[1:]
        threads = workers.threads
        chunk = max(MIN_WINOGRAD_TILES, min(512, TILE_VALUES // (16 * c)))
        chunk = math.ceil(tiles / (threads * math.ceil(tiles / (threads * chunk))))

        def task(part):
            for start in range(part * chunk, tiles, threads * chunk):
                stop = min(start + chunk, tiles)
                v = workers.buffer("cols", 16 * (stop - start) * c).reshape(16, stop - start, c)
                kernels.winograd_input(x, start, stop, *grid, v)
                m = workers.buffer("gemm", 16 * (stop - start) * f).reshape(16, stop - start, f)
                np.matmul(v, self.weights, out=m)
                kernels.winograd_output(m, start, *grid, self.biases, self.code, out, 0)

        workers.run(task, threads)

    def _by_channels(self, x, out, workers, grid, tiles):
        """Few tiles: transform the input once, then each thread one block of output channels."""
        c = self.weights.shape[1]
        v = workers.shared(16 * tiles * c).reshape(16, tiles, c)
        workers.split(lambda a, b: kernels.winograd_input(x, a, b, *grid, v[:, a:b]), tiles)

        def task(block):
            f0, f1, weights = block
            m = workers.buffer("gemm", 16 * tiles * (f1 - f0)).reshape(16, tiles, f1 - f0)
            np.matmul(v, weights, out=m)
            kernels.winograd_output(m, 0, *grid, self.biases[f0:f1], self.code, out, f0)

        blocks = self._column_blocks(workers.threads)
        workers.run(lambda part: task(blocks[part]), len(blocks))

    def _column_blocks(self, threads):
        if threads not in self._blocks:
            f = self.weights.shape[2]
            edges = _block_edges(f, threads)
            self._blocks[threads] = [(a, b, self.weights[:, :, a:b]) for a, b in itertools.pairwise(edges)]
        return self._blocks[threads]


def _block_edges(columns, threads):
    """Split ``columns`` output channels into up to ``threads`` blocks of multiples of 16
    (whole vector registers for BLAS's kernels). The blocks are views: BLAS takes a matrix
    whose rows are longer than its width, so no copy is needed."""
    parts = min(threads, columns)
    return sorted({min(columns, 16 * round(columns * i / parts / 16)) for i in range(parts)} | {columns})


def make_convolution(layer, arrays, fold):
    """The fastest correct way to run this [convolutional]."""
    if WinogradConvolution.applies(layer, fold):
        return WinogradConvolution(layer, arrays, fold)
    return Convolution(layer, arrays, fold)
