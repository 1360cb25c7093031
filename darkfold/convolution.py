"""[convolutional] layers, the engine's main cost: im2col + GEMM, or Winograd F(2x2) / F(4x4).

Tensors are NHWC, so a (batch * height * width, channels) matrix is a GEMM operand as it is,
the whole batch in one matrix. im2col (numba), the product (numpy's BLAS) and bias +
activation (numba) run tile by tile, so each tile's im2col rows are still in cache for the
product; layers with few pixels split by output channels instead, one block per thread.
"""

import math
from fractions import Fraction
from types import MappingProxyType

import numpy as np

from .activations import NONDECREASING, activation_code
from .batchnorm import NO_BATCHNORM, fold_factors, runtime_batchnorm, scale_filters
from .kernels.activation import bias_or_batchnorm_activate
from .kernels.im2col import NCHW_PLANES, NHWC_WINDOWS, POINTWISE, conv_rows, im2col_nchw, im2col_nhwc
from .kernels.winograd import winograd_channels, winograd_input, winograd_tiles
from .layers import BATCHNORM_ARRAYS
from .step import Step

# Tiles of fewer GEMM rows make BLAS repack the weights too often (PERF-NOTES.md); layers
# with fewer rows than this per thread split by output channels instead.
MIN_TILE_ROWS = 256
ROWS_PER_THREAD_FOR_TILES = 1024
# ... unless the weights are small (MAX_SHARED_WEIGHT_BYTES): then from this many rows per thread.
MIN_ROWS_PER_THREAD = 64
# With few columns (the first layer: 27 x 16) BLAS is bound by memory: 2048-row tiles keep
# operands and product in L2.
MAX_TILE_ROWS = 2048
# An im2col tile of about this many floats stays in a core's L2 cache.
TILE_VALUES = 1 << 17
# Winograd tiles per GEMM: fewer make BLAS's products inefficient.
MIN_WINOGRAD_TILES = 64
# Weights up to this size are cheap for every thread to read (the convolutions' _runs_by_rows and _runs_by_tiles).
MAX_SHARED_WEIGHT_BYTES = 6 << 20
# Output maps at least this wide and high run as Winograd F(4x4, 3x3), smaller ones F(2x2, 3x3).
MIN_F4_SIDE = 20


