//! E-divisive means (Matteson & James, 2014) as Hunter/Apache Otava use it to propose change
//! points.
//!
//! Written here because no maintained Rust crate implements E-divisive (the `changepoint`
//! crate does Bayesian online detection, not the energy statistic). Kept deliberately simple:
//! one split costs O(n²) over its window with running sums (no permutation test: significance is
//! decided afterwards by a t-test, as Hunter does).

/// The split τ of `x` (left = `x[..τ]`, right = `x[τ..]`, both at least `min_size` long) that
/// maximises the E-divisive means energy statistic with distance exponent α = 1:
///
/// ```text
/// Q(τ) = m·k/(m+k) · [ 2/(m·k) Σ|xᵢ − yⱼ| − 1/C(m,2) Σ|xᵢ − xₗ| − 1/C(k,2) Σ|yⱼ − yₗ| ]
/// ```
///
/// with m = τ and k = n − τ. Returns `(τ, Q(τ))`, or `None` when `x` is too short to split.
pub fn best_split(x: &[f64], min_size: usize) -> Option<(usize, f64)> {
    let min_size = min_size.max(2);
    let n = x.len();
    if n < 2 * min_size {
        return None;
    }
    // Running pair sums as τ moves right: point τ leaves the right part and joins the left.
    let mut within_left = 0.0;
    let mut within_right = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            within_right += (x[i] - x[j]).abs();
        }
    }
    let mut between = 0.0;
    let mut best: Option<(usize, f64)> = None;
    for tau in 0..=n - min_size {
        if tau >= min_size {
            let (m, k) = (tau as f64, (n - tau) as f64);
            let e = 2.0 * between / (m * k)
                - 2.0 * within_left / (m * (m - 1.0))
                - 2.0 * within_right / (k * (k - 1.0));
            let q = m * k / (m + k) * e;
            if best.is_none_or(|(_, b)| q > b) {
                best = Some((tau, q));
            }
        }
        // Move x[tau] from the right part to the left part.
        let to_left: f64 = x[..tau].iter().map(|v| (v - x[tau]).abs()).sum();
        let to_right: f64 = x[tau + 1..].iter().map(|v| (v - x[tau]).abs()).sum();
        within_left += to_left;
        within_right -= to_right;
        between += to_right - to_left;
    }
    best
}

/// Candidate change points of `x` by recursive bisection at [`best_split`]: a window is split at
/// its best τ when `accept(left, right)` holds for the two parts, and the parts are split in
/// turn, until no part can be split or accepted. Returns the indices (the first point of each
/// new segment) in increasing order. The caller prunes them again against their final
/// neighbours.
pub fn candidates(
    x: &[f64],
    min_size: usize,
    accept: impl Fn(&[f64], &[f64]) -> bool,
) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack = vec![(0usize, x.len())];
    while let Some((lo, hi)) = stack.pop() {
        if let Some((tau, _)) = best_split(&x[lo..hi], min_size) {
            let c = lo + tau;
            if !accept(&x[lo..c], &x[c..hi]) {
                continue;
            }
            out.push(c);
            stack.push((lo, c));
            stack.push((c, hi));
        }
    }
    out.sort_unstable();
    out
}
