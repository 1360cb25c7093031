"""Winograd F(m x m, 3x3) convolution, m = 2 or 4 (convolution.WinogradConvolution): the input
and output transforms, the products of the transformed tiles, and one thread's share of a
layer, by chunks of tiles or by blocks of output channels."""

import numba
import numpy as np

from ..thread_flags import announce
from ..jit import kernel
from .activation import bias_activate
from .gemm import gemm, matmul_streaming


@kernel
def winograd_products(v, weights, transposed, m):
    """``m[p] = v[p] @ weights[p]`` for every transformed position p, by BLAS; with
    ``transposed``, ``v[p] @ weights[p].T`` by matmul_streaming. Not BLAS with transposed
    weights: on these shapes (16 positions, 64-256 tiles, 256-1024 channels) it is slower than
    either."""
    for p in range(v.shape[0]):
        if transposed:
            matmul_streaming(v[p], weights[p], m[p])
        else:
            gemm(v[p], weights[p], m[p])


@kernel
def winograd_weight_block(weights, edges, transposed, block, positions, channels):
    """Block ``block`` of Winograd weights stored as blocks of output channels ``edges[b]:edges[b + 1]``,
    one after another in the flat ``weights``, each (positions, channels, its output channels),
    or with ``transposed`` (positions, its output channels, channels)."""
    f0, f1 = edges[block], edges[block + 1]
    block_weights = weights[positions * channels * f0:positions * channels * f1]
    if transposed:
        return block_weights.reshape(positions, f1 - f0, channels)
    return block_weights.reshape(positions, channels, f1 - f0)


@kernel
def winograd_tiles(x, tiles_h, tiles_w, bt, at, weights, edges, transposed, biases, code, out, col0, pool,
                   pool_first, first, step, chunk, v_buffer, m_buffer, started):
    """One thread's share of a Winograd convolution that runs by chunks of tiles: the chunks of
    ``chunk`` tiles starting at ``first``, ``first + step``, ...: input transform, the products
    (block of output channels by block), output transform (winograd_input, winograd_output)
    into ``out`` channels ``col0:``. ``started[0]`` is set on entry (see thread_flags.announce)."""
    announce(started)
    tiles = x.shape[0] * tiles_h * tiles_w
    positions, c, f = bt.shape[0] ** 2, x.shape[3], edges[-1]
    for start in range(first, tiles, step):
        stop = min(start + chunk, tiles)
        n = stop - start
        v = v_buffer[:positions * n * c].reshape(positions, n, c)
        winograd_input(x, start, stop, tiles_h, tiles_w, bt, v, np.int64(0))  # typed: a literal 0 compiles a copy
        m = m_buffer[:positions * n * f].reshape(positions, n, f)
        for block in range(edges.size - 1):
            block_weights = winograd_weight_block(weights, edges, transposed, block, positions, c)
            winograd_products(v, block_weights, transposed, m[:, :, edges[block]:edges[block + 1]])
        winograd_output(m, start, tiles_h, tiles_w, at, biases, code, out, col0, pool, pool_first)


@kernel
def winograd_channels(v, tiles_h, tiles_w, at, weights, edges, biases, code, out, col0, pool, pool_first, first,
                      step, m_buffer, started):
    """One thread's share of a Winograd convolution that runs by blocks of output channels, on
    the transformed input ``v`` of all the tiles: blocks ``first``, ``first + step``, ...; per
    block, the products (matmul_streaming: the weights are stored transposed) and the output
    transform into ``out`` channels ``col0 + edges[block]:``. ``started[0]`` is set on entry
    (see thread_flags.announce)."""
    announce(started)
    positions, tiles, c = v.shape
    for block in range(first, edges.size - 1, step):
        f0, f1 = edges[block], edges[block + 1]
        m = m_buffer[:positions * tiles * (f1 - f0)].reshape(positions, tiles, f1 - f0)
        # The argument types winograd_tiles passes, so that numba compiles one copy of the products:
        # a typed bool (a literal True is a type of its own), and m as a strided view (all of it).
        transposed = np.bool_(True)
        block_weights = winograd_weight_block(weights, edges, transposed, block, positions, c)
        winograd_products(v, block_weights, transposed, m[:, :, :f1 - f0])
        winograd_output(m, np.int64(0), tiles_h, tiles_w, at, biases[f0:f1], code, out, col0 + f0, pool, pool_first)


