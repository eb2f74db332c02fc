//! f32 GEMM, `C = A·B` or `C += A·B`, BLIS-style.
//!
//! Layout of this module (readable like BLIS):
//! - `driver`: the NC → KC → MC → JR → IR loop nest and the thread grid;
//! - `pack`: packing of A into MR-row panels and B into NR-column panels, zero-padded;
//! - `microkernel`: the MR×NR register kernels (scalar, AVX2+FMA, AVX-512F), chosen at run time.
//!
//! Public API:
//! - [`MatRef`]/[`MatMut`]: strided views, so `Wᵀ` of a row-major `[n, k]` weight is a view too;
//! - [`GemmParams`] `{ mc, kc, nc, micro_kernel, threads }`, YAML-serializable, validated;
//! - [`gemm`] (fast, tunable) and [`gemm_reference`] (the oracle).

mod driver;
mod microkernel;
mod pack;
#[cfg(test)]
mod tests;

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
///
/// Serialized as `<isa>_<mr>x<nr>`, for example `avx2_6x16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MicroKernel {
    /// Portable 4×4.
    #[serde(rename = "scalar_4x4")]
    Scalar4x4,
    /// Portable 8×8.
    #[serde(rename = "scalar_8x8")]
    Scalar8x8,
    /// AVX2+FMA 6×16: 12 ymm accumulators (the BLIS Haswell/Zen shape).
    #[serde(rename = "avx2_6x16")]
    Avx2_6x16,
    /// AVX2+FMA 8×8: 8 ymm accumulators, one B vector per step; square tiles for small n.
    #[serde(rename = "avx2_8x8")]
    Avx2_8x8,
    /// AVX-512F 14×32: 28 zmm accumulators (the BLIS Skylake-X shape).
    #[serde(rename = "avx512_14x32")]
    Avx512_14x32,
    /// AVX-512F 6×64: 24 zmm accumulators, for short-and-wide products.
    #[serde(rename = "avx512_6x64")]
    Avx512_6x64,
}

impl MicroKernel {
    /// Every micro-kernel compiled into this build.
    pub const ALL: &'static [MicroKernel] = &[
        MicroKernel::Scalar4x4,
        MicroKernel::Scalar8x8,
        MicroKernel::Avx2_6x16,
        MicroKernel::Avx2_8x8,
        MicroKernel::Avx512_14x32,
        MicroKernel::Avx512_6x64,
    ];

    /// The ISA the micro-kernel needs.
    pub fn isa(self) -> Isa {
        match self {
            MicroKernel::Scalar4x4 | MicroKernel::Scalar8x8 => Isa::Scalar,
            MicroKernel::Avx2_6x16 | MicroKernel::Avx2_8x8 => Isa::Avx2,
            MicroKernel::Avx512_14x32 | MicroKernel::Avx512_6x64 => Isa::Avx512,
        }
    }

    /// Register tile rows (MR).
    pub fn mr(self) -> usize {
        match self {
            MicroKernel::Scalar4x4 => 4,
            MicroKernel::Scalar8x8 => 8,
            MicroKernel::Avx2_6x16 => 6,
            MicroKernel::Avx2_8x8 => 8,
            MicroKernel::Avx512_14x32 => 14,
            MicroKernel::Avx512_6x64 => 6,
        }
    }

    /// Register tile columns (NR).
    pub fn nr(self) -> usize {
        match self {
            MicroKernel::Scalar4x4 => 4,
            MicroKernel::Scalar8x8 => 8,
            MicroKernel::Avx2_6x16 => 16,
            MicroKernel::Avx2_8x8 => 8,
            MicroKernel::Avx512_14x32 => 32,
            MicroKernel::Avx512_6x64 => 64,
        }
    }

    /// The name used in YAML, e.g. `avx2_6x16`.
    pub fn name(self) -> &'static str {
        match self {
            MicroKernel::Scalar4x4 => "scalar_4x4",
            MicroKernel::Scalar8x8 => "scalar_8x8",
            MicroKernel::Avx2_6x16 => "avx2_6x16",
            MicroKernel::Avx2_8x8 => "avx2_8x8",
            MicroKernel::Avx512_14x32 => "avx512_14x32",
            MicroKernel::Avx512_6x64 => "avx512_6x64",
        }
    }

    /// The micro-kernels usable on this machine (respecting `DYNO_MAX_ISA`).
    pub fn available() -> Vec<MicroKernel> {
        Self::ALL.iter().copied().filter(|m| m.isa().is_available()).collect()
    }

    /// The best default for the detected ISA.
    pub fn default_for(isa: Isa) -> MicroKernel {
        match isa {
            Isa::Scalar => MicroKernel::Scalar8x8,
            Isa::Avx2 => MicroKernel::Avx2_6x16,
            Isa::Avx512 => MicroKernel::Avx512_14x32,
        }
    }

    /// The entry point. Callers must have checked `self.isa().is_available()`.
    fn function(self) -> microkernel::UkrFn {
        use microkernel::scalar;
        match self {
            MicroKernel::Scalar4x4 => scalar::kernel::<4, 4>,
            MicroKernel::Scalar8x8 => scalar::kernel::<8, 8>,
            #[cfg(target_arch = "x86_64")]
            MicroKernel::Avx2_6x16 => microkernel::avx2::kernel::<6, 2>,
            #[cfg(target_arch = "x86_64")]
            MicroKernel::Avx2_8x8 => microkernel::avx2::kernel::<8, 1>,
            #[cfg(target_arch = "x86_64")]
            MicroKernel::Avx512_14x32 => microkernel::avx512::kernel::<14, 2>,
            #[cfg(target_arch = "x86_64")]
            MicroKernel::Avx512_6x64 => microkernel::avx512::kernel::<6, 4>,
            // Never available off x86-64 (`validate` rejects them); keep the same tile anyway.
            #[cfg(not(target_arch = "x86_64"))]
            MicroKernel::Avx2_6x16 => scalar::kernel::<6, 16>,
            #[cfg(not(target_arch = "x86_64"))]
            MicroKernel::Avx2_8x8 => scalar::kernel::<8, 8>,
            #[cfg(not(target_arch = "x86_64"))]
            MicroKernel::Avx512_14x32 => scalar::kernel::<14, 32>,
            #[cfg(not(target_arch = "x86_64"))]
            MicroKernel::Avx512_6x64 => scalar::kernel::<6, 64>,
        }
    }
}

