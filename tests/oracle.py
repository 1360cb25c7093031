"""Independent references for darkfold's tests.

OpenCV 4.x's Darknet importer (``cv2.dnn.readNetFromDarknet``) and a small float64 numpy forward
pass are the oracles; random weights are written and read here byte by byte, without darkfold's
weights reader, writer or fold. Only the layer specs (``darkfold.load(cfg).layers``: types, shapes
and ``Param`` lists in file order) come from darkfold.

Facts about OpenCV 4.14's importer that the helpers below rely on:
* BatchNorm uses ``sqrt(var + 1e-6)`` where Darknet uses ``sqrt(var + 1e-5)``; adding 9e-6 to
  every ``rolling_variance`` (``bump_variances``) makes the two equal.
* Layer names: a Darknet layer ``i`` becomes ``conv_i`` [+ ``bn_i``] [+ ``<activation>_{i+1}``]
  (the activation's suffix is one ahead), ``pool_i``, ``concat_i``/``identity_i`` (route),
  ``shortcut_i``, ``upsample_i``, ``reorg_i``, ``permute_i`` + ``yolo_i`` or ``detection_out``
  (region), ``fullyConnected_i``. ``opencv_output_names`` maps Darknet indices to these.
* It has no ``[batchnorm]`` section and supports only the linear, leaky, relu, mish, swish,
  logistic and tanh activations.
"""

import re

import numpy as np
import pytest

try:
    import cv2
except ImportError:  # pragma: no cover - the test extra installs it
    cv2 = None

import darkfold

DARKNET_EPS = 1e-5  # Darknet's batchnorm and fuse_conv_batchnorm: sqrt(var + .00001)
OPENCV_EPS = 1e-6  # OpenCV 4's darknet importer: BatchNorm eps 1e-6
VARIANCE_BUMP = DARKNET_EPS - OPENCV_EPS  # added to rolling_variance, OpenCV computes Darknet's BN
HEAD_TYPES = ("yolo", "region", "Gaussian_yolo")

HAS_DARKNET_IMPORTER = cv2 is not None and hasattr(cv2, "dnn") and hasattr(cv2.dnn, "readNetFromDarknet")
HAS_OPENCV5 = cv2 is not None and int(cv2.__version__.split(".")[0]) >= 5
# Marks for the tests that need one OpenCV or the other: those that run models through OpenCV
# 4's Darknet importer (gone in OpenCV 5), and those that run darkfold's ONNX exports in OpenCV
# 5. One environment has one OpenCV: conftest.py skips what it cannot run, and under CI, where
# each environment selects its own with -m, refuses to.
needs_opencv_darknet = pytest.mark.opencv4
needs_opencv5 = pytest.mark.opencv5


# --------------------------------------------------------------------------------------------
# cfg and .weights files, written and read without darkfold


def resized_cfg(src, dst, width, height):
    """Copy the cfg ``src`` to ``dst`` with the [net] width= and height= lines changed; returns dst."""
    with open(src, encoding="utf-8", newline="") as file:
        lines = file.read().splitlines(keepends=True)
    done = set()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[net]"):
            break
        match = re.match(r"(\s*)(width|height)(\s*=\s*)(\d+)", line)
        if match and match.group(2) not in done:
            value = width if match.group(2) == "width" else height
            lines[i] = f"{match.group(1)}{match.group(2)}{match.group(3)}{value}" + line[match.end():]
            done.add(match.group(2))
    assert done == {"width", "height"}, f"{src}: no width=/height= in [net]"
    with open(dst, "w", encoding="utf-8", newline="") as file:
        file.write("".join(lines))
    return dst


def header_bytes(major=0, minor=2, revision=0, seen=0):
    """A .weights header: three int32 and a uint64 (uint32 before version 0.2) images-seen count."""
    seen_type = "<u8" if major * 10 + minor >= 2 else "<u4"
    return np.array([major, minor, revision], "<i4").tobytes() + np.array([seen], seen_type).tobytes()


