"""The forward pass: a model's layers run on NHWC float32 tensors with numba kernels and BLAS.

NHWC, so that a tensor seen as a (batch * height * width, channels) matrix is a GEMM
operand as it is, the whole batch in one matrix. A convolution is im2col (numba), a
matrix product (numpy's BLAS) and bias + activation (numba), done tile by tile so each
tile's im2col rows are still in cache for the product; layers with few pixels split by
output channels instead. Worker threads run the tiles (``threads.Workers``).

One step class per layer type, and one table (``STEPS``) from type to step, like the
parser's table. A step is built once per model (weights reordered for the GEMM, BatchNorm
folded) and then called with the tensors of each forward pass.
"""

import itertools
import math

import numpy as np

from . import kernels
from .errors import DarkfoldError
from .fold import EPS, fold_arrays
from .threads import Workers, default_threads

ACTIVATIONS = {
    "linear": kernels.LINEAR, "leaky": kernels.LEAKY, "revleaky": kernels.LEAKY, "relu": kernels.RELU,
    "logistic": kernels.LOGISTIC, "mish": kernels.MISH, "swish": kernels.SWISH, "tanh": kernels.TANH,
    "hard_mish": kernels.HARD_MISH, "relu6": kernels.RELU6, "elu": kernels.ELU, "selu": kernels.SELU,
    "gelu": kernels.GELU, "relie": kernels.RELIE, "ramp": kernels.RAMP, "loggy": kernels.LOGGY,
    "plse": kernels.PLSE, "hardtan": kernels.HARDTAN, "lhtan": kernels.LHTAN, "stair": kernels.STAIR,
}

# Tiles of fewer GEMM rows make BLAS repack the weights too often (PERF-NOTES.md); layers
# with fewer rows than this per thread split by output channels instead.
MIN_TILE_ROWS = 256
ROWS_PER_THREAD_FOR_TILES = 1024
# An im2col tile of about this many floats stays in a core's L2 cache.
TILE_VALUES = 1 << 17
# Winograd tiles per GEMM: fewer make BLAS's products inefficient.
MIN_WINOGRAD_TILES = 64


def _activation(layer):
    name = layer.activation
    if name not in ACTIVATIONS:
        raise DarkfoldError(f"{layer.where}: layer {layer.index} [{layer.type}]: activation={name} "
                            f"is not supported by darkfold's engine")
    return ACTIVATIONS[name]


def _f32(array):
    return np.ascontiguousarray(array, dtype=np.float32)


