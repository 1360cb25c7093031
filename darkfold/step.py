"""What every engine step is: one layer of a forward pass, made ready once, called per pass.

Each layer type's step (engine.py, convolution.py) derives from ``Step``; the class
attributes here are the defaults, and a step that does more says so by setting them.
The engine reads these attributes and calls these methods; it never probes for them.
"""


class Step:
    """One layer's work in a forward pass.

    Built once per model from ``(layer, arrays, fold)``: its weights reordered for the
    kernels, BatchNorm folded (``fold``) or kept for run time. Then called each pass as
    ``step(x, outputs, out, workers)``: ``x`` the previous layer's NHWC output, ``outputs``
    every live output by layer index, ``out`` the buffer to write.
    """

    alias = None  # a layer index: this layer's output IS that layer's (no work, no buffer)
    reads_planes = False  # the first layer reads the NCHW network input as it is, not as NHWC
    writes = None  # the shape it writes when not its layer's output (after a fused 2x2 pool)
    writes_into_route = False  # it can write its channels straight into a [route]'s buffer
    out_offset = 0  # where those channels start, set by the engine

    def prepare(self, threads):
        """Work that needs the number of threads (how weights are split among them)."""

    def pool_2x2(self, pool, threads):
        """Apply ``pool``, the aligned 2x2 stride-2 [maxpool] after this layer, as the output is
        written, if this step can; True if it will (its own output is then never stored)."""
        return False

    def __call__(self, x, outputs, out, workers):
        raise NotImplementedError(f"{type(self).__name__} computes nothing")
