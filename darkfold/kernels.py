"""numba kernels: plain functions over preallocated arrays.

Callers check shapes and dtypes before calling; a kernel never validates.
"""

import os

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

from . import blas
from .activations import (
    ACTIVATIONS,
    ELU,
    GELU,
    HARD_MISH,
    HARDTAN,
    LEAKY,
    LHTAN,
    LINEAR,
    LOGGY,
    LOGISTIC,
    MISH,
    PLSE,
    RAMP,
    RELIE,
    RELU,
    RELU6,
    SELU,
    SWISH,
    TANH,
    clamp,
    elu,
    exp_by_squaring,
    gelu,
    hard_mish,
    hardtan,
    leaky,
    lhtan,
    logistic,
    loggy,
    mish,
    plse,
    ramp,
    relie,
    relu,
    relu6,
    selu,
    stair,
    swish,
    tanh,
)


# ------------------------------------------------------------------------------------------------
# Inference kernels. Tensors are NHWC float32 (batch, height, width, channels), C-contiguous;
# a 2-D view (batch * height * width, channels) is a GEMM operand as it is. Every kernel
# releases the GIL (nogil) so the engine's worker threads run them side by side.

_F = np.float32  # constants in float32, so numba keeps the arithmetic in single precision


# error_model="numpy": with Python's, every division tests for zero and raises, and that
# branch keeps LLVM from vectorising the loop.
_math = numba.njit(cache=True, nogil=True, error_model="numpy")

# activations.py's plain-Python formulas, compiled wherever a kernel calls them, with the
# kernels' error model, so a formula's divisions do not stop vectorisation.
for _function in {exp_by_squaring, clamp, *(activation.formula for activation in ACTIVATIONS.values())}:
    register_jitable(error_model="numpy")(_function)


@_math
def activate(x, code):
    """Darknet's activation ``code`` of one float32 value (activations.h)."""
    if code == LEAKY:
        return leaky(x)
    if code == LINEAR:
        return x
    if code == RELU:
        return relu(x)
    if code == LOGISTIC:
        return logistic(x)
    if code == MISH:
        return mish(x)
    if code == SWISH:
        return swish(x)
    if code == TANH:
        return tanh(x)
    if code == HARD_MISH:
        return hard_mish(x)
    if code == RELU6:
        return relu6(x)
    if code == ELU:
        return elu(x)
    if code == SELU:
        return selu(x)
    if code == GELU:
        return gelu(x)
    if code == RELIE:
        return relie(x)
    if code == RAMP:
        return ramp(x)
    if code == LOGGY:
        return loggy(x)
    if code == PLSE:
        return plse(x)
    if code == HARDTAN:
        return hardtan(x)
    if code == LHTAN:
        return lhtan(x)
    return stair(x)


