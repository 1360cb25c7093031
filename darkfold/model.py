"""A Darknet model: its cfg, layer specs and parameters."""

import os

import numpy as np

from .bundled import DEFAULT_CFG, DEFAULT_WEIGHTS
from .cfg import read_cfg
from .errors import DarkfoldError, ModelError
from .files import InputFiles, atomic_outputs
from .layers import build_layers
from .weights import read_weights, write_weights


class Model:
    """Layer specs plus parameters, as read from a .cfg and a .weights file.

    ``layers[i]`` describes layer ``i`` (type, shapes, options); ``params[i]``
    maps its array names (``biases``, ``scales``, ``rolling_mean``,
    ``rolling_variance``, ``weights``) to float32 numpy arrays, or is ``None``
    when no weights were loaded for it.
    """

    def __init__(self, cfg, header=None, params=None):
        self.cfg = cfg
        self.net, self.layers, self.warnings = build_layers(cfg)
        self.header = header
        self.params = params if params is not None else [None] * len(self.layers)
        self.folded_layers = ()  # indices (in the model it was folded from) of the layers fold() folded
        self.sources = ()  # the files it was read from, which save() never writes over

    def __repr__(self):
        return f"<darkfold.Model {self.cfg.path}: {len(self.layers)} layers, {self.bflops:.3f} BFLOPs>"

    @property
    def bflops(self):
        """Billions of floating point operations per image, as Darknet counts them.

        parser.c sums each layer's float l.bflops into a float, and that
        rounding shows in the third decimal (yolov3-voc: 65.442, not 65.443).
        """
        total = np.float32(0)
        for layer in self.layers:
            total = np.float32(total + np.float32(layer.bflops))
        return float(total)

    @property
    def param_count(self):
        return sum(layer.param_count for layer in self.layers)

    @property
    def has_weights(self):
        return self.header is not None

    @property
    def loaded_layers(self):
        """How many layers have their parameters (all, unless a partial file was loaded)."""
        return sum(1 for arrays in self.params if arrays is not None)

    def save(self, cfg_path, weights_path=None):
        """Write the cfg, and the weights if a path is given.

        Both files are written to temporary names and renamed into place only
        when both are complete, so a failure leaves no partial output. An
        existing file is replaced, but never one the model was read from.
        """
        if weights_path is not None and not self.has_weights:
            raise ModelError(f"{self.cfg.path}: this model was loaded without weights; there are none to save",
                             path=self.cfg.path, expected="a model loaded with weights", found="no weights")
        if weights_path is not None:
            self.check_params()
        paths = [cfg_path] if weights_path is None else [cfg_path, weights_path]
        with atomic_outputs(*paths, inputs=InputFiles(self.sources)) as temporaries:
            write_files(self.cfg, *temporaries, self.header, self.layers, self.params)

    def check_params(self):
        """Raise a ModelError unless every array has the shape the cfg gives it.

        ``load`` makes them so; this catches arrays replaced by hand before
        they reach a kernel (which does not check bounds) or a weights file.
        """
        for layer, arrays in zip(self.layers, self.params):
            if arrays is None:
                continue
            for param in layer.params:
                found = getattr(arrays.get(param.name), "shape", None)
                if found != param.shape:
                    raise ModelError(
                        f"{self.cfg.path}: layer {layer.index} [{layer.type}] ({layer.where}): params['{param.name}'] "
                        f"has shape {found}, the cfg needs {param.shape}",
                        path=self.cfg.path, layer=layer.index, expected=param.shape, found=found)

    def check_complete(self, purpose):
        """Raise a ModelError unless the model has every array its layers need, each of the shape
        the cfg gives it: what a runtime or an exporter checks before it reads them. ``purpose``
        finishes the messages: "run it", "export it"."""
        if not self.has_weights:
            raise ModelError(f"{self.cfg.path}: no weights: load the model with its .weights file to {purpose}",
                             path=self.cfg.path, expected="a model loaded with weights", found="a cfg alone")
        self.check_params()  # kernels and initializers trust these shapes
        for layer, arrays in zip(self.layers, self.params):
            if layer.params and arrays is None:  # past the end of a partial weights file
                raise ModelError.at_layer(layer, f" has no weights; load the model with a complete .weights file "
                                                 f"to {purpose}", expected="its weights", found="none")

    def fold(self):
        """Return a new Model with every BatchNorm folded into its layer.

        The original is left unchanged: folded layers get new arrays, and the
        rest share their (read-only) arrays with it. See ``darkfold.fold``.
        """
        from .fold import fold_model

        return fold_model(self)

    @property
    def head_inputs(self):
        """Indices of the layers whose outputs the detection heads decode (the last layer's without heads)."""
        heads = [source for layer in self.layers if layer.is_head for source in layer.inputs]
        return heads or [len(self.layers) - 1]

    def forward(self, x, layers=None, *, fold=True, threads=None, backend="numba", precision="f32"):
        """Run the network on a batch and return raw layer outputs.

        ``x`` is a float32 array of shape (batch, channels, height, width) as the
        cfg's [net] section sizes it, values as Darknet feeds them (RGB in [0, 1]).
        Returns ``{layer index: float32 array (batch, c, h, w)}`` for the layers
        feeding the [yolo]/[region] heads, or for the indices in ``layers``.
        ``fold=False`` applies each BatchNorm as Darknet does at run time instead
        of folding it into the weights; ``threads`` defaults to every CPU. The
        engine is built on the first call and kept by ``darkfold.runtime``; on the
        first run after installing, numba compiles its kernels first (logged on the
        ``darkfold`` logger; ``darkfold.warmup`` does it ahead).

        ``backend``: "numba" (darkfold's engine), "onnxruntime" or "openvino" (the model's
        ONNX graph, built in memory, one session per model and options; extras
        ``darkfold[onnxruntime]``, ``darkfold[openvino]``), or "auto": the first of these
        installed, fastest first (``backends.AUTO_ORDER``). Other backends than numba return
        the head inputs only and fold. ``precision``: "f32", or "bf16" on OpenVINO (bfloat16
        where the CPU has AVX512_BF16 or AMX; close to float32, not equal).
        """
        # Imported here, not at the top: the runtime loads numba (a quarter of a second,
        # and seconds more on a first run), which `import darkfold` and `darkfold info`
        # must not pay. Neither the runtime nor the backends import this module.
        from .backends import forward

        return forward(self, x, layers, fold=fold, threads=threads, backend=backend, precision=precision)

    def release(self):
        """Free what running the model holds: its engines' worker threads and its backend
        sessions (they also go when the model is garbage-collected). The next call builds them
        again."""
        # Imported here for the same reason as in forward().
        from .backends import release

        release(self)

    def detect(self, image, thresh=0.25, nms=0.45, *, names=None, letterbox=None, threads=None, channels="bgr",
               backend="numba", precision="f32"):
        """Detect objects as Darknet's ``detector test`` does; see ``darkfold.detect``.

        ``image`` is a path, the bytes of an encoded image (JPEG, PNG, ...), a
        binary file object holding one, or an array: BGR uint8 as ``cv2.imread``
        returns it, or RGB with ``channels="rgb"`` (PIL, imageio); grey,
        4-channel and uint16 arrays are read as their files would be. Returns
        a list of ``Detection`` (``class_id``, ``name``, ``confidence``, ``box``
        = left, top, width, height in pixels), or a list of such lists for a
        list of images. ``names``: a list or a .names file (default: COCO for
        the bundled model, else class ids); ``letterbox``: None follows the
        cfg's ``letter_box``; ``threads``, ``backend`` and ``precision``: as for
        ``forward``. One model may be shared by threads: their calls run one at a time.
        """
        # Imported here for the same reason as in forward(): detection loads numba and OpenCV.
        from .detect import detect

        return detect(self, image, thresh, nms, names=names, letterbox=letterbox, threads=threads,
                      channels=channels, backend=backend, precision=precision)


