"""The detection heads of a model as decoding reads them: ``model_heads(model) -> [Head]``.

Detection (``detect.py``) decodes with them, and so does a decoded ONNX export
(``onnx_graph.py``); they are facts of the cfg alone, which needs neither the runtime nor onnx.
"""

from dataclasses import dataclass

import numpy as np

from .errors import ModelError


@dataclass(frozen=True)
class Head:
    """What decoding needs from a [yolo] or [region] layer."""

    index: int
    type: str
    classes: int
    anchors: np.ndarray  # (boxes, 2) float32: the anchors this head predicts with, in order
    scale_x_y: float = 1.0
    new_coords: int = 0
    softmax: int = 0
    classfix: int = 0
    nms_kind: str = "default"
    beta_nms: float = 0.6


def model_heads(model):
    """The model's detection heads, in layer order; ModelError if it has none it can decode."""
    heads = []
    for layer in model.layers:
        if not layer.is_head:
            continue
        if layer.type == "yolo":
            anchors = np.array([layer.anchors[m] for m in layer.mask], np.float32)
            # parse_yolo (parser.c) knows greedynms and diounms; any other name is the default.
            kind = layer.nms_kind if layer.nms_kind in ("greedynms", "diounms") else "default"
            heads.append(Head(layer.index, "yolo", layer.classes, anchors, layer.scale_x_y, layer.new_coords,
                              nms_kind=kind, beta_nms=layer.beta_nms))
        elif layer.type == "region":
            if layer.tree:
                raise ModelError.at_layer(layer, f" tree={layer.tree}: hierarchical softmax (YOLO9000) is not "
                                          "supported", expected="no tree=", found=f"tree={layer.tree}")
            if layer.coords != 4:
                raise ModelError.at_layer(layer, f" coords={layer.coords}: Darknet decodes region boxes with "
                                          "coords=4 only", expected="coords=4", found=f"coords={layer.coords}")
            heads.append(Head(layer.index, "region", layer.classes, np.array(layer.anchors, np.float32),
                              softmax=layer.softmax, classfix=layer.classfix))
        else:
            raise ModelError.at_layer(layer, ": darkfold detect decodes [yolo] and [region] heads only",
                                      expected="[yolo] or [region]", found=f"[{layer.type}]")
    if not heads:
        raise ModelError(f"{model.cfg.path}: no [yolo] or [region] layer: not a detection model",
                         path=model.cfg.path, expected="a [yolo] or [region] layer", found="none")
    if len({head.classes for head in heads}) > 1:
        found = ", ".join(str(h.classes) for h in heads)
        raise ModelError(f"{model.cfg.path}: the detection heads disagree on classes= ({found})",
                         path=model.cfg.path, expected="one classes= for every head", found=found)
    return heads
