"""Layers that merge other layers' outputs, on (pixels, channels) matrices: a [route]'s
channel copy and a [shortcut]'s sum."""

import numba


@numba.njit(cache=True, nogil=True)
def copy_channels(source, first, count, out, offset, row0, row1):
    """``out[r, offset:offset + count] = source[r, first:first + count]`` for rows r in
    row0:row1 of (pixels, channels) matrices: one source of a [route]."""
    for r in range(row0, row1):
        target, values = out[r, offset:offset + count], source[r, first:first + count]
        # on views: an index like offset + k would not vectorise (see winograd._weighted_sum_of_runs)
        for k in range(count):
            target[k] = values[k]


@numba.njit(cache=True, nogil=True)
def add_rows(out, source, row0, row1):
    """``out[r, :k] += source[r, :k]`` for rows r in row0:row1, with k the smaller channel count
    (shortcut_cpu adds the channels both layers have)."""
    k = min(out.shape[1], source.shape[1])
    for r in range(row0, row1):
        for j in range(k):
            out[r, j] += source[r, j]
