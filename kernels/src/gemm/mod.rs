//! f32 GEMM, `C = A·B` or `C += A·B`, BLIS-style.
//!
//! CONTRACT (placeholder until the blocked implementation lands; the public API below is fixed):
//! - [`MatRef`]/[`MatMut`]: strided views, so `Wᵀ` of a row-major `[n, k]` weight is a view too;
//! - [`GemmParams`] `{ mc, kc, nc, micro_kernel, threads }`, YAML-serializable, validated;
//! - [`gemm`] (fast, tunable) and [`gemm_reference`] (the oracle).

use crate::error::{KernelError, ParamError};
use crate::isa::Isa;
use serde::{Deserialize, Serialize};

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    /// Backing storage; must cover every addressed element.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows, in elements.
    pub row_stride: usize,
    /// Distance between consecutive columns, in elements.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a contiguous row-major `rows × cols` matrix, as a `cols × rows` view.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows: cols, cols: rows, row_stride: 1, col_stride: cols }
    }

    /// Element `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Checks that the backing slice covers every element, naming `what` on failure.
    pub fn check(&self, kernel: &'static str, what: &str) -> Result<(), KernelError> {
        check_extent(
            kernel,
            what,
            self.data.len(),
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }
}

/// A mutable strided matrix view; see [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Backing storage; must cover every addressed element.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows, in elements.
    pub row_stride: usize,
    /// Distance between consecutive columns, in elements.
    pub col_stride: usize,
}

impl<'a> MatMut<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// Checks that the backing slice covers every element, naming `what` on failure.
    pub fn check(&self, kernel: &'static str, what: &str) -> Result<(), KernelError> {
        check_extent(
            kernel,
            what,
            self.data.len(),
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }
}

fn check_extent(
    kernel: &'static str,
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<(), KernelError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (rows - 1) * row_stride + (cols - 1) * col_stride;
    if last >= len {
        return Err(KernelError::shape(
            kernel,
            format!(
                "{what} is {rows}×{cols} with strides ({row_stride}, {col_stride}) but its buffer holds {len} elements"
            ),
        ));
    }
    Ok(())
}

/// The register micro-kernel: ISA and register tile MR×NR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicroKernel {
    /// Portable 4×4.
    Scalar4x4,
    /// Portable 8×8.
    Scalar8x8,
}

impl MicroKernel {
    /// Every micro-kernel compiled into this build.
    pub const ALL: &'static [MicroKernel] = &[MicroKernel::Scalar4x4, MicroKernel::Scalar8x8];

    /// The ISA the micro-kernel needs.
    pub fn isa(self) -> Isa {
        Isa::Scalar
    }

    /// Register tile rows (MR).
    pub fn mr(self) -> usize {
        match self {
            MicroKernel::Scalar4x4 => 4,
            MicroKernel::Scalar8x8 => 8,
        }
    }

    /// Register tile columns (NR).
    pub fn nr(self) -> usize {
        match self {
            MicroKernel::Scalar4x4 => 4,
            MicroKernel::Scalar8x8 => 8,
        }
    }

    /// The micro-kernels usable on this machine (respecting `DYNO_MAX_ISA`).
    pub fn available() -> Vec<MicroKernel> {
        Self::ALL.iter().copied().filter(|m| m.isa().is_available()).collect()
    }

    /// The best default for the detected ISA.
    pub fn default_for(isa: Isa) -> MicroKernel {
        let _ = isa;
        MicroKernel::Scalar8x8
    }
}

/// Blocking parameters of the BLIS loop nest: NC → KC → MC → (NR, MR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmParams {
    /// Rows of A packed per block (sized for L2).
    pub mc: usize,
    /// Depth of a packed block (sized so a KC×NR sliver of B stays in L1).
    pub kc: usize,
    /// Columns of B packed per block (sized for L3).
    pub nc: usize,
    /// The register micro-kernel.
    pub micro_kernel: MicroKernel,
    /// Worker threads.
    pub threads: usize,
}

impl Default for GemmParams {
    fn default() -> Self {
        Self {
            mc: 96,
            kc: 256,
            nc: 4096,
            micro_kernel: MicroKernel::default_for(Isa::detect()),
            threads: crate::threads::available(),
        }
    }
}

impl GemmParams {
    /// Checks every field; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), ParamError> {
        for (field, v) in
            [("mc", self.mc), ("kc", self.kc), ("nc", self.nc), ("threads", self.threads)]
        {
            if v == 0 {
                return Err(ParamError::new("gemm", field, v, "must be at least 1"));
            }
        }
        if !self.micro_kernel.isa().is_available() {
            return Err(ParamError::new(
                "gemm",
                "micro_kernel",
                format!("{:?}", self.micro_kernel),
                format!(
                    "needs {} but this machine offers at most {}",
                    self.micro_kernel.isa(),
                    Isa::detect()
                ),
            ));
        }
        Ok(())
    }
}

/// The oracle: a plain triple loop in f64 accumulation. `C = A·B`, or `C += A·B` with `accumulate`.
pub fn gemm_reference(
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) -> Result<(), KernelError> {
    check_shapes(&a, &b, &c)?;
    let c = c;
    for i in 0..a.rows {
        for j in 0..b.cols {
            let mut acc = 0.0f64;
            for p in 0..a.cols {
                acc += a.at(i, p) as f64 * b.at(p, j) as f64;
            }
            let idx = i * c.row_stride + j * c.col_stride;
            c.data[idx] = if accumulate { c.data[idx] + acc as f32 } else { acc as f32 };
        }
    }
    Ok(())
}

/// The fast path: `C = A·B`, or `C += A·B` with `accumulate`, blocked by `params`.
pub fn gemm(
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
    params: &GemmParams,
) -> Result<(), KernelError> {
    params.validate()?;
    gemm_reference(a, b, c, accumulate)
}

/// Convenience for contiguous row-major operands: `a` is m×k, `b` is k×n, `c` is m×n.
#[allow(clippy::too_many_arguments)]
pub fn gemm_row_major(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
    params: &GemmParams,
) -> Result<(), KernelError> {
    gemm(
        MatRef::row_major(a, m, k),
        MatRef::row_major(b, k, n),
        MatMut::row_major(c, m, n),
        accumulate,
        params,
    )
}

fn check_shapes(a: &MatRef, b: &MatRef, c: &MatMut) -> Result<(), KernelError> {
    if a.cols != b.rows || c.rows != a.rows || c.cols != b.cols {
        return Err(KernelError::shape(
            "gemm",
            format!(
                "A is {}×{}, B is {}×{}, C is {}×{}",
                a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
            ),
        ));
    }
    a.check("gemm", "A")?;
    b.check("gemm", "B")?;
    c.check("gemm", "C")
}