def write_files(cfg, cfg_path, weights_path=None, header=None, layers=(), params=()):
    """Write the cfg and (if ``weights_path``) the weights, as they are: no temporary names."""
    with open(cfg_path, "wb") as file:
        file.write(cfg.to_bytes())
    if weights_path is not None:
        write_weights(weights_path, header, layers, params)


def load(cfg_path=None, weights_path=None, *, partial=False):
    """Read a Darknet model: ``cfg_path``, and its weights if given.

    With no arguments, loads the bundled COCO YOLOv3-tiny. ``partial=True``
    accepts a weights file that stops at a layer boundary (a backbone such as
    ``darknet53.conv.74``); layers past its end get no parameters. Bad input
    raises ``darkfold.DarkfoldError``.
    """
    if cfg_path is None:
        if weights_path is not None:
            raise ModelError(f"{weights_path}: weights given without a cfg", path=weights_path,
                             expected="a cfg", found="none")
        cfg_path, weights_path = DEFAULT_CFG, DEFAULT_WEIGHTS
    cfg = read_cfg(os.fspath(cfg_path))
    model = Model(cfg)
    model.sources = (os.fspath(cfg_path),) if weights_path is None else (os.fspath(cfg_path), os.fspath(weights_path))
    if weights_path is not None:
        try:
            model.header, model.params = read_weights(os.fspath(weights_path), model.layers, partial=partial)
        except DarkfoldError as error:
            error.warnings = model.warnings  # a misspelt batch_normalize changes the size
            raise
    return model
