"""Darknet's layer types: one registry entry per type, and the layer specs built from a cfg.

``TYPES`` holds one ``LayerType`` per Darknet section type, in the spirit of
parser.c's table: its section names, its parse function, how ``darkfold info``
describes it, which layers it reads and whether it is a detection head. A parse
function reads the options its layer uses with typed getters, marks the
training-only options Darknet reads as known, and returns a ``Layer`` with its
output shape, the parameter arrays it stores in the .weights file (in file
order) and the BFLOPs Darknet counts for it. The weights reader, the fold,
detection and ``darkfold info`` all work from these specs and entries; the
runtime finds the step that runs a type by the entry's ``name``.

Adding a layer type: its parse (and describe) function and its ``TYPES``
entry here, its step in ``engine.py``, its kernel, and its tests.
"""

import difflib
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from . import activations
from .errors import CfgError, quoted, shortened

# The arrays a BatchNorm stores after its biases, in .weights file order.
BATCHNORM_ARRAYS = ("scales", "rolling_mean", "rolling_variance")


class Shape(NamedTuple):
    w: int
    h: int
    c: int

    def __str__(self):
        return f"{self.w} x {self.h} x {self.c}"


@dataclass(frozen=True)
class Param:
    """One float32 array a layer stores in the .weights file."""

    name: str
    shape: tuple

    @property
    def size(self):
        return math.prod(self.shape)


