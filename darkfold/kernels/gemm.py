"""Matrix products inside the kernels: BLAS's sgemm (blas.py), and ``matmul_streaming`` for a
product of few rows whose other operand is large and read from memory once."""

import llvmlite.binding
import numba
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from .. import blas
from ..jit import f32, kernel


@kernel
def _blas_layout(a):
    """(BLAS transpose flag, leading dimension) of a 2-D float32 operand whose rows, or whose
    columns, are contiguous."""
    rows, cols = a.shape
    if a.strides[1] == 4 and a.strides[0] > 0:
        return blas.NO_TRANS, max(cols, a.strides[0] // 4)
    if a.strides[0] == 4 and a.strides[1] > 0:
        return blas.TRANS, max(rows, a.strides[1] // 4)
    raise ValueError("gemm: an operand's rows or columns must be contiguous")


@kernel
def gemm(a, b, c):
    """``c = a @ b`` (float32, 2-D) by BLAS's sgemm. The rows of ``c`` are contiguous; those of
    ``a`` and ``b``, or their columns (a transposed array). Shapes are the caller's to check."""
    trans_a, lda = _blas_layout(a)
    trans_b, ldb = _blas_layout(b)
    blas.sgemm(blas.ROW_MAJOR, trans_a, trans_b, a.shape[0], b.shape[1], a.shape[1], f32(1), a.ctypes.data, lda,
               b.ctypes.data, ldb, f32(0), c.ctypes.data, max(b.shape[1], c.strides[0] // 4))


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring the cache line holding ``array[index]`` into its caches."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        handle = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, handle, [args[1]])
        pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
        name = "llvm.prefetch.p0" if llvmlite.binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"
        int32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), [pointer.type, int32, int32, int32]), name)
        builder.call(prefetch, [pointer, int32(0), int32(3), int32(1)])  # read, keep in all caches, data
        return context.get_dummy_value()

    return numba.types.none(array, index), codegen


_CACHE_LINE = 16  # float32 values in a 64-byte cache line


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def matmul_streaming(a, b_rows, out):
    """``out = a @ b_rows.T`` for a product of few rows (a small map) whose other operand,
    ``b_rows``, is large and comes from memory once.

    OpenBLAS repacks that operand on every call and waits for it. Here each block of 4 rows
    of ``a`` by 4 rows of ``b_rows`` is 16 dot products along the rows (vectorised there, so
    rows should be contiguous), and the next 4 rows of ``b_rows`` are prefetched meanwhile;
    README's engine section gives the speed-up."""
    rows, depth = a.shape
    cols = b_rows.shape[0]
    full_rows, full_cols = rows - rows % 4, cols - cols % 4
    row_lines = (depth + _CACHE_LINE - 1) // _CACHE_LINE  # cache lines a row of b_rows spans
    row_blocks = full_rows // 4
    zero = f32(0)
    for j in range(0, full_cols, 4):
        b0, b1, b2, b3 = b_rows[j], b_rows[j + 1], b_rows[j + 2], b_rows[j + 3]
        ahead = max(0, min(4, cols - j - 4)) * row_lines  # lines of the next 4 rows, fetched while these work
        per_block = (ahead + row_blocks) // (row_blocks + 1)
        line = 0
        for i in range(0, full_rows, 4):
            for _ in range(per_block):
                if line < ahead:
                    _prefetch(b_rows[j + 4 + line // row_lines], line % row_lines * _CACHE_LINE)
                    line += 1
            a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for k in range(depth):
                x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
                s00 += x0 * y0
                s01 += x0 * y1
                s02 += x0 * y2
                s03 += x0 * y3
                s10 += x1 * y0
                s11 += x1 * y1
                s12 += x1 * y2
                s13 += x1 * y3
                s20 += x2 * y0
                s21 += x2 * y1
                s22 += x2 * y2
                s23 += x2 * y3
                s30 += x3 * y0
                s31 += x3 * y1
                s32 += x3 * y2
                s33 += x3 * y3
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
            out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = s10, s11, s12, s13
            out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2], out[i + 2, j + 3] = s20, s21, s22, s23
            out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2], out[i + 3, j + 3] = s30, s31, s32, s33
        while line < ahead:
            _prefetch(b_rows[j + 4 + line // row_lines], line % row_lines * _CACHE_LINE)
            line += 1
        for i in range(full_rows, rows):
            a0 = a[i]
            s00 = s01 = s02 = s03 = zero
            for k in range(depth):
                x0 = a0[k]
                s00 += x0 * b0[k]
                s01 += x0 * b1[k]
                s02 += x0 * b2[k]
                s03 += x0 * b3[k]
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
    for j in range(full_cols, cols):
        for i in range(rows):
            total = zero
            for k in range(depth):
                total += a[i, k] * b_rows[j, k]
            out[i, j] = total