@kernel
def _weighted_sum_of_runs(dest, source, offsets, row, count, terms):
    """dest[q] = sum over j of row[j] * source[offsets[j] + q] for q < count, over the j where
    row[j] is not 0: a row of B^T or A^T, whose 4 or 6 entries hold 2 to 5 nonzeros.

    Each Winograd transform step is one of these over a long run of values. One store
    stream per loop: with several, LLVM's aliasing checks give up and the loop stays
    scalar. Sliced views, because an index like ``offsets[j] + q`` may be negative to
    numba, and its wraparound test stops vectorisation too. ``terms`` is scratch for 6 ints.
    """
    terms[:] = 0  # the nonzero entries' positions, then unused ones (position 0)
    used = 0
    for j in range(row.size):
        if row[j] != 0:
            terms[used] = j
            used += 1
    s0, s1 = source[offsets[terms[0]]:offsets[terms[0]] + count], source[offsets[terms[1]]:offsets[terms[1]] + count]
    s2, s3 = source[offsets[terms[2]]:offsets[terms[2]] + count], source[offsets[terms[3]]:offsets[terms[3]] + count]
    s4 = source[offsets[terms[4]]:offsets[terms[4]] + count]
    c0, c1, c2, c3, c4 = row[terms[0]], row[terms[1]], row[terms[2]], row[terms[3]], row[terms[4]]
    if used <= 2:
        for q in range(count):
            dest[q] = c0 * s0[q] + c1 * s1[q]
    elif used == 3:
        for q in range(count):
            dest[q] = c0 * s0[q] + c1 * s1[q] + c2 * s2[q]
    elif used == 4:
        for q in range(count):
            dest[q] = c0 * s0[q] + c1 * s1[q] + c2 * s2[q] + c3 * s3[q]
    elif used == 5:
        for q in range(count):
            dest[q] = c0 * s0[q] + c1 * s1[q] + c2 * s2[q] + c3 * s3[q] + c4 * s4[q]
    else:
        s5, c5 = source[offsets[terms[5]]:offsets[terms[5]] + count], row[terms[5]]
        for q in range(count):
            dest[q] = c0 * s0[q] + c1 * s1[q] + c2 * s2[q] + c3 * s3[q] + c4 * s4[q] + c5 * s5[q]