@dataclass
class Layer:
    """A layer as the cfg describes it, with shapes inferred by Darknet's rules."""

    index: int
    kind: "LayerType"  # its entry in TYPES
    section: object  # the cfg.Section it came from
    input: Shape
    output: Shape
    sources: tuple = ()  # absolute indices of the layers its kind.source_key lists (route, shortcut, ...)
    params: tuple = ()  # Param specs, in .weights file order
    bflops: float = 0.0
    options: dict = field(default_factory=dict)  # typed options the layer uses

    def __getattr__(self, name):
        try:
            return self.__dict__["options"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def type(self):
        """Darknet's section name for the type, e.g. "convolutional" (the long one of two spellings)."""
        return self.kind.name

    @property
    def is_head(self):
        """A detection head: [yolo], [Gaussian_yolo], [region] or [detection]."""
        return self.kind.head

    @property
    def inputs(self):
        """Indices of the layers whose outputs this layer reads, in the order Darknet reads them.

        The layer before (except for a type that reads only the layers it lists, [route]),
        then the layers its cfg lists in ``layers=`` or ``from=``; a layer listed twice
        is read twice. The network input is not a layer and has no index here: layer 0
        reads it, and no other layer can (``layers=`` and ``from=`` name earlier layers
        only), so ``inputs`` is empty for layer 0 and for no other layer.
        """
        previous = (self.index - 1,) if self.index > 0 and self.kind.reads_previous else ()
        return previous + self.sources

    @property
    def where(self):
        return f"{self.section.path}:{self.section.line}"

    @property
    def param_count(self):
        return sum(p.size for p in self.params)


@dataclass
class Net:
    """The [net] section: input size and the options detection needs."""

    width: int
    height: int
    channels: int
    letter_box: int
    section: object

    @property
    def input(self):
        return Shape(self.width, self.height, self.channels)


# Resource limits, checked while shapes are inferred, so that a cfg asking for
# absurd sizes fails with a CfgError before anything is allocated for it.
# The largest real cfgs (cfg/: yolov4-p6, yolov7x, yolov1) stay far below:
# input 1280 px, largest layer output 52M values, largest parameter array
# 116M, 197M parameters in all.
MAX_SIDE = 16384  # [net] width and height, and kernel sizes: 12x the largest real input
# One layer's output, one parameter array, and all parameters together:
# Darknet counts each in a C int (l.outputs, l.nweights), and 2**31 float32
# values are 8 GB, more than any CPU run of a YOLO needs.
MAX_VALUES = 2**31 - 1

# Keys Darknet reads in parse_net_options for training, augmentation and the
# learning-rate policy. darkfold accepts them and does not use them.
_NET_TRAINING_KEYS = (
    "batch max_batches learning_rate learning_rate_min sgdr_cycle sgdr_mult momentum decay subdivisions "
    "time_steps track augment_speed sequential_subdivisions try_fix_nan weights_reject_freq "
    "equidistant_point badlabels_rejection_percentage num_sigmas_reject_badlabels ema_alpha "
    "use_cuda_graph loss_scale dynamic_minibatch optimized_memory workspace_size_limit_MB adam B1 B2 "
    "eps max_crop min_crop flip blur gaussian_noise mixup cutmix mosaic mosaic_bound contrastive "
    "contrastive_jit_flip contrastive_color unsupervised label_smooth_eps resize_step attention "
    "adversarial_lr max_chart_loss angle aspect saturation exposure hue power policy burn_in step "
    "scale steps scales seq_scales gamma show_receptive_field crop_height crop_width"
).split()

# Keys parser.c reads for every layer; all are about training except the two
# that change what is loaded, which darkfold refuses below.
_COMMON_TRAINING_KEYS = (
    "clip onlyforward dont_update burnin_update stopbackward train_only_bn learning_rate"
).split()

# Keys of the detection heads used only by the loss or by training-time tracking.
_HEAD_TRAINING_KEYS = (
    "jitter resize focal_loss ignore_thresh truth_thresh iou_thresh random max max_delta "
    "counters_per_class label_smooth_eps objectness_smooth iou_normalizer obj_normalizer "
    "cls_normalizer delta_normalizer iou_loss iou_thresh_kind track_history_size sim_thresh "
    "dets_for_track dets_for_show track_ciou_norm embedding_layer show_details uc_normalizer "
    "rescore coord_scale object_scale noobject_scale mask_scale class_scale bias_match "
    "thresh absolute log forced"
).split()

# Darknet layer types darkfold recognises but cannot run or load.
_UNSUPPORTED = frozenset(
    "crnn rnn gru lstm conv_lstm history crop lrn normalization contrastive "
    "implicit empty silence activation".split()
)


class _Context:
    """What a parse function may look at: its type, index, input, and earlier layers."""

    def __init__(self, kind, section, index, input_shape, layers):
        self.kind = kind
        self.section = section
        self.index = index
        self.input = input_shape
        self.layers = layers

    def layer(self, output, **fields):
        layer = Layer(self.index, self.kind, self.section, self.input, Shape(*output), **fields)
        self._check_limits(layer)
        return layer

    def _check_limits(self, layer):
        for param in layer.params:
            if param.size > MAX_VALUES:
                shape = " x ".join(map(str, param.shape))
                raise self.error(
                    f"its {param.name} would be {shape} = {param.size:,} values, more than the {MAX_VALUES:,} "
                    "darkfold (and Darknet's int sizes) can hold; check filters=, size= and the input size",
                    expected=f"at most {MAX_VALUES} values", found=param.size)
        values = math.prod(layer.output)
        if values > MAX_VALUES:
            raise self.error(
                f"the output would be {layer.output} = {values:,} values, more than the {MAX_VALUES:,} darkfold "
                "(and Darknet's int sizes) can hold; check the sizes in this layer and [net] width/height",
                expected=f"at most {MAX_VALUES} values", found=values)

    def kernel_size(self, key="size", default=1):
        """A window or kernel size: at least 1, at most MAX_SIDE."""
        size = self.section.get_int(key, default, minimum=1)
        if size > MAX_SIDE:
            raise self.error(f"{key}={size} is larger than any input darkfold accepts ({MAX_SIDE} pixels)", key,
                             expected=f"at most {MAX_SIDE}", found=size)
        return size

    def error(self, message, key=None, expected=None, found=None):
        return _error(self.section, f"layer {self.index} [{self.section.name}]: {message}", key,
                      layer=self.index, expected=expected, found=found)

    def resolve(self):
        """Absolute indices of the layers the type's ``source_key`` lists (negative = relative)."""
        key = self.kind.source_key
        indices = []
        for value in self.section.get_ints(key):
            absolute = self.index + value if value < 0 else value
            if not 0 <= absolute < self.index:
                raise self.error(
                    f"{key}={value} refers to layer {absolute}, which does not exist "
                    f"(layers 0 to {self.index - 1} come before this one)",
                    key,
                )
            indices.append(absolute)
        return indices

    def resolve_one(self):
        key = self.kind.source_key
        indices = self.resolve()
        if len(indices) != 1:
            raise self.error(f"{key}= takes one layer here, not {len(indices)}", key)
        return indices[0]

    def activation(self, default):
        name = self.section.get_str("activation", default)
        if name not in activations.NAMES:
            raise _error(self.section, f"unknown activation {quoted(name)}; Darknet knows: "
                         f"{', '.join(sorted(activations.NAMES))}", "activation", layer=self.index,
                         expected="a Darknet activation", found=shortened(name))
        return name

    def refuse(self, *keys):
        """Options that change the computation in ways darkfold does not implement."""
        for key in keys:
            if key in self.section and self.section.get_str(key) not in ("0", "0.0"):
                raise self.error(f"{key}={shortened(self.section.get_str(key))} is not supported by darkfold", key)

    def need_image(self):
        if min(self.input) <= 0:
            raise self.error(f"needs an image input, but the layer before outputs {self.input}")


def parse_net(section):
    """Read the [net] section (Darknet's parse_net_options)."""
    s = section
    width = s.get_int("width", 0, minimum=0)
    height = s.get_int("height", 0, minimum=0)
    channels = s.get_int("channels", 0, minimum=0)
    if "inputs" in s:
        inputs = s.get_int("inputs", minimum=1)
        if not (width and height and channels):
            width, height, channels = 1, 1, inputs
    if not (width and height and channels):
        raise _error(s, f"[{s.name}] needs width=, height= and channels= (each >= 1)",
                     expected="width, height and channels >= 1", found=f"{width} x {height} x {channels}")
    for key, value in (("width", width), ("height", height)):
        if value > MAX_SIDE:
            raise _error(s, f"[{s.name}] {key}={value}: darkfold accepts inputs of at most {MAX_SIDE} pixels a "
                            "side (the largest YOLO cfgs use 1280)", key, expected=f"at most {MAX_SIDE}", found=value)
    values = width * height * channels
    if values > MAX_VALUES:
        raise _error(s, f"[{s.name}] the input {width} x {height} x {channels} = {values:,} values is more than "
                        f"the {MAX_VALUES:,} darkfold (and Darknet's int sizes) can hold",
                     "channels" if "channels" in s else "inputs", expected=f"at most {MAX_VALUES} values",
                     found=values)
    letter_box = s.get_int("letter_box", 0)
    s.allow_unused(*_NET_TRAINING_KEYS)
    return Net(width, height, channels, letter_box, section)


def parse_convolutional(ctx):
    s = ctx.section
    ctx.need_image()
    ctx.refuse("share_index", "antialiasing", "xnor", "binary", "bin_output", "sway", "rotate",
               "stretch", "stretch_sway", "flipped", "coordconv")
    filters = s.get_int("filters", 1, minimum=1)
    groups = s.get_int("groups", 1, minimum=1)
    size = ctx.kernel_size()
    stride = s.get_int("stride", 1, minimum=1)
    stride_x = s.get_int("stride_x", stride, minimum=1)
    stride_y = s.get_int("stride_y", stride, minimum=1)
    dilation = 1 if size == 1 else s.get_int("dilation", 1, minimum=1)
    s.allow_unused("dilation")
    pad = s.get_int("pad", 0)
    padding = size // 2 if pad else s.get_int("padding", 0, minimum=0)
    s.allow_unused("padding")
    activation = ctx.activation("logistic")
    batch_normalize = 1 if s.get_int("batch_normalize", 0) or s.get_int("cbn", 0) else 0
    s.allow_unused("assisted_excitation", "dot", "angle", "grad_centr", "reverse", "stream", "wait_stream")

    w, h, c = ctx.input
    if c % groups or filters % groups:
        raise ctx.error(f"groups={groups} must divide both the input channels ({c}) and filters ({filters})", "groups")
    # convolutional_layer.c: the output size ignores dilation; the forward
    # pass pads by padding * dilation, which keeps "same" convolutions same.
    out_w = (w + 2 * padding - size) // stride_x + 1
    out_h = (h + 2 * padding - size) // stride_y + 1
    if out_w < 1 or out_h < 1:
        raise ctx.error(f"a {size}x{size} kernel does not fit the {w} x {h} input")
    params = [Param("biases", (filters,))]
    if batch_normalize:
        params += [Param(name, (filters,)) for name in BATCHNORM_ARRAYS]
    params.append(Param("weights", (filters, c // groups, size, size)))
    # Darknet: l.bflops = 2 * nweights * out_h * out_w / 1e9 (convolutional_layer.c)
    bflops = 2.0 * filters * (c // groups) * size * size * out_h * out_w / 1e9
    options = dict(filters=filters, groups=groups, size=size, stride_x=stride_x, stride_y=stride_y,
                   dilation=dilation, padding=padding, activation=activation,
                   batch_normalize=batch_normalize)
    return ctx.layer((out_w, out_h, filters), params=tuple(params), bflops=bflops, options=options)


def describe_convolutional(layer):
    filters = "%5d/%4d " % (layer.filters, layer.groups) if layer.groups > 1 else "%5d      " % layer.filters
    if layer.stride_x != layer.stride_y:
        kernel = "%2dx%2d/%2dx%2d " % (layer.size, layer.size, layer.stride_x, layer.stride_y)
    elif layer.dilation > 1:
        kernel = "%2d x%2d/%2d(%1d)" % (layer.size, layer.size, layer.stride_x, layer.dilation)
    else:
        kernel = "%2d x%2d/%2d   " % (layer.size, layer.size, layer.stride_x)
    return "conv  " + filters + kernel


def parse_connected(ctx):
    s = ctx.section
    output = s.get_int("output", 1, minimum=1)
    activation = ctx.activation("logistic")
    batch_normalize = s.get_int("batch_normalize", 0)
    inputs = ctx.input.w * ctx.input.h * ctx.input.c
    # Darknet stores connected BN statistics after the weights, unlike convolutional.
    params = [Param("biases", (output,)), Param("weights", (output, inputs))]
    if batch_normalize:
        params += [Param(name, (output,)) for name in BATCHNORM_ARRAYS]
    options = dict(output=output, activation=activation, batch_normalize=batch_normalize)
    # connected_layer.c never sets l.bflops, so Darknet's total leaves it out.
    return ctx.layer((1, 1, output), params=tuple(params), options=options)


def describe_connected(layer):
    return f"{'connected':<17s}" + "%5d" % layer.output.c


def parse_local(ctx):
    s = ctx.section
    ctx.need_image()
    filters = s.get_int("filters", 1, minimum=1)
    size = ctx.kernel_size()
    stride = s.get_int("stride", 1, minimum=1)
    pad = s.get_int("pad", 0)
    activation = ctx.activation("logistic")
    w, h, c = ctx.input
    # local_layer.c: local_out_height() shrinks by size without pad, by 1 with it.
    out_w = (w - (1 if pad else size)) // stride + 1
    out_h = (h - (1 if pad else size)) // stride + 1
    if out_w < 1 or out_h < 1:
        raise ctx.error(f"a {size}x{size} kernel does not fit the {w} x {h} input")
    locations = out_w * out_h
    params = (Param("biases", (filters, out_h, out_w)),
              Param("weights", (locations, filters, c, size, size)))
    options = dict(filters=filters, size=size, stride=stride, pad=pad, activation=activation)
    return ctx.layer((out_w, out_h, filters), params=params, options=options)


def _parse_pool(ctx, kind):
    s = ctx.section
    ctx.need_image()
    stride = s.get_int("stride", 1, minimum=1)
    stride_x = s.get_int("stride_x", stride, minimum=1)
    stride_y = s.get_int("stride_y", stride, minimum=1)
    size = ctx.kernel_size("size", stride)
    padding = s.get_int("padding", size - 1, minimum=0)
    if kind == "maxpool":
        ctx.refuse("maxpool_depth", "antialiasing")
        s.allow_unused("out_channels", "maxpool_zero_nonmax")
    w, h, c = ctx.input
    # maxpool_layer.c: out = (in + padding - size) / stride + 1; the window
    # starts at -padding/2, so the extra padding falls on the right and bottom.
    out_w = (w + padding - size) // stride_x + 1
    out_h = (h + padding - size) // stride_y + 1
    if out_w < 1 or out_h < 1:
        raise ctx.error(f"a {size}x{size} window does not fit the {w} x {h} input")
    bflops = size * size * c * out_h * out_w / 1e9
    options = dict(size=size, stride_x=stride_x, stride_y=stride_y, padding=padding)
    return ctx.layer((out_w, out_h, c), bflops=bflops, options=options)


def parse_maxpool(ctx):
    return _parse_pool(ctx, "maxpool")


def parse_local_avgpool(ctx):
    return _parse_pool(ctx, "local_avgpool")


def _describe_pool(layer, name):
    if layer.stride_x != layer.stride_y:
        return f"{name:<17s}" + "%2dx%2d/%2dx%2d " % (layer.size, layer.size, layer.stride_x, layer.stride_y)
    return f"{name:<18s}" + "%2dx%2d/%2d   " % (layer.size, layer.size, layer.stride_x)


def describe_maxpool(layer):
    return _describe_pool(layer, "max")


def describe_local_avgpool(layer):
    return _describe_pool(layer, "avg")


def parse_avgpool(ctx):
    ctx.need_image()
    return ctx.layer((1, 1, ctx.input.c))


def parse_route(ctx):
    s = ctx.section
    sources = ctx.resolve()  # layers=
    groups = s.get_int("groups", 1, minimum=1)
    group_id = s.get_int("group_id", 0, minimum=0)
    s.allow_unused("stream", "wait_stream")
    if group_id >= groups:
        raise ctx.error(f"group_id={group_id} must be less than groups={groups}", "group_id")
    shapes = [ctx.layers[i].output for i in sources]
    first = shapes[0]
    for index, shape in zip(sources, shapes):
        if (shape.w, shape.h) != (first.w, first.h):
            raise ctx.error(
                f"layers={s.get_str('layers')}: layer {index} outputs {shape.w} x {shape.h}, "
                f"layer {sources[0]} outputs {first.w} x {first.h}; route needs equal width and height",
                "layers",
            )
        if shape.c % groups:
            raise ctx.error(f"groups={groups} does not divide the {shape.c} channels of layer {index}", "groups")
    channels = sum(shape.c for shape in shapes) // groups
    options = dict(layers=tuple(sources), groups=groups, group_id=group_id)
    return ctx.layer((first.w, first.h, channels), sources=tuple(sources), options=options)


def describe_route(layer):
    if layer.groups > 1:
        return "route " + " ".join(str(i) for i in layer.sources) + f"  {layer.group_id}/{layer.groups}"
    return describe_sources(layer)


def parse_shortcut(ctx):
    s = ctx.section
    sources = ctx.resolve()  # from=
    activation = ctx.activation("linear")
    weights_type = s.get_str("weights_type", "none",
                             choices={"none", "per_feature", "per_layer", "per_channel"})
    weights_normalization = s.get_str("weights_normalization", "none",
                                      choices={"none", "relu", "avg_relu", "softmax"})
    if weights_type != "none" and weights_normalization == "none":
        # parse_shortcut exits on this combination.
        raise ctx.error(f"weights_type={weights_type} needs weights_normalization=relu, avg_relu or softmax",
                        "weights_normalization")
    # shortcut_cpu adds the channels the two inputs have in common; the output
    # keeps the shape of the layer before. Darknet also resamples unequal
    # widths, which no YOLO cfg uses.
    for index in sources:
        source = ctx.layers[index].output
        if (source.w, source.h) != (ctx.input.w, ctx.input.h):
            raise ctx.error(
                f"from: layer {index} outputs {source} but the layer before outputs {ctx.input}; "
                "darkfold supports shortcuts between layers of equal width and height only",
                "from",
            )
    # shortcut_layer.c: one weight per input (per_feature) or per input and channel.
    inputs = len(sources) + 1
    params = ()
    if weights_type in ("per_feature", "per_layer"):
        params = (Param("weights", (inputs,)),)
    elif weights_type == "per_channel":
        params = (Param("weights", (inputs, ctx.input.c)),)
    w, h, c = ctx.input
    # shortcut_layer.c: one add per output value and source, twice if weighted.
    bflops = w * h * c * len(sources) * (2 if params else 1) / 1e9
    options = dict(activation=activation, weights_type=weights_type,
                   weights_normalization=weights_normalization)
    return ctx.layer(ctx.input, sources=tuple(sources), params=params, bflops=bflops, options=options)


def shortcut_weights(weights, layer):
    """A weighted [shortcut]'s ``weights`` array as Darknet's detector runs it: (inputs, channels)
    or (inputs, 1) float32, normalised across the inputs. load_network_custom calls
    fuse_conv_batchnorm, which normalises once with max(w, 0.001) for relu (the training-time
    forward uses max(w, 0)). The engine and the ONNX export both run these."""
    inputs = len(layer.sources) + 1
    weights = np.asarray(weights).reshape(inputs, -1).astype(np.float64)
    if layer.weights_normalization in ("relu", "avg_relu"):
        positive = np.where(weights > 0.001, weights, 0.001)
        weights = positive / (positive.sum(axis=0) + 1e-4)
    elif layer.weights_normalization == "softmax":
        exp = np.exp(weights - weights.max(axis=0))
        weights = exp / (exp.sum(axis=0) + 1e-4)
    return weights.astype(np.float32)


def parse_scale_channels(ctx):
    # scale_channels_layer.c: the output has the shape of the `from` layer,
    # each channel (or, with scale_wh, each position) multiplied by the
    # matching value of the layer before.
    s = ctx.section
    source = ctx.resolve_one()  # from=
    scale_wh = s.get_int("scale_wh", 0)
    activation = ctx.activation("linear")
    output = ctx.layers[source].output
    expected = Shape(output.w, output.h, 1) if scale_wh else Shape(1, 1, output.c)
    if ctx.input != expected:
        raise ctx.error(f"the layer before outputs {ctx.input}, but scaling layer {source} "
                        f"({output}) needs {expected}", "from")
    options = dict(scale_wh=scale_wh, activation=activation)
    return ctx.layer(output, sources=(source,), options=options)


def parse_sam(ctx):
    source = ctx.resolve_one()  # from=
    activation = ctx.activation("linear")
    if ctx.layers[source].output != ctx.input:
        raise ctx.error(f"from: layer {source} outputs {ctx.layers[source].output}, expected {ctx.input}", "from")
    return ctx.layer(ctx.input, sources=(source,), options=dict(activation=activation))


def describe_sources(layer):
    """The type and the layers its cfg lists: [route], [shortcut], [scale_channels], [sam]."""
    return f"{layer.type} " + " ".join(str(i) for i in layer.sources)


def parse_upsample(ctx):
    s = ctx.section
    ctx.need_image()
    stride = s.get_int("stride", 2)
    scale = s.get_float("scale", 1.0)
    if stride == 0:
        raise ctx.error("stride=0: expected a non-zero integer", "stride")
    w, h, c = ctx.input
    # upsample_layer.c: a negative stride downsamples by -stride.
    if stride > 0:
        output = (w * stride, h * stride, c)
    else:
        if w % -stride or h % -stride:
            raise ctx.error(f"stride={stride} does not divide the {w} x {h} input", "stride")
        output = (w // -stride, h // -stride, c)
    return ctx.layer(output, options=dict(stride=stride, scale=scale))


def describe_upsample(layer):
    name = "upsample" if layer.stride > 0 else "downsample"
    return f"{name:<24s}" + "%2dx  " % abs(layer.stride)


def _parse_reorg(ctx, planes_of):
    s = ctx.section
    ctx.need_image()
    stride = s.get_int("stride", 1, minimum=1)
    reverse = s.get_int("reverse", 0)
    w, h, c = ctx.input
    if reverse:
        if c % (stride * stride):
            raise ctx.error(f"stride={stride}: {c} channels are not divisible by {stride * stride}", "stride")
        output = (w * stride, h * stride, c // (stride * stride))
    else:
        if w % stride or h % stride:
            raise ctx.error(f"stride={stride} does not divide the {w} x {h} input", "stride")
        output = (w // stride, h // stride, c * stride * stride)
    # Darknet's reorg_cpu splits the channels of one of the two shapes into stride^2
    # planes, and reads past the tensor (or divides by zero) when they do not split.
    channels = (ctx.input if planes_of == "input" else Shape(*output)).c
    if channels % (stride * stride):
        raise ctx.error(f"stride={stride}: Darknet's reorg cuts the channels of its {planes_of} into stride x stride "
                        f"= {stride * stride} planes, and {stride * stride} does not divide {channels}", "stride",
                        expected=f"channels divisible by {stride * stride}", found=channels)
    return ctx.layer(output, options=dict(stride=stride, reverse=reverse))


def parse_reorg(ctx):
    return _parse_reorg(ctx, "input")  # reorg_old_layer.c: reorg_cpu on l.w, l.h, l.c


def parse_reorg3d(ctx):
    return _parse_reorg(ctx, "output")  # reorg_layer.c: reorg_cpu on l.out_w, l.out_h, l.out_c


def describe_reorg(layer):
    return f"{'reorg':<24s}" + "/%2d  " % layer.stride  # [reorg3d] too, as Darknet prints it


def _anchors(ctx, count):
    anchors = ctx.section.get_floats("anchors", [])
    if len(anchors) < 2 * count:
        raise ctx.error(f"anchors= has {len(anchors)} values, expected {2 * count} (num={count} pairs)", "anchors",
                        expected=2 * count, found=len(anchors))
    return tuple(zip(anchors[0 : 2 * count : 2], anchors[1 : 2 * count : 2]))


def _check_head_input(ctx, per_box, boxes, described):
    expected = per_box * boxes
    if ctx.input.c != expected:
        raise ctx.error(
            f"the layer before outputs {ctx.input.c} channels, but {described} needs "
            f"{per_box} x {boxes} = {expected}: set filters={expected} in the [convolutional] "
            "layer before it", expected=expected, found=ctx.input.c,
        )


def _parse_yolo_head(ctx, values_per_box):
    s = ctx.section
    ctx.need_image()
    classes = s.get_int("classes", 20, minimum=1)
    num = s.get_int("num", 1, minimum=1)
    mask = s.get_ints("mask", None)
    for index in mask or ():
        if not 0 <= index < num:
            raise ctx.error(f"mask index {index} is outside the {num} anchors (num={num})", "mask")
    anchors = _anchors(ctx, num)  # before range(num): the anchors' text bounds num
    mask = mask or list(range(num))
    scale_x_y = s.get_float("scale_x_y", 1.0)
    new_coords = s.get_int("new_coords", 0)
    nms_kind = s.get_str("nms_kind", "default",
                         choices={"default", "greedynms", "diounms", "cornersnms"})
    beta_nms = s.get_float("beta_nms", 0.6)
    s.allow_unused(*_HEAD_TRAINING_KEYS, "yolo_point")
    _check_head_input(ctx, classes + values_per_box, len(mask),
                      f"classes={classes} with {len(mask)} masked anchors")
    options = dict(classes=classes, num=num, mask=tuple(mask), anchors=anchors, boxes=len(mask),
                   scale_x_y=scale_x_y, new_coords=new_coords, nms_kind=nms_kind, beta_nms=beta_nms)
    return ctx.layer(ctx.input, options=options)


def parse_yolo(ctx):
    return _parse_yolo_head(ctx, 5)


def parse_gaussian_yolo(ctx):
    # Gaussian YOLOv3: x, y, w, h and their four uncertainties, objectness.
    return _parse_yolo_head(ctx, 9)


def parse_region(ctx):
    s = ctx.section
    ctx.need_image()
    coords = s.get_int("coords", 4, minimum=1)
    classes = s.get_int("classes", 20, minimum=1)
    num = s.get_int("num", 1, minimum=1)
    softmax = s.get_int("softmax", 0)
    anchors = _anchors(ctx, num)
    tree = s.get_str("tree", "")
    classfix = s.get_int("classfix", 0)
    s.allow_unused(*_HEAD_TRAINING_KEYS, "map", "sqrt")
    _check_head_input(ctx, coords + 1 + classes, num, f"coords={coords}, classes={classes}, num={num}")
    options = dict(coords=coords, classes=classes, num=num, boxes=num, softmax=softmax, anchors=anchors,
                   tree=tree, classfix=classfix)
    return ctx.layer(ctx.input, options=options)


def parse_detection(ctx):
    s = ctx.section
    coords = s.get_int("coords", 1, minimum=1)
    classes = s.get_int("classes", 1, minimum=1)
    num = s.get_int("num", 1, minimum=1)
    side = s.get_int("side", 7, minimum=1)
    softmax = s.get_int("softmax", 0)
    sqrt = s.get_int("sqrt", 0)  # boxes store sqrt(w), sqrt(h)
    s.allow_unused(*_HEAD_TRAINING_KEYS, "reorg")
    inputs = ctx.input.w * ctx.input.h * ctx.input.c
    expected = side * side * ((1 + coords) * num + classes)
    if inputs != expected:
        raise ctx.error(f"the layer before outputs {inputs} values, but side={side}, num={num}, "
                        f"coords={coords}, classes={classes} need {expected}")
    options = dict(coords=coords, classes=classes, num=num, side=side, softmax=softmax, sqrt=sqrt)
    return ctx.layer(ctx.input, options=options)


def parse_dropout(ctx):
    s = ctx.section
    probability = s.get_float("probability", 0.2)
    s.allow_unused("dropblock", "dropblock_size_rel", "dropblock_size_abs")
    return ctx.layer(ctx.input, options=dict(probability=probability))


def parse_softmax(ctx):
    s = ctx.section
    groups = s.get_int("groups", 1, minimum=1)
    temperature = s.get_float("temperature", 1.0)
    tree = s.get_str("tree", "")
    inputs = ctx.input.w * ctx.input.h * ctx.input.c
    if inputs % groups:
        # softmax_layer.c: each group is inputs / groups values; the rest would be left out.
        raise ctx.error(f"groups={groups} does not divide the {inputs} values of the layer before ({ctx.input})",
                        "groups", expected=f"a divisor of {inputs}", found=groups)
    if temperature == 0:
        raise ctx.error("temperature=0: the softmax divides by it; expected a non-zero number", "temperature")
    s.allow_unused("spatial", "noloss")
    return ctx.layer(ctx.input, options=dict(groups=groups, temperature=temperature, tree=tree))


def parse_cost(ctx):
    s = ctx.section
    s.get_str("type", "sse", choices={"sse", "masked", "smooth", "L1", "seg", "wgan"})
    s.allow_unused("scale", "ratio", "noobject_scale", "thresh")
    return ctx.layer(ctx.input)


def parse_batchnorm(ctx):
    c = ctx.input.c
    params = tuple(Param(name, (c,)) for name in ("biases", *BATCHNORM_ARRAYS))
    return ctx.layer(ctx.input, params=params)


def describe_name(layer):
    """The type's name alone: the row of a type whose options Darknet's table does not show."""
    return layer.type


@dataclass(frozen=True)
class LayerType:
    """Everything darkfold knows about one Darknet layer type, in one place.

    ``parse(ctx)`` reads the type's cfg keys and returns its ``Layer`` (shape, parameters in
    .weights order, BFLOPs); ``describe(layer)`` gives the name and option columns (29
    characters) of its row in Darknet's layer table, as ``darkfold info`` prints it.
    ``Layer.inputs`` follows from ``reads_previous`` (whether it reads the output of the layer
    before, which Darknet's forward pass hands every layer as its input and a route ignores)
    and ``source_key`` (the key listing the other layers it reads: ``layers`` or ``from``). A ``head`` is a detection head, whose output detection
    decodes into boxes (Darknet's fill_network_boxes, network.c, asks the layers of these
    four types); the type's name is its kind: yolo, Gaussian_yolo, region, detection.
    """

    name: str  # the section name darkfold reports
    parse: Callable
    describe: Callable = describe_name
    aliases: tuple = ()  # other section names Darknet's string_to_layer_type accepts for it
    reads_previous: bool = True
    source_key: str = None
    head: bool = False

    def __repr__(self):
        return f"<LayerType [{self.name}]>"

    @property
    def section_names(self):
        return (self.name, *self.aliases)


TYPES = {kind.name: kind for kind in (
    LayerType("convolutional", parse_convolutional, describe_convolutional, aliases=("conv",)),
    LayerType("connected", parse_connected, describe_connected, aliases=("conn",)),
    LayerType("local", parse_local),
    LayerType("maxpool", parse_maxpool, describe_maxpool, aliases=("max",)),
    LayerType("local_avgpool", parse_local_avgpool, describe_local_avgpool, aliases=("local_avg",)),
    LayerType("avgpool", parse_avgpool, aliases=("avg",)),
    LayerType("route", parse_route, describe_route, reads_previous=False, source_key="layers"),
    LayerType("shortcut", parse_shortcut, describe_sources, source_key="from"),
    # Both read the layer before (the scales, the attention map) and multiply from= by it.
    LayerType("scale_channels", parse_scale_channels, describe_sources, source_key="from"),
    LayerType("sam", parse_sam, describe_sources, source_key="from"),
    LayerType("upsample", parse_upsample, describe_upsample),
    LayerType("reorg", parse_reorg, describe_reorg),
    LayerType("reorg3d", parse_reorg3d, describe_reorg),
    LayerType("yolo", parse_yolo, head=True),
    LayerType("Gaussian_yolo", parse_gaussian_yolo, head=True),
    LayerType("region", parse_region, head=True),
    LayerType("detection", parse_detection, head=True),
    LayerType("dropout", parse_dropout),
    LayerType("softmax", parse_softmax, aliases=("soft",)),
    LayerType("cost", parse_cost),
    LayerType("batchnorm", parse_batchnorm),
)}

# Every section name a layer may have, long or short, to its entry.
_BY_SECTION_NAME = {name: kind for kind in TYPES.values() for name in kind.section_names}


def layer_type(section_name):
    """The ``LayerType`` of a section named ``section_name`` (either spelling), or None."""
    return _BY_SECTION_NAME.get(section_name)


def build_layers(cfg):
    """Parse the [net] section and every layer of ``cfg``.

    Returns ``(net, layers, warnings)``, where ``warnings`` lists the options
    no layer read, each with its file and line (Darknet's "Unused field").
    A CfgError carries the warnings found before it in ``error.warnings``:
    a typo in a key is often what made a later check fail.
    """
    first, *rest = cfg.sections
    if first.name not in ("net", "network"):
        raise _error(first, f"the first section is [{first.name}]; a cfg starts with [net]",
                     expected="[net]", found=f"[{first.name}]")
    parsed = []
    try:
        net = parse_net(first)
        parsed.append(first)
        layers = []
        shape = net.input
        params = 0
        for index, section in enumerate(rest):
            kind = layer_type(section.name)
            if kind is None:
                raise _unknown_type(section, index)
            ctx = _Context(kind, section, index, shape, layers)
            ctx.refuse("dontload", "dontloadscales")
            section.allow_unused(*_COMMON_TRAINING_KEYS)
            layer = kind.parse(ctx)
            params += layer.param_count
            if params > MAX_VALUES:
                raise ctx.error(f"the model would have {params:,} parameters up to here, more than the "
                                f"{MAX_VALUES:,} darkfold accepts (an 8 GB weights file); check filters= and sizes",
                                expected=f"at most {MAX_VALUES} parameters", found=params)
            layers.append(layer)
            parsed.append(section)
            shape = layer.output
    except CfgError as error:
        failing = cfg.sections[len(parsed)]
        error.warnings = [note[0] for section in parsed for note in _section_notes(section)]
        error.warnings += [_unknown_key(failing, o) for o in failing.unread() if _suggestion(failing, o)]
        raise
    if not layers:
        raise CfgError(f"{cfg.path}: no layers after [{first.name}]", path=cfg.path, expected="a layer",
                       found="none")
    notes = [note for section in cfg.sections for note in _section_notes(section)]
    for message, fatal, section, line in notes:
        if fatal:
            raise CfgError(message, path=section.path, line=line, expected="each key once",
                           found="a duplicate")
    return net, layers, [note[0] for note in notes]


def _section_notes(section):
    """``(message, fatal, section, line)`` for each duplicate, unknown key and inline-comment trap."""
    notes = []
    # Several cfgs Darknet ships repeat [net] training keys (batch, momentum);
    # Darknet takes the first, and so does darkfold. A repeated key that
    # matters is an error.
    for option in section.duplicates:
        first = section.options[option.key]
        message = (f"{section.path}:{option.line}: duplicate key '{option.key}' in [{section.name}] "
                   f"(first set on line {first.line})")
        if section.is_allowed_unused(option.key):
            notes.append((f"{message}; the first is used, as in Darknet", False, section, option.line))
        else:
            notes.append((message, True, section, option.line))
    notes += [(_unknown_key(section, option), False, section, option.line) for option in section.unread()]
    notes += [(message, False, section, None) for message in section.comment_warnings]
    return notes


def _unknown_key(section, option):
    message = f"{section.where(option.key)}: unknown key '{option.key}' in [{section.name}] (ignored)"
    suggestion = _suggestion(section, option)
    return f"{message}; did you mean '{suggestion}'?" if suggestion else message


def _suggestion(section, option):
    matches = difflib.get_close_matches(option.key, section.known_keys(), n=1, cutoff=0.75)
    return matches[0] if matches else None


def _unknown_type(section, index):
    name = shortened(section.name)
    if name in _UNSUPPORTED:
        return _error(section, f"layer {index}: layer type [{name}] is not supported by darkfold", layer=index,
                      expected="a layer type darkfold supports", found=f"[{name}]")
    known = ", ".join(sorted(TYPES))
    return _error(section, f"layer {index}: unknown layer type [{name}]; darkfold knows: {known}", layer=index,
                  expected="a Darknet layer type", found=f"[{name}]")


def _error(section, message, key=None, **fields):
    """A CfgError at ``section`` (or at its option ``key``), the message starting with file:line."""
    line = section.options[key].line if key in section.options else section.line
    return CfgError(f"{section.where(key)}: {message}", path=section.path, line=line, **fields)
