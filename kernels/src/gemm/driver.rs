//! The BLIS loop nest: NC → KC → MC → (JR → IR) → micro-kernel, split across threads.
//!
//! ```text
//! for jc in 0..n step NC            // B block KC×NC (packed, lives in L3)
//!   for pc in 0..k step KC
//!     pack B[pc.., jc..] into NR-column panels
//!     for ic in 0..m step MC        // A block MC×KC (packed, lives in L2)
//!       pack A[ic.., pc..] into MR-row panels
//!       for jr in 0..NC step NR     // one KC×NR sliver of B stays in L1
//!         for ir in 0..MC step MR
//!           micro-kernel: C[ic+ir.., jc+jr..] (+)= Ã[ir] · B̃[jr]
//! ```
//!
//! Threads: C is cut into a `tm × tn` grid of blocks aligned to MR/NR (columns first, so skinny
//! decode shapes such as m = 8 still use every thread); each worker runs the whole nest above on
//! its block with its own packed buffers, so workers never synchronize.

use super::microkernel::UkrFn;
use super::pack::{Block, pack};
use super::{MatRef, MicroKernel};
use rayon::prelude::*;
use std::cell::RefCell;

/// Largest MR×NR of any micro-kernel, the size of the edge-tile buffer.
const MAX_TILE: usize = 14 * 32;

/// Cache-line alignment of packed buffers, in floats.
const ALIGN: usize = 16;

/// C as a raw strided pointer, shared by workers that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct CPtr {
    /// Element `(0, 0)`.
    pub ptr: *mut f32,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

// SAFETY: workers only write disjoint elements of C (the grid blocks do not overlap and the
// caller has checked that C's strides map distinct elements to distinct addresses), and the
// `&mut` borrow of C outlives every worker (`threads::run` joins before returning).
unsafe impl Send for CPtr {}
// SAFETY: as for `Send`.
unsafe impl Sync for CPtr {}

/// Blocking parameters as the loop nest uses them: MC/NC rounded up to multiples of MR/NR.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
    pub mr: usize,
    pub nr: usize,
    pub ukr: UkrFn,
}

impl Plan {
    pub(crate) fn new(mc: usize, kc: usize, nc: usize, mk: MicroKernel) -> Self {
        let (mr, nr) = (mk.mr(), mk.nr());
        Self { mc: mc.div_ceil(mr) * mr, kc, nc: nc.div_ceil(nr) * nr, mr, nr, ukr: mk.function() }
    }
}

/// Chooses the `tm × tn` worker grid (at most `threads` workers) with the smallest per-worker
/// tile count; ties prefer splitting columns (no repacking of B) and then fewer workers.
pub(crate) fn grid(threads: usize, m_tiles: usize, n_tiles: usize) -> (usize, usize) {
    let mut best = (1, 1);
    let mut best_key = (usize::MAX, 0, usize::MAX);
    for tn in 1..=threads.min(n_tiles).max(1) {
        for tm in 1..=(threads / tn).min(m_tiles).max(1) {
            let span = m_tiles.div_ceil(tm) * n_tiles.div_ceil(tn);
            let key = (span, usize::MAX - tn, tm * tn);
            if key < best_key {
                best_key = key;
                best = (tm, tn);
            }
        }
    }
    best
}

/// Splits `0..len` into `parts` ranges aligned to `unit` (some may be empty).
fn split(len: usize, parts: usize, unit: usize) -> Vec<(usize, usize)> {
    let per = len.div_ceil(unit).div_ceil(parts) * unit;
    (0..parts).map(|t| ((t * per).min(len), ((t + 1) * per).min(len))).collect()
}

/// Runs the blocked product on `threads` workers. Shapes are already checked, `m, n, k ≥ 1`.
pub(crate) fn run(a: MatRef, b: MatRef, c: CPtr, accumulate: bool, plan: &Plan, threads: usize) {
    let (m, n) = (a.rows, b.cols);
    let (tm, tn) = grid(threads, m.div_ceil(plan.mr), n.div_ceil(plan.nr));
    let items: Vec<((usize, usize), (usize, usize))> = split(m, tm, plan.mr)
        .into_iter()
        .flat_map(|mr| split(n, tn, plan.nr).into_iter().map(move |nr| (mr, nr)))
        .filter(|((m0, m1), (n0, n1))| m1 > m0 && n1 > n0)
        .collect();
    if items.len() <= 1 {
        for (ms, ns) in items {
            worker(a, b, c, accumulate, plan, ms, ns);
        }
    } else {
        crate::threads::run(threads, || {
            items.par_iter().with_max_len(1).for_each(|&(ms, ns)| {
                worker(a, b, c, accumulate, plan, ms, ns);
            });
        });
    }
}

