"""The forward pass: a model's layers run on NHWC float32 tensors with numba kernels and BLAS.

Tensors are NHWC (batch, height, width, channels). Convolutions, nearly all of the work,
live in ``convolution.py``; worker threads (``threads.Workers``) run each layer's parts.

One step class per layer type, and one table (``STEPS``) from type to step, like the
parser's table. A step is built once per model (weights reordered for the GEMM, BatchNorm
folded) and then called with the tensors of each forward pass.
"""

import math
import threading
import weakref

import numpy as np

from .activations import LINEAR, activation_code
from .batchnorm import NO_BATCHNORM, runtime_batchnorm
from .convolution import float32_array, make_convolution
from .errors import UnsupportedError
from .kernels.activation import activate_inplace, bias_or_batchnorm_activate
from .kernels.merge import add_rows, copy_channels
from .kernels.pooling import max_pool_2x2, pool_nhwc
from .kernels.resample import downsample_nhwc, upsample_nhwc
from .layers import shortcut_weights
from .step import Step
from .threads import Workers, blas_threads, default_threads


class Connected(Step):
    """[connected]: Darknet flattens its input in (c, h, w) order."""

    def __init__(self, layer, arrays, fold):
        self.code = activation_code(layer)
        self.weights = float32_array(np.asarray(arrays["weights"]).T)
        self.biases = float32_array(arrays["biases"])
        # connected_layer.c applies its BatchNorm at run time; Darknet never folds it.
        self.batchnorm = runtime_batchnorm(arrays) if layer.batch_normalize else NO_BATCHNORM

    def __call__(self, x, outputs, out, workers):
        flat = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(x.shape[0], -1)
        gemm = out.reshape(flat.shape[0], -1)
        np.matmul(flat, self.weights, out=gemm)
        bias_or_batchnorm_activate(gemm, self.biases, self.batchnorm, self.code)


class BatchNorm(Step):
    """[batchnorm]: Darknet's inference normalisation, per channel."""

    def __init__(self, layer, arrays, fold):
        self.batchnorm = runtime_batchnorm(arrays)
        self.biases = float32_array(arrays["biases"])

    def __call__(self, x, outputs, out, workers):
        out[...] = x
        bias_or_batchnorm_activate(out.reshape(-1, out.shape[-1]), self.biases, self.batchnorm, LINEAR)


def is_aligned_2x2(pool):
    """A [maxpool] size=2 stride=2 whose windows are exactly the aligned 2x2 blocks: those of
    maxpool_layer.c start at -padding/2, so padding < 2, and the sizes are even."""
    return (pool.type == "maxpool" and pool.size == 2 and pool.stride_x == pool.stride_y == 2 and pool.padding < 2
            and pool.input.h % 2 == 0 and pool.input.w % 2 == 0)


class Pool(Step):
    """[maxpool] and [local_avgpool]."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.average = layer.type == "local_avgpool"
        self.aligned_2x2 = not self.average and is_aligned_2x2(layer)

    def __call__(self, x, outputs, out, workers):
        layer = self.layer
        if self.aligned_2x2:
            lines, pooled = x.reshape(-1, *x.shape[2:]), out.reshape(-1, *out.shape[2:])
            workers.split(lambda a, b: max_pool_2x2(lines[2 * a:2 * b], pooled[a:b]), pooled.shape[0], out.size)
            return
        workers.split(lambda a, b: pool_nhwc(x, layer.size, layer.stride_x, layer.stride_y, layer.padding,
                                             self.average, a, b, out), out.shape[0] * out.shape[1],
                      out.size * layer.size**2)


class GlobalAvgPool(Step):
    """[avgpool]: the mean of each channel."""

    def __init__(self, layer, arrays, fold):
        pass  # nothing to make ready

    def __call__(self, x, outputs, out, workers):
        np.mean(x, axis=(1, 2), keepdims=True, dtype=np.float32, out=out)


class Route(Step):
    """[route]: channels of the listed layers side by side; with groups, one slice of each.
    A route of one whole layer is that layer's output (``alias``): no copy."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        if len(layer.inputs) == 1 and layer.groups == 1:
            self.alias = layer.inputs[0]
        self.in_place = set()  # sources that wrote their channels into this route's buffer already

    def __call__(self, x, outputs, out, workers):
        layer = self.layer
        out_pixels = out.reshape(-1, out.shape[-1])
        sources = [(i, outputs[i].reshape(out_pixels.shape[0], -1)) for i in layer.sources]

        def band(a, b):
            offset = 0
            for index, source in sources:
                step = source.shape[1] // layer.groups
                if index not in self.in_place:
                    copy_channels(source, layer.group_id * step, step, out_pixels, offset, a, b)
                offset += step

        workers.split(band, out_pixels.shape[0], out.size)