def float32_array(array):
    """``array`` as C-contiguous, writable float32: the one array type the kernels are compiled
    for (a read-only view of a weights file would make numba compile each kernel again)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    return array if array.flags.writeable else array.copy()


def _linear_parts(layer, arrays, fold):
    """A [convolutional]'s ``(filters, factors, biases, batchnorm)``: its weights as (filters,
    channels, taps); the float64 factor each filter is multiplied by as it is reordered
    (``_reordered``): its BatchNorm's when ``fold`` folds it, else 1; the biases (folded too);
    and the BatchNorm applied at run time, or None."""
    weights = arrays["weights"]
    filters = weights.reshape(*weights.shape[:2], -1)
    if layer.batch_normalize and fold:
        factors, biases = fold_factors(weights, arrays["biases"], *(arrays[name] for name in BATCHNORM_ARRAYS))
        return filters, factors, biases, None
    batchnorm = runtime_batchnorm(arrays) if layer.batch_normalize else None
    return filters, np.ones(len(weights)), float32_array(arrays["biases"]), batchnorm


def _reordered(filters, factors, filters_last=True, out=None):
    """``filters`` (filters, channels, taps), each multiplied by its factor, reordered in one pass
    as (taps, channels, filters): for each tap (ky, kx) a (channels, filters) matrix, rows as
    im2col_nhwc lays out a window; or, not ``filters_last``, as (taps, filters, channels).
    Written into ``out`` (flat, large enough) when given."""
    f, c, t = filters.shape
    shape = (t, c, f) if filters_last else (t, f, c)
    out = np.empty(shape, np.float32) if out is None else out[:f * c * t].reshape(shape)
    scale_filters(filters, factors, out, filters_last)
    return out


class Convolution(Step):
    """[convolutional]: im2col, GEMM, bias (or explicit BatchNorm) and activation."""

    writes_into_route = True  # its tiles write any channel range of a wider buffer

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.code = activation_code(layer)
        # self.batchnorm: (rolling_mean, deviation, scales) when applied at run time, else None
        filters, factors, self.biases, self.batchnorm = _linear_parts(layer, arrays, fold)
        count, size, groups = len(filters), layer.size, layer.groups
        self.reads_planes = layer.index == 0 and groups == 1 and layer.input.c <= 4
        if self.reads_planes:
            # Rows of the GEMM's right side in (c, ky, kx) order: Darknet's own weight order.
            self.matrices = [_reordered(filters.reshape(count, -1, 1), factors)[0]]
        else:
            # (ky, kx, c) order, as im2col_nhwc lays out a window.
            step = count // groups
            parts = [slice(g * step, (g + 1) * step) for g in range(groups)]
            self.matrices = [_reordered(filters[part], factors[part]).reshape(-1, step) for part in parts]
        # A 1x1 convolution reads its input as it is, a (pixels, channels) matrix: NHWC only.
        self.pointwise = (not self.reads_planes and size == 1 and layer.stride_x == layer.stride_y == 1
                          and layer.padding == 0)
        self.geometry = (size, layer.stride_x, layer.stride_y, layer.padding * layer.dilation, layer.dilation,
                         layer.output.h, layer.output.w)
        self._blocks = {}
        self.pool = False  # True: the [maxpool] after this layer is applied as the output is written
        self.pool_first = False

    def pool_2x2(self, pool, threads):
        """Apply ``pool``, the 2x2 stride-2 [maxpool] after this layer, to each tile of GEMM rows
        (whole pairs of lines) as it is finished. Only large maps run by tiles of rows."""
        if len(self.matrices) > 1 or not _is_large_map(self._rows(1), threads):
            return False
        self.pool, self.writes = True, pool.output
        # max(a + b, c + b) = max(a, c) + b, and likewise for a nondecreasing activation; a run-time
        # BatchNorm's scale may be negative.
        self.pool_first = self.batchnorm is None and self.code in NONDECREASING
        return True

    def _rows(self, batch):
        return batch * self.layer.output.h * self.layer.output.w

    # -- the parts -------------------------------------------------------------------------

    def _batchnorm(self, f0, f1):
        """The run-time BatchNorm's (mean, deviation, scales) for channels f0:f1, or empty arrays."""
        if self.batchnorm is None:
            return NO_BATCHNORM
        return tuple(array[f0:f1] for array in self.batchnorm)

    def _bias_activate_into(self, gemm, out, col0, f0, f1):
        """Bias (or BatchNorm) and activation of GEMM columns f0:f1, then into out[:, col0:]."""
        bias_or_batchnorm_activate(gemm, self.biases[f0:f1], self._batchnorm(f0, f1), self.code)
        out[:, col0:col0 + (f1 - f0)] = gemm

    def _im2col(self, x, row0, row1, cols):
        kernel = im2col_nchw if self.reads_planes else im2col_nhwc
        kernel(x, row0, row1, *self.geometry, cols)

    def _by_rows(self, x, flat, out, workers, matrix, col0, f0):
        """Each thread takes every T-th tile of rows (kernels.im2col.conv_rows): im2col, product,
        bias and activation (and pool), all in one numba call per thread."""
        rows, (k, f) = self._rows(x.shape[0]), matrix.shape
        threads = workers.threads
        band = 2 * self.layer.output.w if self.pool else 1  # pooled tiles: whole pairs of lines
        tile = max(MIN_TILE_ROWS, min(MAX_TILE_ROWS, TILE_VALUES // k))
        tiles = threads * math.ceil(rows / (threads * tile))
        tile = band * math.ceil(rows / (tiles * band))
        left = POINTWISE if self.pointwise else NCHW_PLANES if self.reads_planes else NHWC_WINDOWS
        biases, batchnorm = self.biases[f0:f0 + f], self._batchnorm(f0, f0 + f)

        def task(part):
            cols = workers.buffer("cols", 0 if self.pointwise else tile * k)
            product = workers.buffer("gemm", tile * f)
            conv_rows(x, left, self.geometry, matrix, biases, batchnorm, self.code, out, col0, self.pool,
                      self.pool_first, part * tile, threads * tile, tile, cols, product, workers.started)

        workers.run(task, threads, announces=True)

    def _by_channels(self, x, flat, out, workers, matrix, col0, f0):
        """Few rows: im2col once (split by rows), then each thread one block of output channels."""
        rows, k = out.shape[0], matrix.shape[0]
        if self.pointwise:
            left = flat
        else:
            left = workers.shared(rows * k).reshape((k, rows) if self.reads_planes else (rows, k))
            if self.reads_planes:
                workers.split(lambda a, b: self._im2col(x, a, b, left[:, a:b]), rows, left.size)
                left = left.T
            else:
                workers.split(lambda a, b: self._im2col(x, a, b, left[a:b]), rows, left.size)
        blocks = self._column_blocks(matrix, workers.threads)

        def task(part):
            b0, b1, block = blocks[part]
            gemm = workers.buffer("gemm", rows * (b1 - b0)).reshape(rows, b1 - b0)
            np.matmul(left, block, out=gemm)
            self._bias_activate_into(gemm, out, col0 + b0, f0 + b0, f0 + b1)

        workers.run(task, len(blocks))

    def _column_blocks(self, matrix, threads):
        key = (id(matrix), threads)
        if key not in self._blocks:
            edges = _block_edges(matrix.shape[1], threads)
            self._blocks[key] = [(a, b, matrix[:, a:b]) for a, b in zip(edges, edges[1:])]
        return self._blocks[key]

    def _runs_by_rows(self, rows, threads):
        """By tiles of rows on large maps; on smaller ones too, from 64 rows a thread, where the
        weights are small enough for every thread to read them all (as WinogradConvolution's
        _runs_by_tiles); else by blocks of output channels, so that each thread reads only its
        share of large weights."""
        if _is_large_map(rows, threads):
            return True
        weights = sum(matrix.nbytes for matrix in self.matrices)
        return rows >= threads * MIN_ROWS_PER_THREAD and weights <= MAX_SHARED_WEIGHT_BYTES

    # -- the call ----------------------------------------------------------------------------

    def __call__(self, x, outputs, out, workers):
        rows = self._rows(x.shape[0])
        out = out.reshape(-1, out.shape[-1])
        groups = len(self.matrices)
        run = self._by_rows if self.pool or self._runs_by_rows(rows, workers.threads) else self._by_channels
        if groups == 1:
            flat = x.reshape(-1, x.shape[-1]) if self.pointwise else None
            run(x, flat, out, workers, self.matrices[0], self.out_offset, 0)
            return
        step_in = x.shape[-1] // groups
        for g, matrix in enumerate(self.matrices):
            part = np.ascontiguousarray(x[..., g * step_in:(g + 1) * step_in])
            flat = part.reshape(-1, step_in) if self.pointwise else None
            step_out = matrix.shape[1]
            run(part, flat, out, workers, matrix, self.out_offset + g * step_out, g * step_out)


def winograd_matrices(points):
    """Toom-Cook's A^T, G and B^T for Winograd F(m, 3) from its m + 1 finite points (the last
    point is infinity), exactly, as fractions. Y = A^T [(G g G^T) * (B^T d B)] A.

    Row j of B^T holds the coefficients of prod over l != j of (x - p_l), row n - 1 those of
    prod over all l; G row j is (1, p_j, p_j^2) / prod over l != j of (p_j - p_l); A^T
    column j is the powers of p_j (Lavin and Gray, "Fast Algorithms for Convolutional
    Neural Networks", 2015, with the points as free parameters).
    """
    points = [Fraction(p) for p in points]
    m, n = len(points) - 1, len(points) + 1

    def polynomial(roots):  # coefficients, lowest power first
        coefficients = [Fraction(1)]
        for root in roots:
            coefficients = [Fraction(0), *coefficients]
            for i in range(len(coefficients) - 1):
                coefficients[i] -= root * coefficients[i + 1]
        return coefficients

    others = [[q for l, q in enumerate(points) if l != j] for j in range(n - 1)]
    bt = [(polynomial(roots) + [0])[:n] for roots in others] + [polynomial(points)]
    g = [[p**k / math.prod(p - q for q in roots) for k in range(3)] for p, roots in zip(points, others)]
    g.append([0, 0, 1])
    at = [[p**i for p in points] + [int(i == m - 1)] for i in range(m)]
    return (np.array(at, np.float64), np.array(g, np.float64), np.array(bt, np.float64))


class WinogradConvolution(Step):
    """A 3x3, stride 1, pad 1 [convolutional] as Winograd F(m x m, 3x3) with m = 2 or 4:
    (m + 2)^2 GEMMs that together do 4/9 (m = 2) or 1/4 (m = 4) of im2col's multiplications.
    Per tile of m x m output pixels: input transform (numba), one product per transformed
    position (BLAS), output transform + bias + activation (numba).

    F(4x4) has the larger error: ~1e-6 of the output scale per layer against ~2e-7 for
    F(2x2) and for im2col. The points 0, 1, -1, 1/2, -2 give a third of the error of the
    usual 0, 1, -1, 2, -2 (measured on 3x3x256 layers), since 1/2 and -2 keep A^T and G's
    entries balanced.
    """

    writes_into_route = True  # as Convolution

    POINTS = MappingProxyType({2: (0, 1, -1), 4: (0, 1, -1, Fraction(1, 2), -2)})
    MATRICES = MappingProxyType({tile: winograd_matrices(points) for tile, points in POINTS.items()})

    @staticmethod
    def applies(layer, fold):
        return (layer.size == 3 and layer.stride_x == layer.stride_y == 1 and layer.dilation == 1
                and layer.padding == 1 and layer.groups == 1 and layer.input.c >= 16
                and (fold or not layer.batch_normalize))

    @staticmethod
    def tile_size(layer):
        """4 where the map has room for enough 4x4 tiles to keep BLAS's products efficient
        (measured: 1.2-1.6x faster than F(2x2) from 26x26 up, no faster at 13x13), else 2."""
        return 4 if min(layer.output.h, layer.output.w) >= MIN_F4_SIDE else 2

    def __init__(self, layer, arrays, fold):
        self.code = activation_code(layer)
        # BatchNorm is always folded here (applies); prepare() reorders and transforms the weights.
        self._filters, self._factors, self.biases, _ = _linear_parts(layer, arrays, fold)
        self.tile = self.tile_size(layer)
        at, _, bt = self.MATRICES[self.tile]
        self.at, self.bt = float32_array(at), float32_array(bt)
        filters, self.channels = self._filters.shape[:2]
        self.positions = len(bt) ** 2
        self.weight_bytes = 4 * self.positions * self.channels * filters
        self.image_tiles = -(-layer.output.h // self.tile) * -(-layer.output.w // self.tile)
        self.weights = self.edges = self.widest_block = self.transposed = None  # by prepare()
        self.pool = False
        self.pool_first = self.code in NONDECREASING  # BatchNorm is always folded here

    def pool_2x2(self, pool, threads):
        """Apply ``pool``, the 2x2 stride-2 [maxpool] after this layer, as the output transform
        writes: every tile is whole pairs of lines and columns. Returns True: it always can."""
        self.pool, self.writes = True, pool.output
        return True

    def prepare(self, threads):
        """Transform the weights, U = G g G^T for every (filter, channel): one product with
        kron(G, G), in float32 (within 2e-7 of float64, and several times faster). The engine
        calls it, knowing the threads; the first call decides the blocks.

        U is stored as ``threads`` blocks of output channels, one after another, each
        contiguous, one for each thread of ``_by_channels``. In a block, for each position,
        there is a row of weights per input channel, as BLAS reads them fastest; or, for a
        layer that runs by channels on one image, a row per output channel (``transposed``),
        for kernels.gemm.matmul_streaming, which beats BLAS on few tiles and many channels and
        loses to it on the few channels of the layers that run by tiles.

        Each block is contiguous, not a strided view of one matrix: on a view the hardware
        prefetcher restarts at every page of a block's rows."""
        if self.weights is not None:
            return
        g = self.MATRICES[self.tile][1]
        kron = np.kron(g, g).astype(np.float32)
        edges = _block_edges(len(self._filters), threads)
        self.weights = np.empty(self.positions * self.channels * edges[-1], np.float32)
        self.edges = np.array(edges, np.int64)
        self.widest_block = int(np.diff(self.edges).max())
        self.transposed = not self._runs_by_tiles(self.image_tiles, threads)
        taps = np.empty(9 * self.channels * self.widest_block, np.float32)  # one block's g, reused
        for b, (f0, f1) in enumerate(zip(edges, edges[1:])):
            block = _reordered(self._filters[f0:f1], self._factors[f0:f1], not self.transposed, taps)
            np.matmul(kron, block.reshape(9, -1), out=self.block(b).reshape(self.positions, -1))
        del self._filters, self._factors

    def block(self, b):
        """Block ``b`` of the weights, as kernels.winograd.winograd_weight_block finds it."""
        f0, f1 = self.edges[b:b + 2]
        shape = (f1 - f0, self.channels) if self.transposed else (self.channels, f1 - f0)
        return self.weights[self.positions * self.channels * f0:self.positions * self.channels * f1].reshape(
            self.positions, *shape)

    def __call__(self, x, outputs, out, workers):
        if self.weights is None:
            self.prepare(workers.threads)
        n, h, w, _ = x.shape
        grid = (-(-h // self.tile), -(-w // self.tile))
        tiles = n * grid[0] * grid[1]
        # Weights not transposed: the layer runs by tiles for one image, so for any batch.
        if not self.transposed or self._runs_by_tiles(tiles, workers.threads):
            self._by_tiles(x, out, workers, grid, tiles)
        else:
            self._by_channels(x, out, workers, grid, tiles)

    def _runs_by_tiles(self, tiles, threads):
        """By chunks of tiles, each thread reading all the weights, where there are tiles enough
        for every thread's products; with fewer, or with weights too large to read once per
        thread, by blocks of output channels (each thread then reads only its share)."""
        if tiles >= threads * 4 * MIN_WINOGRAD_TILES:
            return True
        return tiles >= threads * MIN_WINOGRAD_TILES and self.weight_bytes <= MAX_SHARED_WEIGHT_BYTES

    def _by_tiles(self, x, out, workers, grid, tiles):
        """Each thread takes every T-th chunk of tiles (kernels.winograd.winograd_tiles):
        transforms and products, all in one numba call per thread."""
        positions, c, f = self.positions, self.channels, int(self.edges[-1])
        threads = workers.threads
        chunk = max(MIN_WINOGRAD_TILES, min(512, TILE_VALUES // (positions * c)))
        chunk = math.ceil(tiles / (threads * math.ceil(tiles / (threads * chunk))))

        def task(part):
            v = workers.buffer("cols", positions * chunk * c)
            m = workers.buffer("gemm", positions * chunk * f)
            winograd_tiles(x, *grid, self.bt, self.at, self.weights, self.edges, self.transposed, self.biases,
                           self.code, out, self.out_offset, self.pool, self.pool_first, part * chunk,
                           threads * chunk, chunk, v, m, workers.started)

        workers.run(task, threads, announces=True)

    def _by_channels(self, x, out, workers, grid, tiles):
        """Few tiles: transform the input once, then each thread one block of output channels."""
        positions, c = self.positions, self.channels
        v = workers.shared(positions * tiles * c).reshape(positions, tiles, c)
        workers.split(lambda a, b: winograd_input(x, a, b, *grid, self.bt, v, a), tiles, v.size)

        blocks, threads = self.edges.size - 1, workers.threads

        def task(part):  # a block per thread, unless this step was prepared for more threads
            m = workers.buffer("gemm", positions * tiles * self.widest_block)
            winograd_channels(v, *grid, self.at, self.weights, self.edges, self.biases, self.code, out,
                              self.out_offset, self.pool, self.pool_first, part, threads, m, workers.started)

        workers.run(task, min(blocks, threads), announces=True)


def _is_large_map(rows, threads):
    """Whether an im2col convolution with this many output pixels always runs by tiles of rows."""
    return rows >= threads * ROWS_PER_THREAD_FOR_TILES


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