def _transposed(header):
    return header[0] > 1000 or header[1] > 1000


def write_weights_file(path, layers, params, header=(0, 2, 0, 0)):
    """Write ``header`` + each layer's arrays in its ``Param`` order (Darknet's save_weights layout)."""
    with open(path, "wb") as file:
        file.write(header_bytes(*header))
        for layer, arrays in zip(layers, params):
            for param in layer.params:
                array = np.asarray(arrays[param.name], dtype=np.float32)
                assert array.shape == tuple(param.shape), (layer.index, param)
                if layer.type == "connected" and param.name == "weights" and _transposed(header):
                    array = array.T
                file.write(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return path


def read_weights_file(path, layers):
    """Read a .weights file laid out for ``layers``: ``(header tuple, [dict name -> float32 array])``."""
    with open(path, "rb") as file:
        data = file.read()
    major, minor, revision = (int(v) for v in np.frombuffer(data[:12], "<i4"))
    size = 20 if major * 10 + minor >= 2 else 16
    seen = int(np.frombuffer(data[12:size], "<u8" if size == 20 else "<u4")[0])
    header = (major, minor, revision, seen)
    offset = size
    params = []
    for layer in layers:
        arrays = {}
        for param in layer.params:
            count = int(np.prod(param.shape))
            array = np.frombuffer(data, "<f4", count, offset).astype(np.float32)
            if layer.type == "connected" and param.name == "weights" and _transposed(header):
                array = array.reshape(param.shape[::-1]).T
            arrays[param.name] = array.reshape(param.shape)
            offset += 4 * count
        params.append(arrays)
    assert offset == len(data), f"{path}: {len(data) - offset} bytes left over (or missing)"
    return header, params


def bump_variances(params, bump=VARIANCE_BUMP):
    """A copy of ``params`` with ``bump`` added to every rolling_variance (so OpenCV's BN = Darknet's)."""
    bumped = []
    for arrays in params:
        arrays = dict(arrays)
        if "rolling_variance" in arrays:
            arrays["rolling_variance"] = (arrays["rolling_variance"].astype(np.float64) + bump).astype(np.float32)
        bumped.append(arrays)
    return bumped


def write_bumped_copy(src_weights, dst_weights, layers):
    """Copy ``src_weights`` to ``dst_weights`` with ``VARIANCE_BUMP`` added to every rolling_variance."""
    header, params = read_weights_file(src_weights, layers)
    return write_weights_file(dst_weights, layers, bump_variances(params), header)


# --------------------------------------------------------------------------------------------
# random weights that keep activations O(1)-O(10) through deep nets


# 1 / RMS of the activation of a N(0, 1) input: a BN gain that keeps the RMS of activations ~1.
_ACTIVATION_GAIN = {"leaky": 1.41, "relu": 1.41, "mish": 1.48, "swish": 1.67}


def random_params(layers, seed, variance=(0.1, 1.5), jitter=(0.9, 1.1), residual_gain=(0.2, 0.35)):
    """Random arrays for every layer's ``Param`` list, keeping activations O(1) through deep nets.

    Conv/connected weights ~ N(0, 1/fan_in) preserve the RMS of their input. BatchNorm
    variances ~ U(``variance``) and scales = gain * sqrt(variance), so each BN maps RMS 1 to
    RMS ``gain``: 1/RMS of the activation (times ``jitter``), or ``residual_gain`` for a layer
    whose output a [shortcut] adds. Rolling means, biases ~ N(0, 0.1).
    """
    rng = np.random.default_rng(seed)
    into_shortcut = {l.index - 1 for l in layers if l.type == "shortcut"}  # the residual branch
    params = []
    for layer in layers:
        arrays = {}
        shapes = {param.name: tuple(param.shape) for param in layer.params}
        if "rolling_variance" in shapes:
            n = shapes["rolling_variance"]
            arrays["rolling_variance"] = rng.uniform(*variance, n)
            if layer.index in into_shortcut:
                gain = rng.uniform(*residual_gain, n)
            else:
                gain = _ACTIVATION_GAIN.get(getattr(layer, "activation", "linear"), 1.0) * rng.uniform(*jitter, n)
            arrays["scales"] = gain * np.sqrt(arrays["rolling_variance"])
        for name, shape in shapes.items():
            if name in arrays:
                continue
            if name == "weights" and layer.type in ("convolutional", "connected"):
                fan_in = int(np.prod(shape[1:]))
                arrays[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(1 / np.sqrt(fan_in))
            elif name == "weights":  # weighted shortcut
                arrays[name] = rng.uniform(0.5, 1.0, shape)
            else:  # biases, rolling_mean
                arrays[name] = rng.normal(0, 0.1, shape)
        params.append({name: np.asarray(arrays[name], dtype=np.float32) for name in shapes})
    return params


def write_random_weights(cfg_path, weights_path, seed, calibrate_on=None, **kwargs):
    """Write random weights for ``cfg_path``; returns ``(layers, params)``.

    With ``calibrate_on`` (a (C, H, W) input), ``calibrated_params``; else ``random_params``.
    """
    layers = darkfold.load(cfg_path).layers
    if calibrate_on is None:
        params = random_params(layers, seed, **kwargs)
    else:
        params = calibrated_params(layers, seed, calibrate_on, **kwargs)
    write_weights_file(weights_path, layers, params)
    return layers, params


# --------------------------------------------------------------------------------------------
# OpenCV 4.x as the reference implementation


def image_blob(path, size):
    """A 1x3xHxW float32 blob of the image at ``path``: RGB, scaled to [0, 1], resized to ``size``."""
    image = cv2.imread(str(path))
    assert image is not None, path
    return cv2.dnn.blobFromImage(image, 1 / 255, size, swapRB=True, crop=False)


def random_blob(width, height, seed, channels=3):
    """A seeded 1xCxHxW float32 blob of uniform [0, 1) values, like a normalised image."""
    return np.random.default_rng(seed).random((1, channels, height, width), dtype=np.float32)


def opencv_net(cfg_path, weights_path):
    """``cv2.dnn.readNetFromDarknet`` on the CPU backend, layer fusion and Winograd off (see below).

    With fusion on, OpenCV 4.14 returns wrong intermediate outputs when several are requested
    (a conv fused with the concat or eltwise after it: NaN or 1e10 values), and its Winograd
    3x3 path is ~10x less exact. Unfused, every named output is that layer's own result.
    """
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(False)
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    return net


_OPENCV_ACTIVATIONS = {"leaky", "relu", "mish", "swish", "logistic", "tanh"}


def opencv_output_names(net):
    """Map Darknet layer index -> name of the OpenCV layer whose output is that Darknet layer's output."""
    names = {}
    current = None
    for name in net.getLayerNames():
        match = re.fullmatch(r"(.+)_(\d+)", name)
        if name == "detection_out":  # [region]: permute_i then detection_out
            index = current
        elif match is None:
            raise AssertionError(f"unexpected OpenCV layer name {name!r}")
        elif match.group(1) in _OPENCV_ACTIVATIONS:
            index = int(match.group(2)) - 1  # setActivation runs after layer_id++
        else:
            index = int(match.group(2))
        names[index] = name
        current = index
    return names


def opencv_outputs(cfg_path, weights_path, blob, indices):
    """Run OpenCV on ``blob`` and return ``{darknet index: float32 NCHW output}`` for ``indices``."""
    net = opencv_net(cfg_path, weights_path)
    names = opencv_output_names(net)
    net.setInput(blob)
    outputs = net.forward([names[i] for i in indices])
    return {i: np.array(out) for i, out in zip(indices, outputs)}


def head_inputs(layers):
    """Indices of the layers whose outputs feed a [yolo], [region] or [Gaussian_yolo] head."""
    return [layer.index - 1 for layer in layers if layer.type in HEAD_TYPES]


# --------------------------------------------------------------------------------------------
# float64 numpy reference forward pass (Darknet semantics) for small nets


def darknet_fuse(weights, biases, scales, rolling_mean, rolling_variance):
    """Darknet's fuse_conv_batchnorm (network.c) in numpy: factor and bias in double, one rounding."""
    root = np.sqrt(rolling_variance.astype(np.float64) + DARKNET_EPS)
    bias = biases.astype(np.float64) - scales.astype(np.float64) * rolling_mean.astype(np.float64) / root
    factor = scales.astype(np.float64) / root
    flat = weights.reshape(weights.shape[0], -1).astype(np.float64) * factor[:, None]
    return flat.astype(np.float32).reshape(weights.shape), bias.astype(np.float32)


def assert_fused_biases_close(actual, arrays):
    """Within float32 rounding of Darknet's double-precision folded bias."""
    _, expected = darknet_fuse(*(arrays[k] for k in ("weights", "biases", "scales", "rolling_mean",
                                                       "rolling_variance")))
    f = {k: arrays[k].astype(np.float64) for k in arrays}
    shift = np.abs(f["scales"] * f["rolling_mean"] / np.sqrt(f["rolling_variance"] + DARKNET_EPS))
    bound = 2.0 ** -22 * (np.abs(f["biases"]) + shift + np.abs(expected))
    assert np.all(np.abs(actual.astype(np.float64) - expected) <= bound)


def activate(x, name):
    """Darknet's activation ``name`` on a float64 array (the subset the test nets use)."""
    if name == "linear":
        return x
    if name == "leaky":
        return np.where(x > 0, x, 0.1 * x)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "logistic":
        return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "swish":
        return x / (1 + np.exp(-x))
    if name == "mish":
        return x * np.tanh(np.logaddexp(0, x))
    if name == "hard_mish":
        return np.where(x > 0, x, np.where(x > -2, x * x / 2 + x, 0))
    if name == "relu6":  # the intended function; Darknet's CPU build returns 0 (issue #6528)
        return np.clip(x, 0, 6)
    if name == "elu":
        return np.where(x >= 0, x, np.expm1(x))
    if name == "selu":
        return np.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * np.expm1(x))
    if name == "gelu":
        return 0.5 * x * (1 + np.tanh(0.797885 * x + 0.035677 * x ** 3))
    if name == "relie":
        return np.where(x > 0, x, 0.01 * x)
    if name == "ramp":
        return np.maximum(x, 0) + 0.1 * x
    if name == "loggy":
        return 2 / (1 + np.exp(-x)) - 1
    if name == "plse":
        return np.where(x < -4, 0.01 * (x + 4), np.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))
    if name == "hardtan":
        return np.clip(x, -1, 1)
    if name == "lhtan":
        return np.where(x < 0, 0.001 * x, np.where(x > 1, 0.001 * (x - 1) + 1, x))
    if name == "stair":
        n = np.floor(x)
        return np.where(n % 2 == 0, np.floor(x / 2), (x - n) + np.floor(x / 2))
    raise NotImplementedError(f"activation {name}")


