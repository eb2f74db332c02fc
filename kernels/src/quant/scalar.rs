//! Portable kernels: decode a weight row to `i8`, then plain dot products.

use super::{Acts, BLOCK, QView};

/// Decodes one weight row's quants into `buf` as `i8` (`[-127, 127]` or `[-7, 7]`).
fn decode_row(view: QView, wrow: &[u8], buf: &mut Vec<i8>) {
    buf.clear();
    if view.q4 {
        for chunk in wrow.chunks_exact(BLOCK / 2) {
            buf.extend(chunk.iter().map(|&b| (b & 0x0F) as i8 - 8));
            buf.extend(chunk.iter().map(|&b| (b >> 4) as i8 - 8));
        }
    } else {
        buf.extend(wrow.iter().map(|&b| b as i8));
    }
}

/// `dst[i] = dot(weight row, activation row r0 + i)` for every `i`.
pub(super) fn row(
    view: QView,
    wrow: &[u8],
    wscale: &[f32],
    acts: &Acts,
    r0: usize,
    buf: &mut Vec<i8>,
    dst: &mut [f32],
) {
    decode_row(view, wrow, buf);
    let shift = view.group_shift();
    for (i, d) in dst.iter_mut().enumerate() {
        let r = r0 + i;
        *d = match acts {
            Acts::F32(x) => {
                let xr = &x[r * view.cols..(r + 1) * view.cols];
                let mut acc = 0.0f32;
                for (c, (wb, xb)) in buf.chunks_exact(BLOCK).zip(xr.chunks_exact(BLOCK)).enumerate()
                {
                    let s: f32 = wb.iter().zip(xb).map(|(&w, &x)| f32::from(w) * x).sum();
                    acc += s * wscale[c >> shift];
                }
                acc
            }
            Acts::Int8(qa) => {
                let (xq, xs) = (qa.row(r), qa.row_scales(r));
                let mut acc = 0.0f32;
                for (c, (wb, xb)) in buf.chunks_exact(BLOCK).zip(xq.chunks_exact(BLOCK)).enumerate()
                {
                    let s: i32 =
                        wb.iter().zip(xb).map(|(&w, &x)| i32::from(w) * i32::from(x)).sum();
                    acc += s as f32 * (wscale[c >> shift] * xs[c]);
                }
                acc
            }
        };
    }
}