/// Per-thread packing buffers, kept between calls so repeated GEMMs do not reallocate.
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A 64-byte-aligned window of `len` floats inside `v`, growing `v` as needed.
fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len + ALIGN {
        v.resize(len + ALIGN, 0.0);
    }
    let off = v.as_ptr().align_offset(ALIGN * 4).min(ALIGN);
    &mut v[off..off + len]
}

/// The whole loop nest for C's block `rows m0..m1 × cols n0..n1`.
fn worker(
    a: MatRef,
    b: MatRef,
    c: CPtr,
    accumulate: bool,
    plan: &Plan,
    (m0, m1): (usize, usize),
    (n0, n1): (usize, usize),
) {
    let body = |s: &mut Scratch| {
        let k = a.cols;
        let kc = plan.kc.min(k);
        let pa = aligned(&mut s.a, plan.mc.min((m1 - m0).div_ceil(plan.mr) * plan.mr) * kc);
        let pb = aligned(&mut s.b, plan.nc.min((n1 - n0).div_ceil(plan.nr) * plan.nr) * kc);
        for jc in (n0..n1).step_by(plan.nc) {
            let nb = plan.nc.min(n1 - jc);
            for pc in (0..k).step_by(plan.kc) {
                let kb = plan.kc.min(k - pc);
                let blk = Block {
                    data: b.data,
                    offset: pc * b.row_stride + jc * b.col_stride,
                    len_x: nb,
                    len_p: kb,
                    sx: b.col_stride,
                    sp: b.row_stride,
                };
                pack(&blk, plan.nr, pb);
                for ic in (m0..m1).step_by(plan.mc) {
                    let mb = plan.mc.min(m1 - ic);
                    let blk = Block {
                        data: a.data,
                        offset: ic * a.row_stride + pc * a.col_stride,
                        len_x: mb,
                        len_p: kb,
                        sx: a.row_stride,
                        sp: a.col_stride,
                    };
                    pack(&blk, plan.mr, pa);
                    // SAFETY: `ic + mb ≤ m`, `jc + nb ≤ n`, so the block is inside C, and it
                    // lies in this worker's grid block, which no other worker touches.
                    let cb = unsafe { c.ptr.add(ic * c.rs + jc * c.cs) };
                    let c_blk = CPtr { ptr: cb, ..c };
                    macro_kernel(plan, mb, nb, kb, pa, pb, c_blk, accumulate || pc > 0);
                }
            }
        }
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => body(&mut s),
        // Re-entered on this thread (cannot happen in the nest above, but stay safe): use a
        // fresh buffer instead of panicking.
        Err(_) => body(&mut Scratch::default()),
    });
}

/// The JR/IR loops over one packed A block (`mb × kb`) and one packed B block (`kb × nb`).
#[allow(clippy::too_many_arguments)]
fn macro_kernel(
    plan: &Plan,
    mb: usize,
    nb: usize,
    kb: usize,
    pa: &[f32],
    pb: &[f32],
    c: CPtr,
    accumulate: bool,
) {
    let (mr, nr) = (plan.mr, plan.nr);
    let mut tile = [0.0f32; MAX_TILE];
    for jr in (0..nb).step_by(nr) {
        let nrr = nr.min(nb - jr);
        let bp = pb[jr * kb..].as_ptr();
        for ir in (0..mb).step_by(mr) {
            let mrr = mr.min(mb - ir);
            let ap = pa[ir * kb..].as_ptr();
            // SAFETY: `ir < mb` and `jr < nb`, so the tile origin is inside this C block.
            let cp = unsafe { c.ptr.add(ir * c.rs + jr * c.cs) };
            if mrr == mr && nrr == nr && c.cs == 1 {
                // SAFETY: `ap`/`bp` start full packed panels of `kb·mr`/`kb·nr` floats, the
                // tile is MR×NR inside C with contiguous columns and row stride `rs`, and the
                // micro-kernel's ISA was checked available by `GemmParams::validate`.
                unsafe { (plan.ukr)(kb, ap, bp, cp, c.rs, accumulate) };
            } else {
                // Edge tile (or strided C): compute the full tile into a stack buffer, then
                // write back only the valid `mrr × nrr` part.
                // SAFETY: as above, with `tile` as an MR×NR row-major destination.
                unsafe { (plan.ukr)(kb, ap, bp, tile.as_mut_ptr(), nr, false) };
                for i in 0..mrr {
                    for j in 0..nrr {
                        // SAFETY: `(ir + i, jr + j)` is inside this worker's C block.
                        unsafe {
                            let d = cp.add(i * c.rs + j * c.cs);
                            let t = tile[i * nr + j];
                            *d = if accumulate { *d + t } else { t };
                        }
                    }
                }
            }
        }
    }
}