class Shortcut(Step):
    """[shortcut]: the layer before plus the ``from`` layers (optionally weighted), then the activation."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.code = activation_code(layer)
        self.weights = None
        if layer.weights_type != "none":
            self.weights = shortcut_weights(np.asarray(arrays["weights"], np.float32), layer)

    def __call__(self, x, outputs, out, workers):
        sources = [outputs[i] for i in self.layer.sources]
        if self.weights is not None:
            _weighted_sum(x, sources, self.weights, out)
            flat = out.reshape(-1, out.shape[-1])
            workers.split(lambda a, b: activate_inplace(flat[a:b], self.code), flat.shape[0], flat.size)
            return
        flat = out.reshape(-1, out.shape[-1])
        source_rows = [s.reshape(flat.shape[0], -1) for s in sources]

        def band(a, b):
            flat[a:b] = x.reshape(flat.shape)[a:b]
            for rows in source_rows:
                add_rows(flat, rows, a, b)
            if self.code != LINEAR:
                activate_inplace(flat[a:b], self.code)

        workers.split(band, flat.shape[0], flat.size)


def _weighted_sum(x, sources, weights, out):
    out[...] = x * weights[0]
    channels = out.shape[-1]
    for source, w in zip(sources, weights[1:]):
        k = min(channels, source.shape[-1])
        out[..., :k] += source[..., :k] * (w[:k] if w.size > 1 else w)


class Upsample(Step):
    """[upsample]: nearest neighbour; a negative stride sums blocks (upsample_layer.c)."""

    def __init__(self, layer, arrays, fold):
        self.stride, self.scale = layer.stride, np.float32(layer.scale)

    def __call__(self, x, outputs, out, workers):
        kernel = upsample_nhwc if self.stride > 0 else downsample_nhwc
        stride = abs(self.stride)
        workers.split(lambda a, b: kernel(x, stride, self.scale, a, b, out), out.shape[0] * out.shape[1], out.size)


class Reorg(Step):
    """[reorg] (YOLOv2, reorg_old_layer.c) and [reorg3d] (reorg_layer.c): Darknet's reorg_cpu
    permutation of the flat (c, h, w) memory, on the input's size for [reorg] and on the
    output's for [reorg3d]."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.forward = 1 if layer.reverse else 0
        self.size = layer.input if layer.type == "reorg" else layer.output

    def __call__(self, x, outputs, out, workers):
        n = x.shape[0]
        memory = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(n, -1)
        flat = _reorg_cpu(memory, self.size, self.layer.stride, self.forward)
        shape = self.layer.output
        out[...] = flat.reshape(n, shape.c, shape.h, shape.w).transpose(0, 2, 3, 1)


def _reorg_cpu(memory, size, s, forward):
    """blas.c reorg_cpu(x, w, h, c, batch, stride, forward) on (batch, c*h*w) memory.

    Its index formula pairs a (c, h, w) array A with a (c/s^2, h*s, w*s) array B:
    A[(dy*s + dx)*c/s^2 + c2, j, i] = B[c2, j*s + dy, i*s + dx]. forward=0 reads B and
    writes A; forward=1 reads A and writes B.
    """
    n = memory.shape[0]
    w, h, c = size
    plane = c // (s * s)
    if forward:
        view = memory.reshape(n, s, s, plane, h, w)  # A as (dy, dx, c2, j, i)
        return view.transpose(0, 3, 4, 1, 5, 2).reshape(n, -1)
    view = memory.reshape(n, plane, h, s, w, s)  # B as (c2, j, dy, i, dx)
    return view.transpose(0, 3, 5, 1, 2, 4).reshape(n, -1)