@kernel
def winograd_input(x, tile0, tile1, tiles_h, tiles_w, bt, v, row0):
    """Winograd F(m x m, 3x3) input transform, B^T d B, of tiles ``tile0:tile1`` into ``v``.

    ``bt`` is B^T, n x n with n = m + 2 (4 or 6). Tile t = (image, ty, tx) in raster order
    covers output pixels (m ty.., m tx..) and reads the n x n input patch from
    (m ty - 1, m tx - 1), zeros outside (padding 1). ``v`` is (n * n, tiles, c), one GEMM
    operand per transformed position; tile ``tile0`` goes to its row ``row0``. The tiles of one tile row are transformed
    together: the row's n input lines are copied with pixel p at phase p % m, index p // m,
    so that every step below is one long vectorised loop.
    """
    _, h, w, c = x.shape
    n = bt.shape[0]
    m = n - 2
    width = tiles_w + 1  # pixels per phase: the last tile reads two past its m
    # zeros: the columns a partial tile row does not fill are transformed too (one long loop)
    # and must not hold NaN or denormal garbage
    lines = np.zeros((n, m * width * c), np.float32)
    columns = np.empty((n, m * width * c), np.float32)  # B^T d, down the columns
    offsets = np.empty(n, np.int64)
    terms = np.empty(6, np.int64)
    t = tile0
    while t < tile1:
        image, tile = divmod(t, tiles_h * tiles_w)
        ty, tx0 = divmod(tile, tiles_w)
        count = min(tiles_w - tx0, tile1 - t)
        for i in range(n):
            y = m * ty - 1 + i
            for phase in range(m):
                target = lines[i].reshape(m, width, c)[phase]
                # pixels p = m index + phase (input column p - 1) this tile row reads
                for index in range(tx0, tx0 + count + (2 > phase)):
                    p = m * index + phase
                    if 0 <= y < h and 1 <= p <= w:
                        for k in range(c):
                            target[index, k] = x[image, y, p - 1, k]
                    else:
                        for k in range(c):
                            target[index, k] = 0
        for i in range(n):
            offsets[i] = i * lines.shape[1]
        for a in range(n):
            _weighted_sum_of_runs(columns[a], lines.reshape(-1), offsets, bt[a], lines.shape[1], terms)
        for j in range(n):  # tile tx reads pixels m tx + j: phase j % m, index tx + j // m
            offsets[j] = ((j % m) * width + tx0 + j // m) * c
        for a in range(n):
            for e in range(n):
                _weighted_sum_of_runs(v[a * n + e].reshape(-1)[(row0 + t - tile0) * c:], columns[a], offsets, bt[e],
                                      count * c, terms)
        t += count


@kernel
def _bias_activate_blocks(y, blocks, count, biases, code):
    """Bias and activation of the first ``count`` tiles of y[i, e] for i, e < ``blocks``."""
    for i in range(blocks):
        for e in range(blocks):
            bias_activate(y[i, e, :count], biases, code)


@kernel
def _pool_blocks(y, half, count):
    """The max of each 2x2 block of y[i, e] (i, e < 2 half) into y[:half, :half], first ``count`` values."""
    for i in range(half):
        for e in range(half):  # in order: each block's first output is read before it is written
            top, bottom = y[2 * i], y[2 * i + 1]
            dest, a, b = y[i, e].reshape(-1), top[2 * e].reshape(-1), top[2 * e + 1].reshape(-1)
            c, d = bottom[2 * e].reshape(-1), bottom[2 * e + 1].reshape(-1)
            for q in range(count):
                dest[q] = max(max(a[q], b[q]), max(c[q], d[q]))


@kernel
def winograd_output(products, tile0, tiles_h, tiles_w, at, biases, code, out, col0, pool, pool_first):
    """Winograd F(m x m, 3x3) output transform, A^T M A, plus bias and activation.

    ``at`` is A^T, m x n. ``products`` is (n * n, tiles, f): the GEMM results of tiles ``tile0:``;
    each tile's m x m outputs go to ``out`` (NHWC) channels ``col0:col0+f``, those inside
    the image only. With ``pool``, the 2x2 stride-2 max of them does, and ``out`` is the
    pooled map (the [maxpool] after the layer; engine.Engine fuses it); with ``pool_first``
    too, the max is taken before the bias and activation. Like the input transform, one
    tile row at a time.
    """
    _, h, w, _ = out.shape
    _, rows, f = products.shape
    size, n = at.shape
    s = np.empty((n, size, tiles_w * f), np.float32)  # M A: s[a, e] holds (tile, channel)
    y = np.empty((size, size, tiles_w, f), np.float32)
    offsets = np.empty(n, np.int64)
    terms = np.empty(6, np.int64)
    t = tile0
    while t < tile0 + rows:
        image, tile = divmod(t, tiles_h * tiles_w)
        ty, tx0 = divmod(tile, tiles_w)
        count = min(tiles_w - tx0, tile0 + rows - t)
        for a in range(n):
            for j in range(n):
                offsets[j] = ((a * n + j) * rows + t - tile0) * f
            for e in range(size):
                _weighted_sum_of_runs(s[a, e], products.reshape(-1), offsets, at[e], count * f, terms)
        for i in range(size):
            for e in range(size):
                for a in range(n):
                    offsets[a] = (a * size + e) * s.shape[2]
                _weighted_sum_of_runs(y[i, e].reshape(-1), s.reshape(-1), offsets, at[i], count * f, terms)
        # With ``pool``, the max of each 2x2 block of outputs goes to y[:half, :half]; before the
        # bias and activation, when the activation never decreases (``pool_first``): the same
        # values, on a quarter of them.
        half = size // 2 if pool else size
        if pool and pool_first:
            _pool_blocks(y, half, count * f)
        _bias_activate_blocks(y, half if pool and pool_first else size, count, biases, code)
        if pool and not pool_first:
            _pool_blocks(y, half, count * f)
        for i in range(min(half, h - half * ty)):
            target = out[image, half * ty + i]
            for e in range(half):
                for tx in range(count):
                    px = half * (tx0 + tx) + e
                    if px < w:
                        for k in range(f):  # unsigned: numba's negative-index test would stop vectorisation
                            target[px, numba.uint64(col0 + k)] = y[i, e, tx, k]
        t += count