@numba.njit(cache=True, nogil=True)
def im2col_nhwc(x, row0, row1, size, stride_x, stride_y, padding, dilation, out_h, out_w, cols):
    """Rows ``row0:row1`` of the im2col matrix of NHWC ``x`` into ``cols`` (rows, size*size*c).

    Row r is output pixel (n, oy, ox) in raster order; its values are ordered (ky, kx, c), so
    without dilation each kernel row is one contiguous run of ``x``. Outside the image: 0.
    """
    _, h, w, c = x.shape
    flat = x.reshape(-1)
    span = size * c
    for r in range(row0, row1):
        n = r // (out_h * out_w)
        oy = (r // out_w) % out_h
        ox = r % out_w
        row = cols[r - row0]
        x0 = ox * stride_x - padding
        if dilation == 1:
            lo = min(max(0, -x0), size)
            hi = max(min(size, w - x0), lo)
        for ky in range(size):
            y = oy * stride_y - padding + ky * dilation
            base = ky * span
            if y < 0 or y >= h:
                for i in range(base, base + span):  # loops, not slice assignments: those compile
                    row[i] = 0                      # numba's error formatting, seconds on a cold cache
                continue
            line = (n * h + y) * w
            if dilation == 1:
                # explicit loops over views: numba's slice assignment is 1.5-2x slower here
                for i in range(base, base + lo * c):
                    row[i] = 0
                source = flat[(line + x0 + lo) * c:(line + x0 + hi) * c]
                target = row[base + lo * c:base + hi * c]
                for i in range((hi - lo) * c):
                    target[i] = source[i]
                for i in range(base + hi * c, base + span):
                    row[i] = 0
            else:
                for kx in range(size):
                    xx = x0 + kx * dilation
                    for k in range(c):
                        row[base + kx * c + k] = flat[(line + xx) * c + k] if 0 <= xx < w else 0


@numba.njit(cache=True, nogil=True)
def im2col_nchw(x, row0, row1, size, stride_x, stride_y, padding, dilation, out_h, out_w, cols):
    """Transposed im2col of NCHW ``x`` (the network input): ``cols`` is (c*size*size, rows).

    Column j is output pixel row0 + j; values are ordered (c, ky, kx) like Darknet's weights.
    Each (c, ky, kx) reads a run of one input line per output line, which suits inputs with few
    channels, where NHWC runs would be a few values long.
    """
    _, c, h, w = x.shape
    r = row0
    while r < row1:
        n = r // (out_h * out_w)
        oy = (r // out_w) % out_h
        first = r % out_w
        last = min(out_w, first + row1 - r)  # this output line's pixels first:last
        j0 = r - row0 - first
        k = 0
        for ci in range(c):
            for ky in range(size):
                y = oy * stride_y - padding + ky * dilation
                for kx in range(size):
                    shift = kx * dilation - padding
                    # output pixels whose input column ox * stride_x + shift is inside the image
                    lo = max(first, (-shift + stride_x - 1) // stride_x)
                    hi = min(last, (w - 1 - shift) // stride_x + 1)
                    run = cols[k, j0 + first:j0 + last]  # this line's pixels, indexed ox - first
                    if y < 0 or y >= h or hi <= lo:
                        lo = hi = last
                    for ox in range(first, lo):
                        run[ox - first] = 0
                    if lo < hi and stride_x == 1:
                        # explicit loops over views: numba's slice assignment is 1.5x slower here
                        source = x[n, ci, y, lo + shift:hi + shift]
                        target = run[lo - first:hi - first]
                        for i in range(hi - lo):
                            target[i] = source[i]
                    elif lo < hi:
                        line = x[n, ci, y]
                        for ox in range(lo, hi):
                            run[ox - first] = line[ox * stride_x + shift]
                    for ox in range(hi, last):
                        run[ox - first] = 0
                    k += 1
        r += last - first


@_math
def _add_bias(values, biases):
    rows, f = values.shape
    for r in range(rows):
        for j in range(f):
            values[r, j] += biases[j]


@_math
def _batchnorm(values, rolling_mean, deviation, scales, biases):
    """Darknet's explicit inference BatchNorm (convolutional_layer.c), in place:
    ``(x - rolling_mean) / sqrt(rolling_variance + eps) * scales + biases``."""
    rows, f = values.shape
    for r in range(rows):
        for j in range(f):
            values[r, j] = (values[r, j] - rolling_mean[j]) / deviation[j] * scales[j] + biases[j]


@_math
def bias_activate(values, biases, code):
    """``values = activate(values + biases)`` in place, for a (rows, f) GEMM result."""
    _add_bias(values, biases)
    activate_inplace(values, code)


@_math
def batchnorm_activate(values, rolling_mean, deviation, scales, biases, code):
    """The explicit BatchNorm, then the activation, in place."""
    _batchnorm(values, rolling_mean, deviation, scales, biases)
    activate_inplace(values, code)


@_math
def activate_inplace(values, code):
    """The activation over a 2-D array. The activations of the YOLO cfgs get loops of their
    own: an activation chosen per value keeps LLVM from vectorising."""
    rows, f = values.shape
    if code == LINEAR:
        return
    if code == LEAKY:
        for r in range(rows):
            for j in range(f):
                values[r, j] = leaky(values[r, j])
    elif code == MISH:
        for r in range(rows):
            for j in range(f):
                values[r, j] = mish(values[r, j])
    elif code == SWISH:
        for r in range(rows):
            for j in range(f):
                values[r, j] = swish(values[r, j])
    elif code == LOGISTIC:
        for r in range(rows):
            for j in range(f):
                values[r, j] = logistic(values[r, j])
    else:
        for r in range(rows):
            for j in range(f):
                values[r, j] = activate(values[r, j], code)



# -- products, through BLAS (blas.py) -----------------------------------------------------------


@_math
def _operand(a):
    """(BLAS transpose flag, leading dimension) of a 2-D float32 operand whose rows, or whose
    columns, are contiguous."""
    rows, cols = a.shape
    if a.strides[1] == 4 and a.strides[0] > 0:
        return blas.NO_TRANS, max(cols, a.strides[0] // 4)
    if a.strides[0] == 4 and a.strides[1] > 0:
        return blas.TRANS, max(rows, a.strides[1] // 4)
    raise ValueError("gemm: an operand's rows or columns must be contiguous")


@_math
def gemm(a, b, c):
    """``c = a @ b`` (float32, 2-D) by BLAS's sgemm. The rows of ``c`` are contiguous; those of
    ``a`` and ``b``, or their columns (a transposed array). Shapes are the caller's to check."""
    trans_a, lda = _operand(a)
    trans_b, ldb = _operand(b)
    blas.sgemm(blas.ROW_MAJOR, trans_a, trans_b, a.shape[0], b.shape[1], a.shape[1], _F(1), a.ctypes.data, lda,
               b.ctypes.data, ldb, _F(0), c.ctypes.data, max(b.shape[1], c.strides[0] // 4))


@_math
def finish(values, biases, batchnorm, code):
    """Bias, or the run-time BatchNorm ``batchnorm`` (mean, deviation, scales; empty arrays when
    it is folded), then the activation, in place."""
    mean, deviation, scales = batchnorm
    if mean.size:
        _batchnorm(values, mean, deviation, scales, biases)
    else:
        _add_bias(values, biases)
    activate_inplace(values, code)  # once: numba compiles each call site's copy of every activation


@_math
def conv_rows(x, kind, geometry, matrix, biases, batchnorm, code, out, col0, pool, pool_first, first, step, tile,
              cols, product, started):
    """One thread's share of an im2col convolution that runs by tiles of output pixels (GEMM
    rows): the tiles of ``tile`` rows starting at ``first``, ``first + step``, ...

    Per tile: the left operand (``kind`` 0: NHWC ``x`` itself, a 1x1 convolution; 1: im2col of
    NHWC ``x``; 2: transposed im2col of NCHW ``x``, the network input) in scratch ``cols``, the
    product with ``matrix`` (in scratch ``product`` unless it can go straight to ``out``), then
    finish, into ``out`` (pixels, channels) channels ``col0:``. With ``pool``, ``out`` is the
    pooled map and each tile (whole pairs of lines) is pooled 2x2 as it is finished; with
    ``pool_first`` too, before the bias and activation. ``geometry`` is (size, stride_x,
    stride_y, padding, dilation, out_h, out_w). ``out`` is a whole C-contiguous (pixels, channels)
    matrix, as the engine's buffers are. ``started[0]`` is set on entry (see announce).
    """
    announce(started)
    size, stride_x, stride_y, padding, dilation, out_h, out_w = geometry
    rows = x.shape[0] * out_h * out_w
    k, f = matrix.shape
    flat = x.reshape(-1, x.shape[3])
    direct = f == out.shape[1] and not pool  # the product is written to out as it is
    for start in range(first, rows, step):
        stop = min(start + tile, rows)
        n = stop - start
        target = out[start:stop] if direct else product[:n * f].reshape(n, f)
        pooled = out[start // 4:stop // 4]
        if kind == 0:
            gemm(flat[start:stop], matrix, target)
        elif kind == 1:
            left = cols[:n * k].reshape(n, k)
            im2col_nhwc(x, start, stop, size, stride_x, stride_y, padding, dilation, out_h, out_w, left)
            gemm(left, matrix, target)
        else:
            left = cols[:n * k].reshape(k, n)
            im2col_nchw(x, start, stop, size, stride_x, stride_y, padding, dilation, out_h, out_w, left)
            gemm(left.T, matrix, target)
        if pool and pool_first:
            max_pool_2x2(target.reshape(-1, out_w, f), pooled.reshape(-1, out_w // 2, f))
        finish(pooled if pool and pool_first else target, biases, batchnorm, code)
        if pool and not pool_first:
            max_pool_2x2(target.reshape(-1, out_w, f), pooled.reshape(-1, out_w // 2, f))
        elif not (pool or direct):
            for r in range(n):  # an explicit loop: a slice assignment compiles numba's string formatting
                for j in range(f):
                    out[start + r, col0 + j] = target[r, j]


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring the cache line holding ``array[index]`` into its caches."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        handle = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, handle, [args[1]])
        pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        name = "llvm.prefetch.p0" if llvmlite.binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"
        int32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), [pointer.type, int32, int32, int32]), name)
        builder.call(prefetch, [pointer, int32(0), int32(3), int32(1)])  # read, keep in all caches, data
        return context.get_dummy_value()

    return numba.types.none(array, index), codegen


_LINE = 16  # float32 values in a 64-byte cache line


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def matmul_streaming(a, b_rows, out):
    """``out = a @ b_rows.T`` for a product of few rows (a small map) whose other operand,
    ``b_rows``, is large and comes from memory once.

    OpenBLAS repacks that operand on every call and waits for it: 72-75 GFLOP/s a thread on
    yolov3-tiny's 13x13 Winograd products, against 104 for a large square product. Here each
    block of 4 rows of ``a`` by 4 rows of ``b_rows`` is 16 dot products along the rows
    (vectorised there, so rows should be contiguous), and the next 4 rows of ``b_rows`` are
    prefetched meanwhile: 91 GFLOP/s a thread, 1.3x OpenBLAS on two threads (16 products of
    49 x 512 x 512, weights from memory)."""
    rows, depth = a.shape
    cols = b_rows.shape[0]
    full_rows, full_cols = rows - rows % 4, cols - cols % 4
    row_lines = (depth + _LINE - 1) // _LINE  # cache lines a row of b_rows spans
    row_blocks = full_rows // 4
    zero = _F(0)
    for j in range(0, full_cols, 4):
        b0, b1, b2, b3 = b_rows[j], b_rows[j + 1], b_rows[j + 2], b_rows[j + 3]
        ahead = max(0, min(4, cols - j - 4)) * row_lines  # lines of the next 4 rows, fetched while these work
        per_block = (ahead + row_blocks) // (row_blocks + 1)
        line = 0
        for i in range(0, full_rows, 4):
            for _ in range(per_block):
                if line < ahead:
                    _prefetch(b_rows[j + 4 + line // row_lines], line % row_lines * _LINE)
                    line += 1
            a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for k in range(depth):
                x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
                s00 += x0 * y0
                s01 += x0 * y1
                s02 += x0 * y2
                s03 += x0 * y3
                s10 += x1 * y0
                s11 += x1 * y1
                s12 += x1 * y2
                s13 += x1 * y3
                s20 += x2 * y0
                s21 += x2 * y1
                s22 += x2 * y2
                s23 += x2 * y3
                s30 += x3 * y0
                s31 += x3 * y1
                s32 += x3 * y2
                s33 += x3 * y3
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
            out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = s10, s11, s12, s13
            out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2], out[i + 2, j + 3] = s20, s21, s22, s23
            out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2], out[i + 3, j + 3] = s30, s31, s32, s33
        while line < ahead:
            _prefetch(b_rows[j + 4 + line // row_lines], line % row_lines * _LINE)
            line += 1
        for i in range(full_rows, rows):
            a0 = a[i]
            s00 = s01 = s02 = s03 = zero
            for k in range(depth):
                x0 = a0[k]
                s00 += x0 * b0[k]
                s01 += x0 * b1[k]
                s02 += x0 * b2[k]
                s03 += x0 * b3[k]
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
    for j in range(full_cols, cols):
        for i in range(rows):
            total = zero
            for k in range(depth):
                total += a[i, k] * b_rows[j, k]
            out[i, j] = total


@_math
def winograd_products(v, weights, transposed, m):
    """``m[p] = v[p] @ weights[p]`` for every transformed position p, by BLAS; with
    ``transposed``, ``v[p] @ weights[p].T`` by matmul_streaming. BLAS with transposed weights
    was 10-25% slower than either on these shapes (16 positions, 64-256 tiles, 256-1024 channels)."""
    for p in range(v.shape[0]):
        if transposed:
            matmul_streaming(v[p], weights[p], m[p])
        else:
            gemm(v[p], weights[p], m[p])


@_math
def winograd_block(weights, edges, transposed, block, positions, channels):
    """Block ``block`` of Winograd weights stored as blocks of output channels ``edges[b]:edges[b + 1]``,
    one after another in the flat ``weights``, each (positions, channels, its output channels),
    or with ``transposed`` (positions, its output channels, channels)."""
    f0, f1 = edges[block], edges[block + 1]
    block_weights = weights[positions * channels * f0:positions * channels * f1]
    if transposed:
        return block_weights.reshape(positions, f1 - f0, channels)
    return block_weights.reshape(positions, channels, f1 - f0)


@_math
def winograd_tiles(x, tiles_h, tiles_w, bt, at, weights, edges, transposed, biases, code, out, col0, pool,
                   pool_first, first, step, chunk, v_buffer, m_buffer, started):
    """One thread's share of a Winograd convolution that runs by chunks of tiles: the chunks of
    ``chunk`` tiles starting at ``first``, ``first + step``, ...: input transform, the products
    (block of output channels by block), output transform (winograd_input, winograd_output)
    into ``out`` channels ``col0:``. ``started[0]`` is set on entry (see announce)."""
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
            block_weights = winograd_block(weights, edges, transposed, block, positions, c)
            winograd_products(v, block_weights, transposed, m[:, :, edges[block]:edges[block + 1]])
        winograd_output(m, start, tiles_h, tiles_w, at, biases, code, out, col0, pool, pool_first)


@_math
def winograd_channels(v, tiles_h, tiles_w, at, weights, edges, biases, code, out, col0, pool, pool_first, first,
                      step, m_buffer, started):
    """One thread's share of a Winograd convolution that runs by blocks of output channels, on
    the transformed input ``v`` of all the tiles: blocks ``first``, ``first + step``, ...; per
    block, the products (matmul_streaming: the weights are stored transposed) and the output
    transform into ``out`` channels ``col0 + edges[block]:``. ``started[0]`` is set on entry
    (see announce)."""
    announce(started)
    positions, tiles, c = v.shape
    for block in range(first, edges.size - 1, step):
        f0, f1 = edges[block], edges[block + 1]
        m = m_buffer[:positions * tiles * (f1 - f0)].reshape(positions, tiles, f1 - f0)
        winograd_products(v, winograd_block(weights, edges, True, block, positions, c), True, m)
        winograd_output(m, np.int64(0), tiles_h, tiles_w, at, biases[f0:f1], code, out, col0 + f0, pool, pool_first)


@_math
def _combine(dest, source, offsets, row, count, terms):
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


@_math
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
            _combine(columns[a], lines.reshape(-1), offsets, bt[a], lines.shape[1], terms)
        for j in range(n):  # tile tx reads pixels m tx + j: phase j % m, index tx + j // m
            offsets[j] = ((j % m) * width + tx0 + j // m) * c
        for a in range(n):
            for e in range(n):
                _combine(v[a * n + e].reshape(-1)[(row0 + t - tile0) * c:], columns[a], offsets, bt[e], count * c,
                         terms)
        t += count


@_math
def _bias_activate_blocks(y, blocks, count, biases, code):
    """Bias and activation of the first ``count`` tiles of y[i, e] for i, e < ``blocks``."""
    for i in range(blocks):
        for e in range(blocks):
            bias_activate(y[i, e, :count], biases, code)


@_math
def _pool_blocks(y, half, count):
    """The max of each 2x2 block of y[i, e] (i, e < 2 half) into y[:half, :half], first ``count`` values."""
    for i in range(half):
        for e in range(half):  # in order: each block's first output is read before it is written
            top, bottom = y[2 * i], y[2 * i + 1]
            dest, a, b = y[i, e].reshape(-1), top[2 * e].reshape(-1), top[2 * e + 1].reshape(-1)
            c, d = bottom[2 * e].reshape(-1), bottom[2 * e + 1].reshape(-1)
            for q in range(count):
                dest[q] = max(max(a[q], b[q]), max(c[q], d[q]))


@_math
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
                _combine(s[a, e], products.reshape(-1), offsets, at[e], count * f, terms)
        for i in range(size):
            for e in range(size):
                for a in range(n):
                    offsets[a] = (a * size + e) * s.shape[2]
                _combine(y[i, e].reshape(-1), s.reshape(-1), offsets, at[i], count * f, terms)
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


@_math
def pool_nhwc(x, size, stride_x, stride_y, padding, average, line0, line1, out):
    """Max (or, with ``average``, mean) pooling of output lines ``line0:line1`` (n*out_h + oy).

    maxpool_layer.c: the window starts at -padding/2; cells outside the image never win a max
    and are not counted in a mean.
    """
    _, h, w, c = x.shape
    _, out_h, out_w, _ = out.shape
    offset = padding // 2
    for line in range(line0, line1):
        n = line // out_h
        oy = line % out_h
        y0 = max(oy * stride_y - offset, 0)
        y1 = min(oy * stride_y - offset + size, h)
        for ox in range(out_w):
            x0 = max(ox * stride_x - offset, 0)
            x1 = min(ox * stride_x - offset + size, w)
            cell = out[n, oy, ox]
            if y0 >= y1 or x0 >= x1:  # a window wholly in the padding
                cell[:] = 0 if average else -_F(3.4028234663852886e38)  # -FLT_MAX, as Darknet
                continue
            first = x[n, y0, x0]
            for k in range(c):  # the window's first cell, then the others
                cell[k] = first[k]
            for y in range(y0, y1):
                for xx in range(x0, x1):
                    source = x[n, y, xx]
                    if average:
                        if y != y0 or xx != x0:
                            for k in range(c):
                                cell[k] += source[k]
                    else:
                        for k in range(c):
                            cell[k] = max(cell[k], source[k])
            if average:
                count = _F((y1 - y0) * (x1 - x0))
                for k in range(c):
                    cell[k] /= count


@_math
def max_pool_2x2(x, out):
    """The 2x2 stride-2 max of lines ``x`` (lines, w, c) into ``out`` (lines / 2, w / 2, c):
    Darknet's [maxpool] size=2 stride=2 on even sizes, where every window is inside. A
    kernel of its own: pool_nhwc's general windows cost 3x more on the largest tensors."""
    for line in range(out.shape[0]):
        for px in range(out.shape[1]):
            for k in range(out.shape[2]):
                out[line, px, k] = max(max(x[2 * line, 2 * px, k], x[2 * line, 2 * px + 1, k]),
                                       max(x[2 * line + 1, 2 * px, k], x[2 * line + 1, 2 * px + 1, k]))


@numba.njit(cache=True, nogil=True)
def upsample_nhwc(x, stride, scale, line0, line1, out):
    """Nearest-neighbour upsampling by ``stride`` times ``scale`` (upsample_layer.c), output
    lines ``line0:line1``."""
    _, out_h, out_w, c = out.shape
    for line in range(line0, line1):
        n = line // out_h
        oy = line % out_h
        for ox in range(out_w):
            source = x[n, oy // stride, ox // stride]
            cell = out[n, oy, ox]
            for k in range(c):
                cell[k] = scale * source[k]


@numba.njit(cache=True, nogil=True)
def downsample_nhwc(x, stride, scale, line0, line1, out):
    """upsample_layer.c with a negative stride: each output cell is ``scale`` times the *sum*
    of its stride x stride block (upsample_cpu accumulates with forward=0)."""
    _, out_h, out_w, c = out.shape
    for line in range(line0, line1):
        n = line // out_h
        oy = line % out_h
        for ox in range(out_w):
            cell = out[n, oy, ox]
            cell[:] = 0
            for dy in range(stride):
                for dx in range(stride):
                    source = x[n, oy * stride + dy, ox * stride + dx]
                    for k in range(c):
                        cell[k] += scale * source[k]


@numba.njit(cache=True, nogil=True)
def copy_channels(source, first, count, out, offset, row0, row1):
    """``out[r, offset:offset + count] = source[r, first:first + count]`` for rows r in
    row0:row1 of (pixels, channels) matrices: one source of a [route]."""
    for r in range(row0, row1):
        target, values = out[r, offset:offset + count], source[r, first:first + count]
        for k in range(count):  # on views: an index like offset + k would not vectorise (see _combine)
            target[k] = values[k]


@numba.njit(cache=True, nogil=True)
def add_rows(out, source, row0, row1):
    """``out[r, :k] += source[r, :k]`` with k the smaller channel count (shortcut_cpu adds the
    channels both layers have)."""
    k = min(out.shape[1], source.shape[1])
    for r in range(row0, row1):
        for j in range(k):
            out[r, j] += source[r, j]


# Kernels the bundled model runs (tests/test_engine.py checks it): one it never compiled would
# bring the CLI's first-run notice back on every run, as im2col_nhwc did.
FIRST_RUN_KERNELS = (conv_rows, winograd_tiles, winograd_channels, winograd_input)


def cache_is_cold():
    """True before the first run: kernels every YOLO model runs are not in numba's cache yet."""
    for kernel in FIRST_RUN_KERNELS:
        # numba's on-disk index of compiled copies; private, so look for it carefully
        index = getattr(getattr(getattr(kernel, "_cache", None), "_cache_file", None), "_index_path", None)
        if index is not None and not os.path.exists(index):
            return True
    return False


@numba.njit(cache=True)
def resize_bgr_to_rgb(image, out, left, top, width, height):
    """Darknet's ``resize_image`` (image.c) of a uint8 BGR image into ``out``.

    ``image`` is (H, W, 3) uint8 BGR; ``out`` is (3, H', W') float32 RGB. The
    resized image, ``width`` x ``height``, is written at column ``left``, row
    ``top`` of ``out``; the rest of ``out`` is left as it is (the letterbox
    grey). Pixels are byte / 255, as Darknet loads them, then interpolated in
    float32 the way resize_image does: corner-aligned (scale (w_in - 1) /
    (w_out - 1)), columns first into a temporary, then rows. Its last row
    is ``(1 - dy) * row[iy]`` alone, so where float rounding puts that row
    just short of the last input row, Darknet's output row is nearly black;
    this kernel keeps that.
    """
    in_h, in_w = image.shape[0], image.shape[1]
    one = np.float32(1)
    level = np.empty(256, np.float32)  # byte / 255. in float, without a division per pixel
    for v in range(256):
        level[v] = np.float32(v / 255.0)
    # Columns: source index and weight of each output column (the last one copies the last column).
    ix = np.empty(width, np.int64)
    dx = np.empty(width, np.float32)
    w_scale = np.float32(in_w - 1) / np.float32(width - 1) if width > 1 else np.float32(0)
    for c in range(width):
        if c == width - 1 or in_w == 1:
            ix[c], dx[c] = in_w - 1, np.float32(0)
        else:
            sx = np.float32(c) * w_scale
            ix[c] = int(sx)
            dx[c] = sx - np.float32(ix[c])
    part = np.empty((3, in_h, width), np.float32)
    for r in range(in_h):
        for c in range(width):
            i, d = ix[c], dx[c]
            for k in range(3):
                if d == 0:  # exact: (1 - 0) * a + 0 * b == a
                    part[k, r, c] = level[image[r, i, 2 - k]]
                else:
                    part[k, r, c] = (one - d) * level[image[r, i, 2 - k]] + d * level[image[r, i + 1, 2 - k]]
    h_scale = np.float32(in_h - 1) / np.float32(height - 1) if height > 1 else np.float32(0)
    for r in range(height):
        sy = np.float32(r) * h_scale
        iy = int(sy)
        dy = sy - np.float32(iy)
        last = r == height - 1 or in_h == 1
        for k in range(3):
            if last:
                for c in range(width):
                    out[k, top + r, left + c] = (one - dy) * part[k, iy, c]
            else:
                for c in range(width):
                    out[k, top + r, left + c] = (one - dy) * part[k, iy, c] + dy * part[k, iy + 1, c]


# ------------------------------------------------------------------------------------------------
# Detection: per-class NMS (box.c), O(n^2) in the candidates, so compiled: an untrained model
# can leave tens of thousands.


@_math
def _box_iou(boxes, i, j):
    """box.c box_iou of rows i and j of (x, y, w, h) ``boxes``; 0 when they do not overlap."""
    ax, ay, aw, ah = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
    bx, by, bw, bh = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
    inter_w = min(ax + aw / 2, bx + bw / 2) - max(ax - aw / 2, bx - bw / 2)
    inter_h = min(ay + ah / 2, by + bh / 2) - max(ay - ah / 2, by - bh / 2)
    if inter_w < 0 or inter_h < 0:
        return _F(0)
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    if inter == 0 or union == 0:
        return _F(0)
    return inter / union


@_math
def _box_diou(boxes, i, j, beta):
    """box.c box_diou: IoU minus (centre distance^2 / enclosing diagonal^2) ** beta."""
    iou = _box_iou(boxes, i, j)
    ax, ay, aw, ah = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
    bx, by, bw, bh = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
    enclosing_w = max(ax + aw / 2, bx + bw / 2) - min(ax - aw / 2, bx - bw / 2)
    enclosing_h = max(ay + ah / 2, by + bh / 2) - min(ay - ah / 2, by - bh / 2)
    diagonal = enclosing_w * enclosing_w + enclosing_h * enclosing_h
    if diagonal == 0:
        return iou
    distance = (ax - bx) * (ax - bx) + (ay - by) * (ay - by)
    return iou - (distance / diagonal) ** beta


@_math
def nms_class(boxes, order, probs, column, thresh, diou, beta):
    """Greedy NMS of one class: boxes in ``order`` (falling probability); each still standing
    zeroes ``probs[:, column]`` of every later box overlapping it by more than ``thresh``
    (IoU, or DIoU with exponent ``beta``): do_nms_sort and diounms_sort in box.c."""
    for a in range(order.shape[0]):
        i = order[a]
        if probs[i, column] == 0:
            continue
        for b in range(a + 1, order.shape[0]):
            j = order[b]
            if probs[j, column] == 0:
                continue
            overlap = _box_diou(boxes, i, j, beta) if diou else _box_iou(boxes, i, j)
            if overlap > thresh:
                probs[j, column] = 0


@intrinsic
def _load_acquire(typingctx, array, index):
    """``array[index]`` as an atomic load with acquire order: a plain load in a loop may be
    read once and hoisted out of it, and would never see another thread's store."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        handle = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, handle, [args[1]])
        return builder.load_atomic(pointer, ordering="acquire", align=array_type.dtype.bitwidth // 8)

    return array.dtype(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    """``array[index] = value`` as an atomic store with release order: the store is neither
    delayed nor moved after the code that follows it."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        handle = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, handle, [args[1]])
        item = context.cast(builder, args[2], signature.args[2], array_type.dtype)
        builder.store_atomic(item, pointer, ordering="release", align=array_type.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return numba.types.none(array, index, value), codegen


@_math
def announce(started):
    """``started[0] = 1``, from a kernel that runs without the GIL. A worker thread that waits for
    the calling thread's kernel to start before it takes the GIL does not queue for the GIL
    behind the caller (threads.Workers.run)."""
    _store_release(started, 0, 1)


# The flags threads.Workers' threads share: spinning allowed (1) or not (0); the job number;
# the calling thread's kernel started (announce); the calling thread asleep, waiting for a
# worker; then, for each worker, the last job it finished.
SPINNING, JOB, STARTED, CALLER_ASLEEP, DONE = range(5)


@numba.njit(cache=True, nogil=True)
def worker_wait(flags, worker, done, spins, start_spins):
    """A worker's end of job ``done`` and its wait for the next one (threads.Workers), without
    the GIL. Marks ``done`` finished, then reads the job number up to ``spins`` times (~0.5 ns
    each) while spinning is allowed and the caller is not asleep. Once a new job is posted, it
    waits up to ``start_spins`` reads more for the caller's kernel to start. True on a new job;
    False if the worker must take the slow path: sleep, and wake a caller that is asleep.

    One call from the end of a job to the start of the next: a worker that went back to Python
    in between would ask for the GIL while the calling thread held it, and waking from that
    wait takes 25-50 us on this project's VMs (measured: the worker started a median 25-40 us
    after the post, and 11 us with this)."""
    _store_release(flags, DONE + worker, done)
    for _ in range(spins):
        if _load_acquire(flags, SPINNING) == 0 or _load_acquire(flags, CALLER_ASLEEP) != 0:
            return False
        if _load_acquire(flags, JOB) != done:
            for _ in range(start_spins):
                if _load_acquire(flags, STARTED) != 0 or _load_acquire(flags, SPINNING) == 0:
                    break
            return True
    return False


@numba.njit(cache=True, nogil=True)
def spin_until(flags, index, value, spins):
    """Read ``flags[index]`` up to ``spins`` times, without the GIL, until it is ``value``;
    False if it is not by then, or if ``flags[0]`` (spinning allowed) became 0."""
    for _ in range(spins):
        if _load_acquire(flags, index) == value:
            return True
        if _load_acquire(flags, 0) == 0:
            return False
    return False
