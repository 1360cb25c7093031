"""A model as an ONNX graph, with Darknet's semantics: ``onnx_model(model) -> onnx.ModelProto``.

One rule per layer type (``LAYERS``, keyed like ``layers.TYPES`` and ``engine.STEPS``) and one
ONNX form per activation (``ACTIVATIONS``, keyed like ``activations.ACTIVATIONS``). A rule adds
the nodes that compute its layer's output from the NCHW tensors of the layers it reads
(``Layer.inputs``; the network input ``images`` for layer 0) and returns that output's name.
BatchNorm is folded, Darknet's fold (``batchnorm.py``), so the initializers are the folded
float32 weights. ``decode=True`` appends Darknet's decoding of the [yolo] and [region] heads.

The graph is built in memory and returned; writing and checking a file is ``onnx_export.py``.
"""

import os

import numpy as np

# The onnx package is an extra (pip install "darkfold[onnx]"): this module is imported only
# when an export runs, and says which extra to install if the package is missing.
try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # pragma: no cover - the test extra installs it
    onnx = None

from .version import __version__
from .batchnorm import fold_arrays, fold_own_batchnorm
from .errors import DarkfoldError, ModelError, UnsupportedError
from .heads import model_heads
from .layers import shortcut_weights

INPUT = "images"
BATCH = "batch"  # the name of the dynamic batch dimension
DEFAULT_OPSET = 17  # what TensorRT 8.6, OpenVINO, OpenCV 5 and onnxruntime all read
MIN_OPSET = 13  # Softmax over one axis, Resize's nearest_mode, Slice and Pad with tensor inputs
MISH_OPSET = 18  # Mish is an operator from opset 18 on; before, softplus . tanh
MAX_BYTES = 2**31  # a protobuf message, and so an ONNX file without external data (the largest YOLO: 0.8 GB)


def require_onnx():
    """Raise a DarkfoldError naming the extra to install unless the onnx package is importable."""
    if onnx is None:
        raise DarkfoldError('exporting to ONNX needs the onnx package: pip install "darkfold[onnx]"',
                            expected="the onnx package", found="not installed")


def latest_opset():
    """The newest opset the installed onnx package knows."""
    require_onnx()
    return onnx.defs.onnx_opset_version()


def check_opset(opset):
    """``opset`` (None: DEFAULT_OPSET) as an int from MIN_OPSET to the newest onnx knows; else a ModelError."""
    if opset is None:
        return DEFAULT_OPSET
    latest = latest_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise ModelError(f"opset={opset!r}: darkfold writes opsets {MIN_OPSET} to {latest} (the newest the "
                         f"installed onnx {onnx.__version__} knows)", expected=f"{MIN_OPSET} to {latest}",
                         found=repr(opset))
    return opset


def check_batch(batch):
    """``batch``: None (a dynamic batch dimension) or a whole number of at least 1; else a ModelError."""
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ModelError(f"batch={batch!r}: expected a whole number of at least 1, or None for a dynamic batch",
                         expected="a whole number >= 1 or None", found=repr(batch))
    return batch


