"""[maxpool] and [local_avgpool] (maxpool_layer.c), and the 2x2 stride-2 max pool the
convolutions apply as they write their output."""

from ..jit import f32, kernel


@kernel
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
                cell[:] = 0 if average else -f32(3.4028234663852886e38)  # -FLT_MAX, as Darknet
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
                count = f32((y1 - y0) * (x1 - x0))
                for k in range(c):
                    cell[k] /= count


@kernel
def max_pool_2x2(x, out):
    """The 2x2 stride-2 max of lines ``x`` (lines, w, c) into ``out`` (lines / 2, w / 2, c):
    Darknet's [maxpool] size=2 stride=2 on even sizes, where every window is inside. A
    kernel of its own: pool_nhwc's general windows cost more on the largest tensors."""
    for line in range(out.shape[0]):
        for px in range(out.shape[1]):
            for k in range(out.shape[2]):
                out[line, px, k] = max(max(x[2 * line, 2 * px, k], x[2 * line, 2 * px + 1, k]),
                                       max(x[2 * line + 1, 2 * px, k], x[2 * line + 1, 2 * px + 1, k]))