def batchnorm(x, arrays):
    """Darknet's inference BatchNorm over axis 0 (channels): scales*(x-mean)/sqrt(var+1e-5)+biases."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    f = {k: np.asarray(arrays[k], np.float64).reshape(shape) for k in ("scales", "rolling_mean", "rolling_variance")}
    return f["scales"] * (x - f["rolling_mean"]) / np.sqrt(f["rolling_variance"] + DARKNET_EPS) \
        + np.asarray(arrays["biases"], np.float64).reshape(shape)


def conv2d(x, weights, stride_x, stride_y, padding, groups=1, dilation=1):
    """Cross-correlation of a (C, H, W) float64 input with (F, C/groups, K, K) weights, zero padding."""
    filters, per_group, size, _ = weights.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    span = dilation * (size - 1) + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (span, span), axis=(1, 2))
    windows = windows[:, ::stride_y, ::stride_x, ::dilation, ::dilation]  # (C, OH, OW, K, K)
    out = []
    per_out = filters // groups
    for g in range(groups):
        w = weights[g * per_out:(g + 1) * per_out].astype(np.float64)
        part = windows[g * per_group:(g + 1) * per_group]
        out.append(np.einsum("chwij,fcij->fhw", part, w, optimize=True))
    return np.concatenate(out)


def maxpool(x, size, stride_x, stride_y, padding, out_w, out_h, average=False):
    """Darknet's maxpool (or local_avgpool): window origin -padding/2, out-of-range cells ignored."""
    c, h, w = x.shape
    offset = padding // 2
    out = np.full((c, out_h, out_w), -np.inf)
    for i in range(out_h):
        for j in range(out_w):
            y0, x0 = i * stride_y - offset, j * stride_x - offset
            ys = slice(max(y0, 0), min(y0 + size, h))
            xs = slice(max(x0, 0), min(x0 + size, w))
            window = x[:, ys, xs]
            out[:, i, j] = window.mean(axis=(1, 2)) if average else window.max(axis=(1, 2))
    return out


