"""darkfold.kernels.cache: the CLI's first-run notice looks at the right kernels."""

import subprocess
import sys

from conftest import REPO


def test_the_first_run_notice_looks_only_at_kernels_the_bundled_model_runs():
    """With a kernel the bundled model never compiles, the CLI's compile notice (cache_is_cold)
    came back on every run. In a new process a kernel has signatures only once it ran."""
    script = ("import numpy as np, darkfold\n"
              "from darkfold.kernels.cache import FIRST_RUN_KERNELS\n"
              "darkfold.load().forward(np.zeros((1, 3, 416, 416), np.float32))\n"
              "print(' '.join(k.__name__ for k in FIRST_RUN_KERNELS if not k.signatures))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == ""
