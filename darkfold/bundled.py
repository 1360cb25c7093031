"""The model that ships inside the package: COCO-pretrained YOLOv3-tiny, and a sample image."""

import os
from importlib import resources

_PACKAGE = resources.files("darkfold")

DEFAULT_CFG = os.fspath(_PACKAGE / "models" / "yolov3-tiny.cfg")
DEFAULT_WEIGHTS = os.fspath(_PACKAGE / "models" / "yolov3-tiny.weights")
COCO_NAMES = os.fspath(_PACKAGE / "data" / "coco.names")
SAMPLE_IMAGE = os.fspath(_PACKAGE / "data" / "dog.jpg")  # what `darkfold detect` shows without input