class Graph:
    """Nodes and initializers under construction; names are scoped by the layer being built."""

    def __init__(self, opset, layers):
        self.opset = opset
        self.layers = layers  # the model's, for the shapes of the layers a rule reads
        self.nodes = []
        self.initializers = []
        self.scope = "graph"
        self._used = {INPUT}
        self._constants = {}

    def _name(self, hint):
        name, count = f"{self.scope}/{hint}", 1
        while name in self._used:
            count += 1
            name = f"{self.scope}/{hint}_{count}"
        self._used.add(name)
        return name

    def op(self, op_type, *inputs, **attributes):
        """Add a node of one output; returns the output's name."""
        output = self._name(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def weights(self, hint, array):
        """A float32 initializer of its own holding ``array``: a layer's parameters, a decoding table."""
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def constant(self, value, dtype=np.float32):
        """A scalar or small constant shared by every node that uses the same value."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            name = f"const/{array.dtype.name}/{'x'.join(map(str, array.shape)) or 'scalar'}/{len(self._constants)}"
            self._used.add(name)
            self.initializers.append(numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]

    def shape(self, *dims):
        """A shape for Reshape: 0 keeps the batch, as ONNX's Reshape reads it."""
        return self.constant(dims, np.int64)

    def channels(self, x, start, stop):
        """Channels ``start:stop`` of an NCHW tensor."""
        return self.op("Slice", x, self.constant([start], np.int64), self.constant([stop], np.int64),
                       self.constant([1], np.int64))

    def name_last(self, name):
        """Give the node just added, and its output, the name ``name`` (a layer's output); returns it."""
        self.nodes[-1].output[0] = self.nodes[-1].name = name
        self._used.add(name)
        return name


# -- activations (activations.h), one ONNX form per name of activations.ACTIVATIONS --------------


def _piecewise(g, x, low, below, high, above, inside):
    """``below(x)`` where x < low, ``above(x)`` where x > high, else ``inside(x)``."""
    upper = g.op("Where", g.op("Greater", x, g.constant(high)), above, inside)
    return g.op("Where", g.op("Less", x, g.constant(low)), below, upper)


def _line(g, x, slope, offset):
    """slope * (x + offset)"""
    return g.op("Mul", g.op("Add", x, g.constant(offset)), g.constant(slope))


def _mish(g, x):
    if g.opset >= MISH_OPSET:
        return g.op("Mish", x)
    return g.op("Mul", x, g.op("Tanh", g.op("Softplus", x)))


def _hard_mish(g, x):
    # x > 0: x; -2 < x <= 0: x^2 / 2 + x; else 0. All three are x * clip(x + 2, 0, 2) / 2.
    clipped = g.op("Clip", g.op("Add", x, g.constant(2.0)), g.constant(0.0), g.constant(2.0))
    return g.op("Mul", x, g.op("Mul", clipped, g.constant(0.5)))


def _gelu(g, x):
    # activations.h's tanh approximation with its own constants, not ONNX's erf Gelu
    cube = g.op("Mul", g.op("Mul", x, x), x)
    inner = g.op("Add", g.op("Mul", x, g.constant(0.797885)), g.op("Mul", cube, g.constant(0.035677)))
    return g.op("Mul", g.op("Mul", x, g.constant(0.5)), g.op("Add", g.op("Tanh", inner), g.constant(1.0)))


def _plse(g, x):
    return _piecewise(g, x, -4.0, _line(g, x, 0.01, 4.0), 4.0,
                      g.op("Add", _line(g, x, 0.01, -4.0), g.constant(1.0)),
                      g.op("Add", g.op("Mul", x, g.constant(0.125)), g.constant(0.5)))


def _lhtan(g, x):
    return _piecewise(g, x, 0.0, g.op("Mul", x, g.constant(0.001)), 1.0,
                      g.op("Add", _line(g, x, 0.001, -1.0), g.constant(1.0)), x)


def _stair(g, x):
    # n = floor(x); n even: floor(x / 2); odd: (x - n) + floor(x / 2)
    n = g.op("Floor", x)
    half = g.op("Floor", g.op("Div", x, g.constant(2.0)))
    even = g.op("Equal", g.op("Mod", n, g.constant(2.0), fmod=1), g.constant(0.0))
    return g.op("Where", even, half, g.op("Add", g.op("Sub", x, n), half))


ACTIVATIONS = {
    "linear": lambda g, x: x,
    "leaky": lambda g, x: g.op("LeakyRelu", x, alpha=0.1),
    "revleaky": lambda g, x: g.op("LeakyRelu", x, alpha=0.1),  # activate() runs it as leaky
    "relu": lambda g, x: g.op("Relu", x),
    "logistic": lambda g, x: g.op("Sigmoid", x),
    "mish": _mish,
    "swish": lambda g, x: g.op("Mul", x, g.op("Sigmoid", x)),
    "tanh": lambda g, x: g.op("Tanh", x),
    "hard_mish": _hard_mish,
    "relu6": lambda g, x: g.op("Clip", x, g.constant(0.0), g.constant(6.0)),
    "elu": lambda g, x: g.op("Elu", x, alpha=1.0),
    "selu": lambda g, x: g.op("Selu", x, alpha=1.6732, gamma=1.0507),
    "gelu": _gelu,
    "relie": lambda g, x: g.op("LeakyRelu", x, alpha=0.01),
    "ramp": lambda g, x: g.op("Add", g.op("Relu", x), g.op("Mul", x, g.constant(0.1))),
    "loggy": lambda g, x: g.op("Sub", g.op("Mul", g.op("Sigmoid", x), g.constant(2.0)), g.constant(1.0)),
    "plse": _plse,
    "hardtan": lambda g, x: g.op("Clip", x, g.constant(-1.0), g.constant(1.0)),
    "lhtan": _lhtan,
    "stair": _stair,
}


def _activate(g, layer, x):
    form = ACTIVATIONS.get(layer.activation)
    if form is None:  # the normalize_channels family: the parser knows them, the engine does not run them
        raise UnsupportedError.at_layer(layer, f": activation={layer.activation} cannot be exported to ONNX "
                                               "(darkfold's engine does not run it either)",
                                        expected="an activation of " + ", ".join(sorted(ACTIVATIONS)),
                                        found=layer.activation)
    return form(g, x)


# -- the layers, one rule per registry type -------------------------------------------------------


def _convolutional(g, layer, arrays, inputs):
    (x,) = inputs
    arrays = fold_own_batchnorm(arrays) if layer.batch_normalize else arrays
    size, dilation, out = layer.size, layer.dilation, layer.output
    # convolutional_layer.c pads by padding * dilation on each side; its output size is
    # Darknet's formula, which the far side's padding (or a crop, when it is negative) keeps.
    begin = layer.padding * dilation
    ends = [(count - 1) * stride + dilation * (size - 1) + 1 - side - begin
            for count, stride, side in ((out.h, layer.stride_y, layer.input.h), (out.w, layer.stride_x, layer.input.w))]
    y = g.op("Conv", x, g.weights("weights", arrays["weights"]), g.weights("biases", arrays["biases"]),
             kernel_shape=[size, size], strides=[layer.stride_y, layer.stride_x], dilations=[dilation, dilation],
             pads=[begin, begin, max(ends[0], 0), max(ends[1], 0)], group=layer.groups)
    if min(ends) < 0:
        y = g.op("Slice", y, g.constant([0, 0], np.int64), g.constant([out.h, out.w], np.int64),
                 g.constant([2, 3], np.int64))
    return _activate(g, layer, y)


def _connected(g, layer, arrays, inputs):
    (x,) = inputs
    arrays = fold_own_batchnorm(arrays) if layer.batch_normalize else arrays
    flat = g.op("Flatten", x, axis=1)  # (c, h, w) order, as connected_layer.c reads its input
    y = g.op("Gemm", flat, g.weights("weights", arrays["weights"]), g.weights("biases", arrays["biases"]), transB=1)
    return g.op("Reshape", _activate(g, layer, y), g.shape(0, layer.output.c, 1, 1))


def _batchnorm(g, layer, arrays, inputs):
    # batchnorm_layer.c's scales * (x - mean) / sqrt(var + eps) + biases, folded into one
    # multiply and add per channel by Darknet's fold arithmetic.
    (x,) = inputs
    c = layer.output.c
    factor, shift = fold_arrays(np.ones((c, 1), np.float32), arrays["biases"], arrays["scales"],
                                arrays["rolling_mean"], arrays["rolling_variance"])
    y = g.op("Mul", x, g.weights("scales", factor.reshape(c, 1, 1)))
    return g.op("Add", y, g.weights("biases", shift.reshape(c, 1, 1)))


def _pool(g, layer, arrays, inputs):
    # maxpool_layer.c: the window starts at -padding/2, so the padding splits [p//2, p - p//2]
    # per axis; cells outside the image never win a max and are not counted in a mean.
    (x,) = inputs
    p = layer.padding
    if p - p // 2 >= layer.size:
        raise UnsupportedError.at_layer(layer, f": padding={p} puts whole windows of size={layer.size} outside "
                                               "the image, which ONNX pooling cannot express",
                                        expected=f"padding < {2 * layer.size - 1}", found=p)
    pool = {"kernel_shape": [layer.size, layer.size], "strides": [layer.stride_y, layer.stride_x],
            "pads": [p // 2, p // 2, p - p // 2, p - p // 2]}
    if layer.type == "local_avgpool":
        return g.op("AveragePool", x, count_include_pad=0, **pool)
    return g.op("MaxPool", x, **pool)


def _avgpool(g, layer, arrays, inputs):
    return g.op("GlobalAveragePool", inputs[0])


def _route(g, layer, arrays, inputs):
    parts = inputs
    if layer.groups > 1:  # route_layer.c: channel slice group_id of each input
        parts = []
        for source, x in zip(layer.sources, inputs):
            step = g.layers[source].output.c // layer.groups
            parts.append(g.channels(x, layer.group_id * step, (layer.group_id + 1) * step))
    if len(parts) == 1:
        return parts[0]
    return g.op("Concat", *parts, axis=1)


def _shortcut(g, layer, arrays, inputs):
    # shortcut_layer.c: the layer before plus each from= layer, over the channels both have;
    # weighted by weights normalised as fuse_conv_batchnorm leaves them for a detector.
    c = layer.output.c
    weights = None
    if layer.weights_type != "none":
        weights = shortcut_weights(np.asarray(arrays["weights"], np.float32), layer)
    y = inputs[0]
    if weights is not None:
        y = g.op("Mul", y, g.weights("weights", _per_channel(weights[0])))
    for k, (source, x) in enumerate(zip(layer.sources, inputs[1:]), start=1):
        channels = g.layers[source].output.c
        if channels > c:
            x = g.channels(x, 0, c)
        if weights is not None:
            x = g.op("Mul", x, g.weights("weights", _per_channel(weights[k][:min(c, channels)])))
        if channels < c:  # only the first channels get the addition
            x = g.op("Pad", x, g.constant([0, 0, 0, 0, 0, c - channels, 0, 0], np.int64))
        y = g.op("Add", y, x)
    return _activate(g, layer, y)


def _per_channel(weights):
    return weights.reshape(-1, 1, 1)


def _multiply(g, layer, arrays, inputs):
    # [sam] (element by element) and [scale_channels] (per channel, or per position with
    # scale_wh): the from= layer times the layer before, broadcast.
    x, source = inputs
    return _activate(g, layer, g.op("Mul", source, x))


def _upsample(g, layer, arrays, inputs):
    (x,) = inputs
    stride = abs(layer.stride)
    if layer.stride > 0:  # nearest neighbour: output (y, x) reads input (y // stride, x // stride)
        y = g.op("Resize", x, "", g.constant([1.0, 1.0, stride, stride]), mode="nearest",
                 coordinate_transformation_mode="asymmetric", nearest_mode="round_prefer_floor")
    else:  # upsample_cpu with forward=0 sums each stride x stride block
        y = g.op("AveragePool", x, kernel_shape=[stride, stride], strides=[stride, stride])
        y = g.op("Mul", y, g.constant(float(stride * stride)))
    return y if layer.scale == 1 else g.op("Mul", y, g.constant(layer.scale))


def _reorg(g, layer, arrays, inputs):
    # blas.c reorg_cpu: a permutation of the flat (c, h, w) memory that pairs a (c, h, w) array A
    # with a (c / s^2, h * s, w * s) array B: A[(dy * s + dx) * c / s^2 + c2, j, i] = B[c2, j * s + dy,
    # i * s + dx]. [reorg] runs it on its input's size, [reorg3d] on its output's; forward=0
    # (reverse=0) reads B and writes A. Not SpaceToDepth: Darknet's order is its own.
    (x,) = inputs
    s = layer.stride
    w, h, c = layer.input if layer.type == "reorg" else layer.output
    plane = c // (s * s)
    if layer.reverse:
        view, order = (0, s, s, plane, h, w), [0, 3, 4, 1, 5, 2]  # A as (dy, dx, c2, j, i)
    else:
        view, order = (0, plane, h, s, w, s), [0, 3, 5, 1, 2, 4]  # B as (c2, j, dy, i, dx)
    moved = g.op("Transpose", g.op("Reshape", x, g.shape(*view)), perm=order)
    out = layer.output
    return g.op("Reshape", moved, g.shape(0, out.c, out.h, out.w))


def _softmax(g, layer, arrays, inputs):
    # softmax_layer.c: over each of groups runs of the (c, h, w)-flattened input, x / temperature
    (x,) = inputs
    if layer.tree:
        raise UnsupportedError.at_layer(layer, f": tree={layer.tree} (hierarchical softmax) cannot be exported",
                                        expected="no tree=", found=layer.tree)
    y = g.op("Reshape", x, g.shape(0, layer.groups, -1))
    if layer.temperature != 1:
        y = g.op("Div", y, g.constant(layer.temperature))
    out = layer.output
    return g.op("Reshape", g.op("Softmax", y, axis=2), g.shape(0, out.c, out.h, out.w))


def _identity(g, layer, arrays, inputs):
    """[dropout] at inference, and the heads, whose output is their input (decoding is apart)."""
    return inputs[0]


LAYERS = {
    "convolutional": _convolutional,
    "connected": _connected,
    "batchnorm": _batchnorm,
    "maxpool": _pool,
    "local_avgpool": _pool,
    "avgpool": _avgpool,
    "route": _route,
    "shortcut": _shortcut,
    "upsample": _upsample,
    "reorg": _reorg,
    "reorg3d": _reorg,
    "sam": _multiply,
    "scale_channels": _multiply,
    "softmax": _softmax,
    "dropout": _identity,
    "yolo": _identity,
    "region": _identity,
    "Gaussian_yolo": _identity,
    "detection": _identity,
}


# -- decoding (yolo_layer.c, region_layer.c) ------------------------------------------------------


def _decode_head(g, head, x, shape, net):
    """Boxes (N, K, 4) and scores (N, K, classes) of one head; K = cells x anchors, cell by cell
    (row-major), anchor by anchor within a cell, as get_yolo_detections and get_region_detections
    walk them."""
    anchors, classes = len(head.anchors), head.classes
    grid_w, grid_h = shape.w, shape.h
    cells = grid_w * grid_h
    k = cells * anchors
    values = g.op("Reshape", x, g.shape(0, anchors, 5 + classes, cells))
    values = g.op("Reshape", g.op("Transpose", values, perm=[0, 3, 1, 2]), g.shape(0, k, 5 + classes))

    def part(start, stop):
        return g.op("Slice", values, g.constant([start], np.int64), g.constant([stop], np.int64),
                    g.constant([2], np.int64))

    xy, wh, objectness, scores = part(0, 2), part(2, 4), part(4, 5), part(5, 5 + classes)
    row, col = np.divmod(np.repeat(np.arange(cells), anchors), grid_w)
    cell = np.stack([col, row], axis=1).astype(np.float32)  # (K, 2)
    grid = g.constant([grid_w, grid_h])
    anchor = np.tile(np.asarray(head.anchors, np.float32), (cells, 1))  # (K, 2)
    if head.type == "yolo":
        logistic = (lambda t: t) if head.new_coords else (lambda t: g.op("Sigmoid", t))  # new_coords: the conv did
        xy = logistic(xy)
        if head.scale_x_y != 1:
            xy = g.op("Add", g.op("Mul", xy, g.constant(head.scale_x_y)), g.constant(-0.5 * (head.scale_x_y - 1)))
        # anchors in network pixels
        size = (anchor / np.array([net.width, net.height], np.float32)).astype(np.float32)
        if head.new_coords:  # 4 * t^2 * anchor / net
            wh = g.op("Mul", g.op("Mul", wh, wh), g.weights("anchors", 4 * size))
        else:
            wh = g.op("Mul", g.op("Exp", wh), g.weights("anchors", size))
        objectness, scores = logistic(objectness), logistic(scores)
    else:  # [region]: logistic x, y and objectness, anchors in grid cells, softmax over classes
        xy = g.op("Sigmoid", xy)
        size = (anchor / np.array([grid_w, grid_h], np.float32)).astype(np.float32)
        wh = g.op("Mul", g.op("Exp", wh), g.weights("anchors", size))
        objectness = g.op("Sigmoid", objectness)
        if head.classfix == -1:  # region_layer.c: objectness below 0.5 counts as none
            objectness = g.op("Where", g.op("Less", objectness, g.constant(0.5)), g.constant(0.0), objectness)
        if head.softmax:
            scores = g.op("Softmax", scores, axis=2)
    centre = g.op("Div", g.op("Add", xy, g.weights("cells", cell)), grid)
    return g.op("Concat", centre, wh, axis=2), g.op("Mul", objectness, scores)


def decoded_heads(model):
    """The heads ``decode=True`` decodes (``heads.Head``s): every head, if each is a [yolo] or a
    [region] that darkfold's detection decodes; else an error naming the first that is not."""
    for layer in model.layers:
        if layer.is_head and layer.type not in ("yolo", "region"):
            raise UnsupportedError.at_layer(layer, ": --decode decodes [yolo] and [region] heads only; export it "
                                                   "without --decode", expected="[yolo] or [region]",
                                            found=f"[{layer.type}]")
    return model_heads(model)


def _decode(g, model, tensors):
    boxes, scores = [], []
    for head in decoded_heads(model):
        g.scope = f"decode_{head.index}"
        source = model.layers[head.index].inputs[0]
        head_boxes, head_scores = _decode_head(g, head, tensors[source], model.layers[source].output, model.net)
        boxes.append(head_boxes)
        scores.append(head_scores)
    g.scope = "decode"
    if len(boxes) == 1:
        return {"boxes": boxes[0], "scores": scores[0]}
    return {"boxes": g.op("Concat", *boxes, axis=1), "scores": g.op("Concat", *scores, axis=1)}


# -- the model ------------------------------------------------------------------------------------


def output_shapes(model, *, decode=False, batch=None):
    """``{output name: shape}`` of the exported graph; the batch dimension is ``batch`` or "batch"."""
    n = BATCH if batch is None else batch
    if decode:
        heads = decoded_heads(model)
        count = sum(len(h.anchors) * model.layers[h.index].input.w * model.layers[h.index].input.h for h in heads)
        return {"boxes": (n, count, 4), "scores": (n, count, heads[0].classes)}
    shapes = {i: model.layers[i].output for i in raw_outputs(model)}
    return {f"layer_{i}": (n, shape.c, shape.h, shape.w) for i, shape in shapes.items()}


def raw_outputs(model):
    """The indices of the layers whose outputs a raw export returns: ``model.forward``'s, in its order."""
    return sorted(set(model.head_inputs))


def onnx_model(model, *, decode=False, batch=None, opset=None):
    """``model`` as an ``onnx.ModelProto``: input ``images`` (N, C, H, W) float32, RGB in [0, 1];
    outputs ``layer_<index>``, the tensors ``model.forward`` returns (NCHW), or with ``decode``
    ``boxes`` (N, K, 4: centre x, centre y, width, height relative to the input) and ``scores``
    (N, K, classes: objectness x class probability). N is dynamic unless ``batch`` fixes it.

    BatchNorm is folded (Darknet's fold). A layer ONNX cannot express raises UnsupportedError
    naming it; a model without its weights, a ModelError.
    """
    require_onnx()
    opset = check_opset(opset)
    batch = check_batch(batch)
    model.check_complete("export it")
    for layer in model.layers:
        if layer.type not in LAYERS:
            raise UnsupportedError.at_layer(layer, f" cannot be exported to ONNX (darkfold exports: "
                                                   f"{', '.join(sorted(LAYERS))})",
                                            expected="a layer type darkfold exports", found=layer.type)
    size = 4 * model.param_count
    if size >= MAX_BYTES:
        raise UnsupportedError(f"{model.cfg.path}: {size:,} bytes of weights; an ONNX file holds less than "
                               f"{MAX_BYTES:,} (protobuf's limit; darkfold does not write external data)",
                               path=model.cfg.path, expected=f"less than {MAX_BYTES} bytes", found=size)
    if decode:
        decoded_heads(model)  # before any work: a head it cannot decode is refused
    g = Graph(opset, model.layers)
    tensors = []
    for layer, arrays in zip(model.layers, model.params):
        g.scope = f"layer_{layer.index}"
        inputs = [tensors[i] for i in layer.inputs] or [INPUT]
        count = len(g.nodes)
        output = LAYERS[layer.type](g, layer, arrays, inputs)
        if len(g.nodes) > count and g.nodes[-1].output[0] == output:  # not an input passed on
            output = g.name_last(g.scope)
        tensors.append(output)
    shapes = output_shapes(model, decode=decode, batch=batch)
    if decode:
        results = _decode(g, model, tensors)
    else:
        results = {f"layer_{i}": tensors[i] for i in raw_outputs(model)}
    g.scope = "outputs"
    for name, tensor in results.items():  # a graph output of its own name, even where a layer passes its input on
        if tensor != name:
            g.nodes.append(helper.make_node("Identity", [tensor], [name], name=f"outputs/{name}"))
    n = BATCH if batch is None else batch
    net = model.net
    graph = helper.make_graph(
        g.nodes, os.path.splitext(os.path.basename(model.cfg.path))[0],
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [n, net.channels, net.height, net.width])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name, shape in shapes.items()],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="darkfold", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    cfg_name = os.path.basename(model.cfg.path)
    proto.doc_string = (f"{cfg_name} exported by darkfold {__version__}: Darknet's semantics, "
                        "BatchNorm folded" + (", heads decoded" if decode else ""))
    heads = [layer for layer in model.layers if layer.is_head]
    helper.set_model_props(proto, {
        "darkfold_version": __version__,
        "cfg": cfg_name,
        "classes": str(heads[0].classes) if heads else "",
        "decoded": "1" if decode else "0",
        "letter_box": str(net.letter_box),
    })
    return proto

