"""[upsample] (upsample_layer.c): nearest-neighbour upsampling, and with a negative stride its
downsampling form."""

import numba


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
