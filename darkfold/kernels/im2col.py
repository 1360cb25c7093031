"""im2col convolution: the windows of the input as the rows (or columns) of a matrix, and one
thread's share of a convolution that runs by tiles of those rows."""

import numba

from ..thread_flags import announce
from ..jit import kernel
from .activation import bias_or_batchnorm_activate
from .gemm import gemm
from .pooling import max_pool_2x2

# The left operand of conv_rows' products: the NHWC input itself (a 1x1 stride-1 convolution),
# the im2col rows of an NHWC input, or the transposed im2col of an NCHW input (the network's).
POINTWISE, NHWC_WINDOWS, NCHW_PLANES = range(3)


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
                # explicit loops over views: numba's slice assignment is slower here
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
                        # explicit loops over views: numba's slice assignment is slower here
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


@kernel
def conv_rows(x, left, geometry, matrix, biases, runtime_batchnorm, code, out, col0, pool, pool_first, first, step,
              tile, cols, product, started):
    """One thread's share of an im2col convolution that runs by tiles of output pixels (GEMM
    rows): the tiles of ``tile`` rows starting at ``first``, ``first + step``, ...

    Per tile: the left operand (``left``: POINTWISE, NHWC_WINDOWS or NCHW_PLANES) in scratch
    ``cols``, the product with ``matrix`` (in scratch ``product`` unless it can go straight to
    ``out``), then the bias or run-time BatchNorm and the activation
    (bias_or_batchnorm_activate), into ``out`` (pixels, channels) channels ``col0:``. With
    ``pool``, ``out`` is the pooled map and each tile (whole pairs of lines) is pooled 2x2 as it
    is finished; with ``pool_first`` too, before the bias and activation. ``geometry`` is (size,
    stride_x, stride_y, padding, dilation, out_h, out_w). ``out`` is a whole C-contiguous
    (pixels, channels) matrix, as the engine's buffers are. ``started[0]`` is set on entry (see
    thread_flags.announce).
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
        if left == POINTWISE:
            gemm(flat[start:stop], matrix, target)
        elif left == NHWC_WINDOWS:
            windows = cols[:n * k].reshape(n, k)
            im2col_nhwc(x, start, stop, size, stride_x, stride_y, padding, dilation, out_h, out_w, windows)
            gemm(windows, matrix, target)
        else:
            planes = cols[:n * k].reshape(k, n)
            im2col_nchw(x, start, stop, size, stride_x, stride_y, padding, dilation, out_h, out_w, planes)
            gemm(planes.T, matrix, target)
        if pool and pool_first:
            max_pool_2x2(target.reshape(-1, out_w, f), pooled.reshape(-1, out_w // 2, f))
        bias_or_batchnorm_activate(pooled if pool and pool_first else target, biases, runtime_batchnorm, code)
        if pool and not pool_first:
            max_pool_2x2(target.reshape(-1, out_w, f), pooled.reshape(-1, out_w // 2, f))
        elif not (pool or direct):
            for r in range(n):  # an explicit loop: a slice assignment compiles numba's string formatting
                for j in range(f):
                    out[start + r, col0 + j] = target[r, j]
