"""Masked 2-D tile load/store helpers for the HLA kernels (plain pointer arithmetic).

Plain pointers rather than tl.make_block_ptr: block pointers are gone from Triton 3.9 (the
version on the CPU test machine) and tensor descriptors are not in 3.6 (the GPU machine).
A tile is rows [r0, r0 + BR) and columns [c0, c0 + BC) of a row-major matrix with `n_rows`
rows, `n_cols` columns and row stride `stride` (elements); out-of-range elements read as 0
and are not written.

`load_vx` reads value rows with the normaliser's column of ones appended (column DV, made here,
never in memory); `load_state_cols` / `store_state_cols` read and write a state part X [rows, DV]
with a normaliser vector n [rows] as its column DV, both in the contract layout (docs/OP_CONTRACT.md:
X row-major at offset OFF_X of the per-head state vector, n at OFF_N).
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


@triton.jit
def load_vx(base, r0, c0, n_rows, DV: tl.constexpr, stride, NORM: tl.constexpr,
            BR: tl.constexpr, BC: tl.constexpr):
    """Tile of vx = [v, 1] (the column of ones at DV when NORM) from v [n_rows, DV] (row stride `stride`)."""
    r = r0 + tl.arange(0, BR)
    c = c0 + tl.arange(0, BC)
    rows = r[:, None] < n_rows
    x = tl.load(base + r[:, None] * stride + c[None, :], mask=rows & (c[None, :] < DV), other=0.0)
    if NORM:
        x = tl.where(rows & (c[None, :] == DV), tl.full([BR, BC], 1.0, x.dtype), x)
    return x


@triton.jit
def _state_offsets(r, c, DV: tl.constexpr, OFF_X: tl.constexpr, OFF_N: tl.constexpr, NORM: tl.constexpr):
    """Element offsets (in the per-head state vector) of rows r x columns c of X | n."""
    off = OFF_X + r[:, None] * DV + c[None, :]
    if NORM:
        off = tl.where(c[None, :] == DV, OFF_N + r[:, None] + 0 * c[None, :], off)
    return off


@triton.jit
def load_state_cols(base, r0, c0, n_rows, DV: tl.constexpr, OFF_X: tl.constexpr, OFF_N: tl.constexpr,
                    NORM: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """Tile rows [r0, +BR) x columns [c0, +BC) of X | n (X [n_rows, DV] at OFF_X, n [n_rows] at
    OFF_N as column DV when NORM) from the contract-layout state vector at `base`; float32."""
    r = r0 + tl.arange(0, BR)
    c = c0 + tl.arange(0, BC)
    mask = (r[:, None] < n_rows) & (c[None, :] < DV + NORM)
    return tl.load(base + _state_offsets(r, c, DV, OFF_X, OFF_N, NORM), mask=mask, other=0.0)


@triton.jit
def store_state_cols(base, x, r0, c0, n_rows, DV: tl.constexpr, OFF_X: tl.constexpr, OFF_N: tl.constexpr,
                     NORM: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    """Inverse of load_state_cols: write the tile x into X | n of the state vector at `base`."""
    r = r0 + tl.arange(0, BR)
    c = c0 + tl.arange(0, BC)
    mask = (r[:, None] < n_rows) & (c[None, :] < DV + NORM)
    tl.store(base + _state_offsets(r, c, DV, OFF_X, OFF_N, NORM), x, mask=mask)
