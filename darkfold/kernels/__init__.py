"""The engine's numba kernels, one module per thing they compute:

    activation  Darknet's activations (formulas from activations.py), bias, run-time BatchNorm
    gemm        matrix products: BLAS's sgemm (blas.py), and one for few rows against large weights
    im2col      im2col, and one thread's share of an im2col convolution
    winograd    Winograd F(2x2, 3x3) and F(4x4, 3x3): transforms, products, one thread's share
    pooling     max and average pooling, and the 2x2 stride-2 max the convolutions fuse
    resample    [upsample] and its downsampling form
    merge       a [route]'s channel copy and a [shortcut]'s sum
    cache       compiling the kernels ahead (half in a helper process), noticing numba's compiles

Plain functions over preallocated arrays. Tensors are NHWC float32 (batch, height, width,
channels), C-contiguous; a 2-D view (batch * height * width, channels) is a GEMM operand as it
is. Every kernel the engine's worker threads call releases the GIL (nogil), so they run side by
side. Callers check shapes and dtypes before calling; a kernel never validates.

numba's cache checks only the source file of the kernel it compiled: a cached kernel that calls
another file's functions (the formulas in activations.py, ``gemm`` from the Winograd kernels)
is not compiled again when only that other file changes. After editing one, delete the
package's ``__pycache__`` folders.
"""
