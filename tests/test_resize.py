"""darkfold.resize: Darknet's resize_image, compiled apart from the engine's kernels."""

import numpy as np

from conftest import modules_loaded_by
from darkfold.resize import resize_bgr_to_rgb


def test_resizing_loads_neither_the_engine_nor_blas():
    script = ("import numpy as np\nfrom darkfold.images import preprocess\n"
              "preprocess(np.zeros((20, 30, 3), np.uint8), 16, 16)")
    loaded = modules_loaded_by(script, "darkfold.resize", "darkfold.blas", "darkfold.engine")
    assert loaded == {"darkfold.resize"}


def test_the_image_lands_at_its_place_bytes_over_255_in_rgb_order():
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0], image[..., 2] = 255, 51  # blue 1.0, red 0.2
    out = np.full((3, 4, 5), 0.5, np.float32)
    resize_bgr_to_rgb(image, out, 1, 2, 2, 2)  # same size: a copy into rows 2:4, columns 1:3
    np.testing.assert_array_equal(out[0, 2:4, 1:3], np.float32(51 / 255))
    np.testing.assert_array_equal(out[2, 2:4, 1:3], np.float32(1.0))
    assert (out[:, :2] == 0.5).all() and (out[:, :, 0] == 0.5).all() and (out[:, :, 3:] == 0.5).all()
