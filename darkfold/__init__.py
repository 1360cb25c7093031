"""darkfold: read, fold and write Darknet YOLO models from Python.

    import darkfold
    model = darkfold.load("yolov4.cfg", "yolov4.weights")
    folded = model.fold()
    folded.save("yolov4-folded.cfg", "yolov4-folded.weights")
    # or, streaming layer by layer (what `darkfold convert` runs):
    darkfold.convert("yolov4.cfg", "yolov4.weights", "yolov4-folded.cfg", "yolov4-folded.weights")
    outputs = model.forward(x)  # raw head inputs for an NCHW float32 batch
    model.forward(x, backend="openvino")  # or "onnxruntime", "auto"; needs darkfold[openvino]
    darkfold.verify(model, darkfold.load("yolov4-folded.cfg", "yolov4-folded.weights")).ok
    for result in darkfold.predict(["photos/", "clip.mp4"], output="predictions"):  # `darkfold detect`
        print(result.source, result.frame, result.detections)
    darkfold.export_onnx(model, "yolov4.onnx", decode=True)  # `darkfold export`, needs darkfold[onnx]
    darkfold.warmup()  # compile the kernels ahead (`darkfold warmup`): once per install

numba compiles the kernels on their first run after installing; that is logged on the
``darkfold`` logger (``logging.basicConfig(level=logging.INFO)`` shows it).

``darkfold.load()`` with no arguments loads the bundled YOLOv3-tiny (COCO).
"""

import logging

from .bundled import COCO_NAMES, DEFAULT_CFG, DEFAULT_WEIGHTS
from .errors import (
    CfgError,
    ClusterError,
    DarkfoldError,
    ImageError,
    ModelError,
    OutputError,
    UnsupportedError,
    WeightsError,
)
from .conversion import convert
from .model import Model, load
from .verify import VerificationError, verify
from .version import __version__ as __version__  # darkfold.__version__

__all__ = ["load", "convert", "verify", "predict", "Prediction", "export_onnx", "warmup", "Model", "DarkfoldError",
           "CfgError", "ClusterError", "WeightsError", "ModelError", "ImageError", "OutputError", "UnsupportedError",
           "VerificationError", "DEFAULT_CFG", "DEFAULT_WEIGHTS", "COCO_NAMES"]

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library's logger: the app decides what shows


def __getattr__(name):
    # predict, Prediction and warmup live with detection, which loads OpenCV and the engine:
    # resolved on first use, so that `import darkfold` (and `darkfold info`) does not pay for them.
    if name in ("predict", "Prediction", "warmup"):
        from . import prediction

        return getattr(prediction, name)
    # export_onnx needs the onnx package, an extra: resolved on first use, like predict.
    if name == "export_onnx":
        from .onnx_export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'darkfold' has no attribute {name!r}")