impl std::fmt::Display for MicroKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
    /// [`GemmParams::default_for`] the detected ISA, on every available hardware thread.
    fn default() -> Self {
        Self::default_for(Isa::detect())
    }
}

impl GemmParams {
    /// Untuned but well-performing parameters for `isa`, on every available hardware thread.
    ///
    /// Sized for a typical core (L1d 32–48 KiB, L2 ≥ 512 KiB, a shared L3): a KC×NR sliver of B
    /// fills about half of L1 (256·16·4 = 16 KiB for AVX2), an MC×KC block of A stays well
    /// inside L2 (96·256·4 = 96 KiB), a KC×NC block of B is a few MiB of L3. Measured on Zen 3
    /// (AVX2): MC 72–144 and KC 256–512 are within noise of each other; 96/256 was best.
    pub fn default_for(isa: Isa) -> Self {
        let micro_kernel = MicroKernel::default_for(isa);
        let (mc, kc, nc) = match micro_kernel.isa() {
            Isa::Scalar => (128, 256, 4096),
            Isa::Avx2 => (96, 256, 4080),
            Isa::Avx512 => (168, 256, 4096),
        };
        Self { mc, kc, nc, micro_kernel, threads: crate::threads::available() }
    }

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
                self.micro_kernel.name(),
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
///
/// Any `m, n, k` (a zero dimension is a no-op, except that `k = 0` without `accumulate` zeroes
/// C) and any strides for A and B. C's strides must map distinct elements to distinct addresses
/// (row- or column-major with any padding), otherwise the result would depend on the order of
/// writes; such a C is a [`KernelError::Shape`]. Without `accumulate` C is never read, so it may
/// hold NaN. MC and NC are rounded up to multiples of MR and NR.
pub fn gemm(
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
    params: &GemmParams,
) -> Result<(), KernelError> {
    params.validate()?;
    check_shapes(&a, &b, &c)?;
    check_no_overlap(&c)?;
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.row_stride + j * c.col_stride] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let plan = driver::Plan::new(params.mc, params.kc, params.nc, params.micro_kernel);
    let c = driver::CPtr { ptr: c.data.as_mut_ptr(), rs: c.row_stride, cs: c.col_stride };
    driver::run(a, b, c, accumulate, &plan, params.threads);
    Ok(())
}

/// Rejects a C whose strides alias elements (workers write C concurrently).
fn check_no_overlap(c: &MatMut) -> Result<(), KernelError> {
    let (r, co, rs, cs) = (c.rows, c.cols, c.row_stride, c.col_stride);
    let ok = r == 0
        || co == 0
        || (r == 1 && (co == 1 || cs >= 1))
        || (co == 1 && rs >= 1)
        || (cs >= 1 && rs >= co * cs)
        || (rs >= 1 && cs >= r * rs);
    if ok {
        Ok(())
    } else {
        Err(KernelError::shape(
            "gemm",
            format!("C is {r}×{co} with strides ({rs}, {cs}), which make elements overlap"),
        ))
    }
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
