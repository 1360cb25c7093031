"""Darknet's bilinear ``resize_image`` (image.c) as one numba kernel: images.py's resize and
letterbox."""

import numba
import numpy as np


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
