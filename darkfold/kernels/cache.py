"""Whether numba has compiled the kernels yet: the CLI says so before a first run's compile."""

import os

from .im2col import conv_rows
from .winograd import winograd_channels, winograd_input, winograd_tiles

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