class Multiply(Step):
    """[sam] (element by element) and [scale_channels] (per channel or per position)."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.code = activation_code(layer)

    def __call__(self, x, outputs, out, workers):
        np.multiply(outputs[self.layer.sources[0]], x, out=out)
        if self.code != LINEAR:
            flat = out.reshape(-1, out.shape[-1])
            workers.split(lambda a, b: activate_inplace(flat[a:b], self.code), flat.shape[0], flat.size)


class Softmax(Step):
    """[softmax]: over each of ``groups`` runs of the (c, h, w)-flattened input, with temperature."""

    def __init__(self, layer, arrays, fold):
        if layer.tree:
            raise UnsupportedError.at_layer(layer, ": tree= is not supported by darkfold's engine", found=layer.tree)
        self.groups, self.temperature = layer.groups, layer.temperature

    def __call__(self, x, outputs, out, workers):
        flat = x.transpose(0, 3, 1, 2).reshape(x.shape[0], self.groups, -1).astype(np.float64) / self.temperature
        exp = np.exp(flat - flat.max(axis=2, keepdims=True))
        result = (exp / exp.sum(axis=2, keepdims=True)).astype(np.float32)
        out[...] = result.reshape(x.shape[0], x.shape[3], x.shape[1], x.shape[2]).transpose(0, 2, 3, 1)


class PassThrough(Step):
    """Layers whose output is their input at inference: [dropout], and the detection heads,
    whose decoding belongs to detection (darkfold.detect), not to the forward pass."""

    def __init__(self, layer, arrays, fold):
        self.alias = layer.inputs[0]  # the layer whose output this one's is, the same buffer


class PooledAway(Step):
    """A [maxpool] its convolution applied already, as it wrote its output (Engine._fuse_pools)."""

    def __init__(self, convolution):
        self.alias = convolution


STEPS = {
    "convolutional": make_convolution,
    "connected": Connected,
    "batchnorm": BatchNorm,
    "maxpool": Pool,
    "local_avgpool": Pool,
    "avgpool": GlobalAvgPool,
    "route": Route,
    "shortcut": Shortcut,
    "upsample": Upsample,
    "reorg": Reorg,
    "reorg3d": Reorg,
    "sam": Multiply,
    "scale_channels": Multiply,
    "softmax": Softmax,
    "dropout": PassThrough,
    "yolo": PassThrough,
    "region": PassThrough,
    "Gaussian_yolo": PassThrough,
    "detection": PassThrough,
}


class Engine:
    """A model made ready to run: one step per layer, buffers planned per batch size."""

    def __init__(self, model, *, fold=True, threads=None, fuse=True):
        self.layers = model.layers
        self.net = model.net
        self.steps = []
        for layer, arrays in zip(model.layers, model.params):
            step = STEPS.get(layer.kind.name)
            if step is None:
                raise UnsupportedError.at_layer(layer, f" is not supported by darkfold's engine (it runs: "
                                                 f"{', '.join(sorted(STEPS))})",
                                          expected="a layer type the engine runs", found=layer.type)
            self.steps.append(step(layer, arrays, fold))
        self.workers = Workers(threads or default_threads())
        self.close = weakref.finalize(self, self.workers.close)  # threads would otherwise outlive the model
        with blas_threads(1):  # prepare's products are small and bound by memory: a second BLAS thread
            for step in self.steps:  # gains little and stalls when other processes share the CPUs
                step.prepare(self.workers.threads)
        readers = _readers(self.layers)
        self.fused = self._fuse_pools(readers) if fuse else set()
        self.in_place = self._concat_in_place(readers)
        self._plans = {}
        self._lock = threading.Lock()  # one forward pass at a time: they share buffers and workers

    def _fuse_pools(self, readers):
        """Let each convolution that only a 2x2 stride-2 [maxpool] reads apply that pool as it
        writes, so its full-size output (a tiny YOLO's largest tensors) is never stored.
        Returns the indices of those convolutions: their own outputs are then not available."""
        fused = set()
        for i, pool in enumerate(self.layers[1:]):
            if (readers[i] == {i + 1} and is_aligned_2x2(pool)
                    and self.steps[i].pool_2x2(pool, self.workers.threads)):
                self.steps[i + 1] = PooledAway(i)
                fused.add(i)
        return fused

    def _concat_in_place(self, readers):
        """Let each convolution that only a [route] reads write its output straight into its
        channels of the route's buffer, which the route then need not copy (yolov4 copied 21M
        values through its routes). Returns {convolution: route}."""
        in_place = {}
        for route, step in enumerate(self.steps):
            if not isinstance(step, Route) or step.alias is not None or step.layer.groups != 1:
                continue
            offset = 0
            for source in step.layer.sources:
                if (self.steps[source].writes_into_route and readers[source] == {route}
                        and step.layer.sources.count(source) == 1 and source not in self.fused):
                    self.steps[source].out_offset = offset
                    step.in_place.add(source)
                    in_place[source] = route
                offset += self.layers[source].output.c
        return in_place

    def forward(self, x, wanted):
        """Run NCHW float32 ``x`` (checked by the caller); return {index: NCHW output} for ``wanted``."""
        with self._lock:
            return self._forward(x, wanted)

    def first_nonfinite(self, x):
        """The index of the first layer whose output on ``x`` holds NaN or inf, or None.

        One pass that looks at each output in its buffer and stops there, where asking
        ``forward`` for every output would copy them all (3.5 GB for yolov4-p6 at 1280).
        """
        found = []

        def nonfinite(index, out):
            if np.isfinite(out).all():
                return False
            found.append(index)
            return True

        with self._lock:
            self._forward(x, (), stop=nonfinite)
        return found[0] if found else None

    def _forward(self, x, wanted, stop=None):
        plan = self._plan(x.shape[0])
        wanted = set(wanted)
        results = {}
        outputs = [None] * len(self.layers)
        first = self.steps[0]
        previous = x if first.reads_planes else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        with blas_threads(1), self.workers.spinning():
            for i, step in enumerate(self.steps):
                alias = step.alias
                if alias is not None:
                    out = previous if alias == i - 1 else outputs[alias]
                else:
                    out = plan.output(i)  # for a convolution writing into a route: its channels
                    step(previous, outputs, plan.target(i), self.workers)
                outputs[i] = out
                if i in wanted:  # a copy: the buffer is reused by later layers and calls
                    results[i] = out.transpose(0, 3, 1, 2).copy()
                if stop is not None and stop(i, out):
                    break
                for done in plan.freed_after[i]:
                    outputs[done] = None
                previous = out
        return {i: results[i] for i in sorted(results)}

    def _plan(self, batch):
        if batch not in self._plans:
            self._plans[batch] = _BufferPlan(self.layers, self.steps, batch, self.in_place)
        return self._plans[batch]


def _readers(layers):
    """{layer index: the indices of the layers that read its output} (``Layer.inputs``)."""
    readers = {i: set() for i in range(len(layers))}
    for layer in layers:
        for source in layer.inputs:
            readers[source].add(layer.index)
    return readers


class _BufferPlan:
    """Output buffers for one batch size, reused once no later layer reads them. A buffer is
    allocated when its first writer runs: a convolution writing into a route's (``in_place``,
    {convolution: route}) comes before the route."""

    def __init__(self, layers, steps, batch, in_place):
        count = len(layers)
        # Which layer's buffer holds each output: an alias shares the buffer of the layer it names,
        # a convolution writing in place that of its route.
        owner = list(range(count))
        aliases = [step.alias for step in steps]
        for i, alias in enumerate(aliases):
            if alias is not None and alias >= 0:
                owner[i] = owner[alias]
        for i, route in in_place.items():
            owner[i] = route
        last_use = list(range(count))
        for layer in layers:
            for source in layer.inputs:
                last_use[owner[source]] = max(last_use[owner[source]], layer.index)
        for i in range(count):
            last_use[owner[i]] = max(last_use[owner[i]], last_use[i])
        self.freed_after = [[] for _ in range(count)]
        for i in range(count):
            self.freed_after[last_use[owner[i]]].append(i)
        self._owner = owner
        self._views = [None] * count
        free = []  # flat arrays no live output uses
        released = {}
        for i, layer in enumerate(layers):
            o = owner[i]
            if aliases[i] is None and o not in released:
                output = steps[o].writes or layers[o].output  # a fused pool's is smaller
                shape = (batch, output.h, output.w, output.c)
                size = math.prod(shape)
                fits = [a for a in free if a.size >= size]
                array = min(fits, key=lambda a: a.size) if fits else np.empty(size, np.float32)
                free = [a for a in free if a is not array]
                released[o] = array
                self._views[o] = array[:size].reshape(shape)
            if i in in_place:
                offset = steps[i].out_offset
                self._views[i] = self._views[o][..., offset:offset + layer.output.c]
            for done in self.freed_after[i]:
                if done in released:
                    free.append(released.pop(done))

    def output(self, index):
        """Layer ``index``'s output (a view of its route's buffer for a convolution writing in place)."""
        return self._views[index]

    def target(self, index):
        """The buffer layer ``index`` writes into: its output's, or its route's whole."""
        return self._views[self._owner[index]]