def numpy_forward(layers, params, x):
    """Darknet's inference forward in float64 for a (C, H, W) input; returns every layer's output.

    Supports convolutional (groups, stride, no dilation), connected, batchnorm, maxpool, route
    (groups), unweighted shortcut, upsample; heads ([yolo], [region]) pass their input through.
    """
    outputs = []
    for layer, arrays in zip(layers, params):
        x = numpy_layer(layer, arrays, x, outputs)
        outputs.append(x)
    return outputs


def numpy_layer(layer, arrays, x, outputs):
    """One layer of ``numpy_forward``: ``x`` is the previous output, ``outputs`` all earlier ones."""
    if layer.type == "convolutional":
        # convolutional_layer.c pads by padding * dilation
        y = conv2d(x, arrays["weights"], layer.stride_x, layer.stride_y, layer.padding * layer.dilation,
                   layer.groups, layer.dilation)
        if layer.batch_normalize:
            y = batchnorm(y, arrays)
        else:
            y = y + np.asarray(arrays["biases"], np.float64)[:, None, None]
        y = activate(y, layer.activation)
    elif layer.type == "connected":
        y = np.asarray(arrays["weights"], np.float64) @ x.reshape(-1)
        if layer.batch_normalize:
            y = batchnorm(y, arrays)
        else:
            y = y + np.asarray(arrays["biases"], np.float64)
        y = activate(y, layer.activation).reshape(-1, 1, 1)
    elif layer.type == "batchnorm":
        y = batchnorm(x, arrays)
    elif layer.type in ("maxpool", "local_avgpool"):
        y = maxpool(x, layer.size, layer.stride_x, layer.stride_y, layer.padding, layer.output.w, layer.output.h,
                    average=layer.type == "local_avgpool")
    elif layer.type == "avgpool":
        y = x.mean(axis=(1, 2), keepdims=True)
    elif layer.type == "softmax":
        flat = x.reshape(layer.groups, -1) / layer.temperature
        exp = np.exp(flat - flat.max(axis=1, keepdims=True))
        y = (exp / exp.sum(axis=1, keepdims=True)).reshape(x.shape)
    elif layer.type in ("sam", "scale_channels"):
        y = activate(outputs[layer.sources[0]] * x, layer.activation)  # broadcasts 1x1xC or HxWx1
    elif layer.type == "route":
        parts = []
        for source in layer.sources:
            out = outputs[source]
            step = out.shape[0] // layer.groups
            parts.append(out[layer.group_id * step:(layer.group_id + 1) * step])
        y = np.concatenate(parts)
    elif layer.type == "shortcut":
        inputs = [x] + [outputs[source] for source in layer.sources]
        weights = np.ones((len(inputs), 1))
        if layer.weights_type != "none":  # fuse_conv_batchnorm's normalisation (detector runs)
            weights = np.asarray(arrays["weights"], np.float64).reshape(len(inputs), -1)
            if layer.weights_normalization == "softmax":
                weights = np.exp(weights - weights.max(axis=0))
            else:
                weights = np.maximum(weights, 0.001)
            weights = weights / (weights.sum(axis=0) + 1e-4)
        y = inputs[0] * weights[0][:, None, None]
        for source, w in zip(inputs[1:], weights[1:]):  # shortcut_cpu adds the channels both have
            k = min(len(y), len(source))
            y[:k] += source[:k] * (w[:k] if w.size > 1 else w)[:, None, None]
        y = activate(y, layer.activation)
    elif layer.type == "upsample" and layer.stride > 0:
        y = layer.scale * x.repeat(layer.stride, axis=1).repeat(layer.stride, axis=2)
    elif layer.type == "upsample":  # upsample_cpu with forward=0 sums each block
        s = -layer.stride
        c, h, w = x.shape
        y = layer.scale * x.reshape(c, h // s, s, w // s, s).sum(axis=(2, 4))
    elif layer.type in HEAD_TYPES or layer.type == "dropout":
        y = x
    else:
        raise NotImplementedError(f"numpy_forward: layer type {layer.type}")
    assert y.shape == (layer.output.c, layer.output.h, layer.output.w), (layer.index, layer.type, y.shape)
    return y


def calibrated_params(layers, seed, x, variance=(0.1, 1.5), gain=(0.8, 1.6), beta=(1.0, 0.3), head_rms=2.0):
    """Random weights whose BatchNorm statistics are the real ones, measured on a random input.

    Fixed gains cannot keep swish and mish nets in range: their output/input RMS ratio grows with
    the scale, so activations drift to 0 or to 1e2-1e3 over 100+ layers. Here each conv's weights
    are rescaled so its output has unit variance (one factor per layer: late layers have too few
    pixels for per-channel statistics), the BN rolling means are the measured channel means,
    the rolling variances U(``variance``), the scales give a BN gain of U(``gain``) (the
    residual gain into a shortcut), and the BN biases are N(``beta``): positive, as trained
    nets' mostly are, which keeps a random net from amplifying float32 rounding layer by layer
    (with zero-mean biases, folded and unfolded yolov7 drift apart by 3e-4 on outputs <= 1). Head convolutions get a pre-activation RMS of ``head_rms``.
    The statistics are those of the (C, H, W) input ``x``: late layers of a small test input
    have so few pixels that another input's activations can be far off scale, so calibrate on
    the input the test runs. Needs a net that ``numpy_layer`` runs.
    """
    rng = np.random.default_rng(seed)
    params = random_params(layers, seed)
    into_shortcut = {l.index - 1 for l in layers if l.type == "shortcut"}
    feeds_head = set(head_inputs(layers))
    x = np.asarray(x, np.float64)
    outputs = []
    for layer, arrays in zip(layers, params):
        if layer.type == "convolutional":
            y = conv2d(x, arrays["weights"], layer.stride_x, layer.stride_y, layer.padding, layer.groups)
            if layer.batch_normalize:
                factor = 1 / np.sqrt(max(float(y.var(axis=(1, 2)).mean()), 1e-12))
                arrays["weights"] = (arrays["weights"] * factor).astype(np.float32)
                arrays["rolling_mean"] = (y.mean(axis=(1, 2)) * factor).astype(np.float32)
                rolling_variance = rng.uniform(*variance, layer.filters)
                arrays["rolling_variance"] = rolling_variance.astype(np.float32)
                bn_gain = rng.uniform(*(_RESIDUAL if layer.index in into_shortcut else gain), layer.filters)
                arrays["scales"] = (bn_gain * np.sqrt(rolling_variance)).astype(np.float32)
                arrays["biases"] = rng.normal(*beta, layer.filters).astype(np.float32)
            elif layer.index in feeds_head:
                rms = np.sqrt(np.mean(y ** 2)) or 1.0
                arrays["weights"] = (arrays["weights"] * (head_rms / rms)).astype(np.float32)
        x = numpy_layer(layer, arrays, x, outputs)
        outputs.append(x)
    return params


_RESIDUAL = (0.2, 0.35)
