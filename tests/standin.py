"""``Model.forward`` for the detection tests: darkfold's engine when it exists, else OpenCV.

Detection needs only the forward pass's contract: ``model.forward(x)`` with ``x`` a
(N, C, H, W) float32 array returns ``{darknet layer index: NCHW float32 array}`` for the
layers that feed the [yolo]/[region] heads. Until darkfold's engine provides it, the
``use_engine`` puts an OpenCV-backed function with that contract in its place; once
it exists, the tests run the real engine and OpenCV stays on the oracle side only.
"""

import numpy as np
import oracle

from darkfold.model import Model

HAS_ENGINE = hasattr(Model, "forward")


def opencv_forward(cfg_path, weights_path):
    """A function with ``Model.forward``'s contract, computed by OpenCV for this cfg and weights."""
    net = oracle.opencv_net(cfg_path, weights_path)
    names = oracle.opencv_output_names(net)

    def forward(self, x, layers=None, *, fold=True, threads=None):
        indices = list(layers) if layers is not None else oracle.head_inputs(self.layers)
        net.setInput(np.ascontiguousarray(x, dtype=np.float32))
        outputs = net.forward([names[i] for i in indices])
        return {i: np.array(out) for i, out in zip(indices, outputs)}

    return forward


def use_engine(monkeypatch, cfg_path, weights_path):
    """Make ``Model.forward`` available for models of this cfg and weights, for one test.

    A no-op once darkfold has its engine. Before, the stand-in computes with the files
    given here (pass OpenCV the variance-bumped copy of random weights: see oracle.py).
    """
    if not HAS_ENGINE:
        monkeypatch.setattr(Model, "forward", opencv_forward(cfg_path, weights_path), raising=False)
