"""Masked 2-D tile load/store helpers for the hla2 kernels (plain pointer arithmetic).

Plain pointers rather than tl.make_block_ptr: block pointers are gone from Triton 3.9 (the
version on the CPU test machine) and tensor descriptors are not in 3.6 (the GPU machine).
A tile is rows [r0, r0 + BR) and columns [c0, c0 + BC) of a row-major matrix with `n_rows`
rows, `n_cols` columns and row stride `stride` (elements); out-of-range elements read as 0
and are not written.
"""
import triton
import triton.language as tl


@triton.jit
def load_tile(base, r0, c0, n_rows, n_cols, stride, BR: tl.constexpr, BC: tl.constexpr):
    r = r0 + tl.arange(0, BR)
    c = c0 + tl.arange(0, BC)
    mask = (r[:, None] < n_rows) & (c[None, :] < n_cols)
    return tl.load(base + r[:, None] * stride + c[None, :], mask=mask, other=0.0)


@triton.jit
def store_tile(base, x, r0, c0, n_rows, n_cols, stride, BR: tl.constexpr, BC: tl.constexpr):
    r = r0 + tl.arange(0, BR)
    c = c0 + tl.arange(0, BC)
    mask = (r[:, None] < n_rows) & (c[None, :] < n_cols)
    tl.store(base + r[:, None] * stride + c[None, :], x.to(base.dtype.element_ty), mask=mask)