class Convolution:
    """[convolutional]: im2col, GEMM, bias (or explicit BatchNorm) and activation."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.code = _activation(layer)
        weights, biases = arrays["weights"], arrays["biases"]
        self.explicit_batchnorm = layer.batch_normalize and not fold
        if layer.batch_normalize and fold:
            weights, biases = fold_arrays(weights, biases, arrays["scales"], arrays["rolling_mean"],
                                          arrays["rolling_variance"])
        self.biases = _f32(biases)
        if self.explicit_batchnorm:
            self.rolling_mean = _f32(arrays["rolling_mean"])
            self.scales = _f32(arrays["scales"])
            # convolutional_layer.c: sqrt(rolling_variance + .00001f), in float.
            self.deviation = np.sqrt(_f32(arrays["rolling_variance"]) + np.float32(EPS))
        filters, _, size, _ = weights.shape
        groups = layer.groups
        self.reads_planes = layer.index == 0 and groups == 1 and layer.input.c <= 4
        if self.reads_planes:
            # Rows of the GEMM's right side in (c, ky, kx) order: Darknet's own weight order.
            self.matrices = [_f32(weights.reshape(filters, -1).T)]
        else:
            # (ky, kx, c) order, as im2col_nhwc lays out a window.
            step = filters // groups
            self.matrices = [_f32(weights[g * step:(g + 1) * step].transpose(2, 3, 1, 0).reshape(-1, step))
                             for g in range(groups)]
        self.pointwise = size == 1 and layer.stride_x == layer.stride_y == 1 and layer.padding == 0
        self._blocks = {}

    # -- the parts -------------------------------------------------------------------------

    def _finish(self, gemm, out, col0, f0, f1):
        """Bias (or BatchNorm) and activation of GEMM columns f0:f1, then into out[:, col0:];
        ``out=None`` when the product was written to the output already."""
        if self.explicit_batchnorm:
            kernels.batchnorm_activate(gemm, self.rolling_mean[f0:f1], self.deviation[f0:f1],
                                       self.scales[f0:f1], self.biases[f0:f1], self.code)
        else:
            kernels.bias_activate(gemm, self.biases[f0:f1], self.code)
        if out is not None:
            out[:, col0:col0 + (f1 - f0)] = gemm

    def _im2col(self, x, row0, row1, cols):
        layer = self.layer
        kernel = kernels.im2col_nchw if self.reads_planes else kernels.im2col_nhwc
        kernel(x, row0, row1, layer.size, layer.stride_x, layer.stride_y, layer.padding * layer.dilation,
               layer.dilation, layer.output.h, layer.output.w, cols)

    def _left(self, x, flat, row0, row1, workers):
        """The GEMM's left operand for rows row0:row1: a view of x, or im2col in scratch."""
        if self.pointwise:
            return flat[row0:row1]
        k = self.matrices[0].shape[0]
        cols = workers.buffer("cols", (row1 - row0) * k)
        if self.reads_planes:
            cols = cols.reshape(k, row1 - row0)
            self._im2col(x, row0, row1, cols)
            return cols.T
        cols = cols.reshape(row1 - row0, k)
        self._im2col(x, row0, row1, cols)
        return cols

    def _by_rows(self, x, flat, out, workers, matrix, col0, f0):
        """Each thread takes every T-th tile of rows: im2col, product, finish."""
        rows, (k, f) = out.shape[0], matrix.shape
        threads = workers.threads
        tile = max(MIN_TILE_ROWS, min(4096, TILE_VALUES // k))
        tiles = threads * math.ceil(rows / (threads * tile))
        tile = math.ceil(rows / tiles)

        def task(part):
            for start in range(part * tile, rows, threads * tile):
                stop = min(start + tile, rows)
                left = self._left(x, flat, start, stop, workers)
                if f == out.shape[1]:  # the product goes straight to the output rows
                    gemm, target = out[start:stop], None
                else:
                    gemm = workers.buffer("gemm", (stop - start) * f).reshape(stop - start, f)
                    target = out[start:stop]
                np.matmul(left, matrix, out=gemm)
                self._finish(gemm, target, col0, f0, f0 + f)

        workers.run(task, threads)

    def _by_channels(self, x, flat, out, workers, matrix, col0, f0):
        """Few rows: im2col once (split by rows), then each thread one block of output channels."""
        rows, k = out.shape[0], matrix.shape[0]
        if self.pointwise:
            left = flat
        else:
            left = workers.shared(rows * k).reshape((k, rows) if self.reads_planes else (rows, k))
            if self.reads_planes:
                workers.split(lambda a, b: self._im2col(x, a, b, left[:, a:b]), rows)
                left = left.T
            else:
                workers.split(lambda a, b: self._im2col(x, a, b, left[a:b]), rows)
        blocks = self._column_blocks(matrix, workers.threads)

        def task(part):
            b0, b1, block = blocks[part]
            gemm = workers.buffer("gemm", rows * (b1 - b0)).reshape(rows, b1 - b0)
            np.matmul(left, block, out=gemm)
            self._finish(gemm, out, col0 + b0, f0 + b0, f0 + b1)

        workers.run(task, len(blocks))

    def _column_blocks(self, matrix, threads):
        key = (id(matrix), threads)
        if key not in self._blocks:
            edges = _block_edges(matrix.shape[1], threads)
            self._blocks[key] = [(a, b, matrix[:, a:b]) for a, b in itertools.pairwise(edges)]
        return self._blocks[key]

    # -- the call ----------------------------------------------------------------------------

    def __call__(self, x, outputs, out, workers):
        rows = out.shape[0] * out.shape[1] * out.shape[2]
        out = out.reshape(rows, -1)
        groups = len(self.matrices)
        run = self._by_rows if rows >= workers.threads * ROWS_PER_THREAD_FOR_TILES else self._by_channels
        if groups == 1:
            flat = x.reshape(-1, x.shape[-1]) if self.pointwise else None
            run(x, flat, out, workers, self.matrices[0], 0, 0)
            return
        step_in = x.shape[-1] // groups
        for g, matrix in enumerate(self.matrices):
            part = np.ascontiguousarray(x[..., g * step_in:(g + 1) * step_in])
            flat = part.reshape(-1, step_in) if self.pointwise else None
            step_out = matrix.shape[1]
            run(part, flat, out, workers, matrix, g * step_out, g * step_out)


class WinogradConvolution:
    """A 3x3, stride 1, pad 1 [convolutional] as Winograd F(2x2, 3x3): 16 GEMMs with 4/9 of
    the multiplications of im2col's one. Per 2x2 tile of output pixels: input transform
    (numba), 16 products (BLAS), output transform + bias + activation (numba)."""

    # G in U = G g G^T (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks").
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])

    @staticmethod
    def applies(layer, fold):
        return (layer.size == 3 and layer.stride_x == layer.stride_y == 1 and layer.dilation == 1
                and layer.padding == 1 and layer.groups == 1 and layer.input.c >= 16
                and (fold or not layer.batch_normalize))

    def __init__(self, layer, arrays, fold):
        self.code = _activation(layer)
        weights, biases = arrays["weights"], arrays["biases"]
        if layer.batch_normalize:
            weights, biases = fold_arrays(weights, biases, arrays["scales"], arrays["rolling_mean"],
                                          arrays["rolling_variance"])
        self.biases = _f32(biases)
        # U = G g G^T for every (filter, channel) at once: U[a, b] = sum g[i, j] G[a, i] G[b, j],
        # one product with kron(G, G). G holds 1, 1/2 and 0, so only the sums round.
        filters, channels = weights.shape[:2]
        taps = _f32(np.asarray(weights).transpose(2, 3, 1, 0)).reshape(9, channels * filters)  # (i, j), c, f
        transformed = np.kron(self.G, self.G).astype(np.float32) @ taps
        self.weights = transformed.reshape(16, channels, filters)
        self._blocks = {}

    def __call__(self, x, outputs, out, workers):
        n, h, w, _ = x.shape
        grid = ((h + 1) // 2, (w + 1) // 2)
        tiles = n * grid[0] * grid[1]
        if tiles >= workers.threads * 4 * MIN_WINOGRAD_TILES:
            self._by_tiles(x, out, workers, grid, tiles)
        else:
            self._by_channels(x, out, workers, grid, tiles)

    def _by_tiles(self, x, out, workers, grid, tiles):
        c, f = self.weights.shape[1:]
        threads = workers.threads
        chunk = max(MIN_WINOGRAD_TILES, min(512, TILE_VALUES // (16 * c)))
        chunk = math.ceil(tiles / (threads * math.ceil(tiles / (threads * chunk))))

        def task(part):
            for start in range(part * chunk, tiles, threads * chunk):
                stop = min(start + chunk, tiles)
                v = workers.buffer("cols", 16 * (stop - start) * c).reshape(16, stop - start, c)
                kernels.winograd_input(x, start, stop, *grid, v)
                m = workers.buffer("gemm", 16 * (stop - start) * f).reshape(16, stop - start, f)
                np.matmul(v, self.weights, out=m)
                kernels.winograd_output(m, start, *grid, self.biases, self.code, out, 0)

        workers.run(task, threads)

    def _by_channels(self, x, out, workers, grid, tiles):
        """Few tiles: transform the input once, then each thread one block of output channels."""
        c = self.weights.shape[1]
        v = workers.shared(16 * tiles * c).reshape(16, tiles, c)
        workers.split(lambda a, b: kernels.winograd_input(x, a, b, *grid, v[:, a:b]), tiles)

        def task(block):
            f0, f1, weights = block
            m = workers.buffer("gemm", 16 * tiles * (f1 - f0)).reshape(16, tiles, f1 - f0)
            np.matmul(v, weights, out=m)
            kernels.winograd_output(m, 0, *grid, self.biases[f0:f1], self.code, out, f0)

        blocks = self._column_blocks(workers.threads)
        workers.run(lambda part: task(blocks[part]), len(blocks))

    def _column_blocks(self, threads):
        if threads not in self._blocks:
            f = self.weights.shape[2]
            edges = _block_edges(f, threads)
            self._blocks[threads] = [(a, b, self.weights[:, :, a:b]) for a, b in itertools.pairwise(edges)]
        return self._blocks[threads]


def _block_edges(columns, threads):
    """Split ``columns`` output channels into up to ``threads`` blocks of multiples of 16
    (whole vector registers for BLAS's kernels). The blocks are views: BLAS takes a matrix
    whose rows are longer than its width, so no copy is needed."""
    parts = min(threads, columns)
    return sorted({min(columns, 16 * round(columns * i / parts / 16)) for i in range(parts)} | {columns})


def make_convolution(layer, arrays, fold):
    """The fastest correct way to run this [convolutional]."""
    if WinogradConvolution.applies(layer, fold):
        return WinogradConvolution(layer, arrays, fold)
    return Convolution(layer, arrays, fold)


class Connected:
    """[connected]: Darknet flattens its input in (c, h, w) order."""

    def __init__(self, layer, arrays, fold):
        self.code = _activation(layer)
        self.weights = _f32(np.asarray(arrays["weights"]).T)
        self.biases = _f32(arrays["biases"])
        self.batchnorm = None
        if layer.batch_normalize:
            # connected_layer.c normalizes with sqrt(rolling_variance + .00001f) at run time.
            self.batchnorm = (_f32(arrays["rolling_mean"]), np.sqrt(_f32(arrays["rolling_variance"]) + np.float32(EPS)),
                              _f32(arrays["scales"]))

    def __call__(self, x, outputs, out, workers):
        flat = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(x.shape[0], -1)
        gemm = out.reshape(flat.shape[0], -1)
        np.matmul(flat, self.weights, out=gemm)
        if self.batchnorm is None:
            kernels.bias_activate(gemm, self.biases, self.code)
        else:
            mean, deviation, scales = self.batchnorm
            kernels.batchnorm_activate(gemm, mean, deviation, scales, self.biases, self.code)


class BatchNorm:
    """[batchnorm]: Darknet's inference normalisation, per channel."""

    def __init__(self, layer, arrays, fold):
        self.mean = _f32(arrays["rolling_mean"])
        self.deviation = np.sqrt(_f32(arrays["rolling_variance"]) + np.float32(EPS))
        self.scales, self.biases = _f32(arrays["scales"]), _f32(arrays["biases"])

    def __call__(self, x, outputs, out, workers):
        out[...] = x
        kernels.batchnorm_activate(out.reshape(-1, out.shape[-1]), self.mean, self.deviation, self.scales,
                                   self.biases, kernels.LINEAR)


class Pool:
    """[maxpool] and [local_avgpool]."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.average = layer.type == "local_avgpool"

    def __call__(self, x, outputs, out, workers):
        layer = self.layer
        workers.split(lambda a, b: kernels.pool_nhwc(x, layer.size, layer.stride_x, layer.stride_y, layer.padding,
                                                     self.average, a, b, out), out.shape[0] * out.shape[1])


class GlobalAvgPool:
    """[avgpool]: the mean of each channel."""

    def __init__(self, layer, arrays, fold):
        pass

    def __call__(self, x, outputs, out, workers):
        np.mean(x, axis=(1, 2), keepdims=True, dtype=np.float32, out=out)


class Route:
    """[route]: channels of the listed layers side by side; with groups, one slice of each."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer

    def __call__(self, x, outputs, out, workers):
        layer, offset = self.layer, 0
        for source in layer.sources:
            tensor = outputs[source]
            step = tensor.shape[-1] // layer.groups
            out[..., offset:offset + step] = tensor[..., layer.group_id * step:(layer.group_id + 1) * step]
            offset += step


class Shortcut:
    """[shortcut]: the layer before plus the ``from`` layers (optionally weighted), then the activation."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.code = _activation(layer)
        self.weights = None
        if layer.weights_type != "none":
            self.weights = _shortcut_weights(np.asarray(arrays["weights"], np.float32), layer)

    def __call__(self, x, outputs, out, workers):
        sources = [outputs[i] for i in self.layer.sources]
        if self.weights is not None:
            _weighted_sum(x, sources, self.weights, out)
            flat = out.reshape(-1, out.shape[-1])
            workers.split(lambda a, b: kernels.activate_inplace(flat[a:b], self.code), flat.shape[0])
            return
        flat = out.reshape(-1, out.shape[-1])
        source_rows = [s.reshape(flat.shape[0], -1) for s in sources]

        def band(a, b):
            flat[a:b] = x.reshape(flat.shape)[a:b]
            for rows in source_rows:
                kernels.add_rows(flat, rows, a, b)
            if self.code != kernels.LINEAR:
                kernels.activate_inplace(flat[a:b], self.code)

        workers.split(band, flat.shape[0])


def _shortcut_weights(weights, layer):
    """Per-input weights, (inputs, channels) or (inputs, 1), normalised across the inputs.

    As Darknet's detector runs them: load_network_custom calls fuse_conv_batchnorm, which
    normalises once with max(w, 0.001) for relu (the training-time forward uses max(w, 0)).
    """
    inputs = len(layer.sources) + 1
    weights = weights.reshape(inputs, -1).astype(np.float64)
    if layer.weights_normalization in ("relu", "avg_relu"):
        positive = np.where(weights > 0.001, weights, 0.001)
        weights = positive / (positive.sum(axis=0) + 1e-4)
    elif layer.weights_normalization == "softmax":
        exp = np.exp(weights - weights.max(axis=0))
        weights = exp / (exp.sum(axis=0) + 1e-4)
    return weights.astype(np.float32)


def _weighted_sum(x, sources, weights, out):
    out[...] = x * weights[0]
    channels = out.shape[-1]
    for source, w in zip(sources, weights[1:]):
        k = min(channels, source.shape[-1])
        out[..., :k] += source[..., :k] * (w[:k] if w.size > 1 else w)


class Upsample:
    """[upsample]: nearest neighbour; a negative stride sums blocks (upsample_layer.c)."""

    def __init__(self, layer, arrays, fold):
        self.stride, self.scale = layer.stride, np.float32(layer.scale)

    def __call__(self, x, outputs, out, workers):
        kernel = kernels.upsample_nhwc if self.stride > 0 else kernels.downsample_nhwc
        stride = abs(self.stride)
        workers.split(lambda a, b: kernel(x, stride, self.scale, a, b, out), out.shape[0] * out.shape[1])


class Reorg:
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


class Multiply:
    """[sam] (element by element) and [scale_channels] (per channel or per position)."""

    def __init__(self, layer, arrays, fold):
        self.layer = layer
        self.code = _activation(layer)

    def __call__(self, x, outputs, out, workers):
        np.multiply(outputs[self.layer.sources[0]], x, out=out)
        if self.code != kernels.LINEAR:
            flat = out.reshape(-1, out.shape[-1])
            workers.split(lambda a, b: kernels.activate_inplace(flat[a:b], self.code), flat.shape[0])


class Softmax:
    """[softmax]: over each of ``groups`` runs of the (c, h, w)-flattened input, with temperature."""

    def __init__(self, layer, arrays, fold):
        if layer.tree:
            raise DarkfoldError(f"{layer.where}: layer {layer.index} [softmax]: tree= is not supported "
                                "by darkfold's engine")
        self.groups, self.temperature = layer.groups, layer.temperature

    def __call__(self, x, outputs, out, workers):
        flat = x.transpose(0, 3, 1, 2).reshape(x.shape[0], self.groups, -1).astype(np.float64) / self.temperature
        exp = np.exp(flat - flat.max(axis=2, keepdims=True))
        result = (exp / exp.sum(axis=2, keepdims=True)).astype(np.float32)
        out[...] = result.reshape(x.shape[0], x.shape[3], x.shape[1], x.shape[2]).transpose(0, 2, 3, 1)


class PassThrough:
    """Layers whose output is their input at inference: [dropout], and the detection heads,
    whose decoding belongs to detection (darkfold.detect), not to the forward pass."""

    alias = True

    def __init__(self, layer, arrays, fold):
        pass


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

    def __init__(self, model, *, fold=True, threads=None):
        self.layers = model.layers
        self.net = model.net
        self.workers = Workers(threads or default_threads())
        self.steps = []
        for layer, arrays in zip(model.layers, model.params):
            step = STEPS.get(layer.type)
            if step is None:
                raise DarkfoldError(f"{layer.where}: layer {layer.index} [{layer.type}] is not supported by "
                                    f"darkfold's engine (it runs: {', '.join(sorted(STEPS))})")
            if layer.params and arrays is None:
                raise DarkfoldError(f"{layer.where}: layer {layer.index} [{layer.type}] has no weights; "
                                    "load the model with a complete .weights file to run it")
            self.steps.append(step(layer, arrays, fold))
        self._plans = {}

    def close(self):
        self.workers.close()

    def forward(self, x, wanted):
        """Run NCHW float32 ``x`` (checked by the caller); return {index: NCHW output} for ``wanted``."""
        plan = self._plan(x.shape[0])
        wanted = set(wanted)
        results = {}
        outputs = [None] * len(self.layers)
        first = self.steps[0]
        previous = x if getattr(first, "reads_planes", False) else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for i, step in enumerate(self.steps):
            if getattr(step, "alias", False):
                out = previous
            else:
                out = plan.output(i)
                step(previous, outputs, out, self.workers)
            outputs[i] = out
            if i in wanted:  # a copy: the buffer is reused by later layers and calls
                results[i] = out.transpose(0, 3, 1, 2).copy()
            for done in plan.freed_after[i]:
                outputs[done] = None
            previous = out
        return {i: results[i] for i in sorted(results)}

    def _plan(self, batch):
        if batch not in self._plans:
            self._plans[batch] = _BufferPlan(self.layers, self.steps, batch)
        return self._plans[batch]


class _BufferPlan:
    """Output buffers for one batch size, reused once no later layer reads them."""

    def __init__(self, layers, steps, batch):
        count = len(layers)
        # Which layer's buffer holds each output: pass-through layers share their input's.
        owner = list(range(count))
        for i, step in enumerate(steps):
            if getattr(step, "alias", False) and i > 0:
                owner[i] = owner[i - 1]
        last_use = list(range(count))
        for layer in layers:
            readers = [layer.index - 1, *layer.sources] if layer.index > 0 else list(layer.sources)
            for source in readers:
                last_use[owner[source]] = max(last_use[owner[source]], layer.index)
        for i in range(count):
            last_use[owner[i]] = max(last_use[owner[i]], last_use[i])
        self.freed_after = [[] for _ in range(count)]
        for i in range(count):
            self.freed_after[last_use[owner[i]]].append(i)
        self._views = [None] * count
        free = []  # flat arrays no live output uses
        released = {}
        for i, layer in enumerate(layers):
            if owner[i] == i and not getattr(steps[i], "alias", False):
                shape = (batch, layer.output.h, layer.output.w, layer.output.c)
                size = math.prod(shape)
                fits = [a for a in free if a.size >= size]
                array = min(fits, key=lambda a: a.size) if fits else np.empty(size, np.float32)
                free = [a for a in free if a is not array]
                released[i] = array
                self._views[i] = array[:size].reshape(shape)
            for done in self.freed_after[i]:
                if done in released:
                    free.append(released.pop(done))

    def output(self, index):
        return self._views[index]
