//! Small descriptive statistics and the two hypothesis tests detection and `dyno compare` use.
//!
//! The distributions (Student's t, the standard normal) come from `statrs`; only the sums and
//! ranks around them are written here.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Arithmetic mean; `None` for an empty slice.
pub fn mean(x: &[f64]) -> Option<f64> {
    if x.is_empty() {
        return None;
    }
    Some(x.iter().sum::<f64>() / x.len() as f64)
}

/// Sample variance (n − 1 denominator); `None` below two values.
pub fn variance(x: &[f64]) -> Option<f64> {
    if x.len() < 2 {
        return None;
    }
    let m = mean(x)?;
    Some(x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64)
}

/// Median (mean of the two middle values for an even count); `None` for an empty slice.
pub fn median(x: &[f64]) -> Option<f64> {
    if x.is_empty() {
        return None;
    }
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { 0.5 * (s[n / 2 - 1] + s[n / 2]) })
}

/// Scale factor that makes the median absolute deviation estimate σ for normal data.
pub const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

/// Median absolute deviation from the median, scaled by [`MAD_TO_SIGMA`] so that it estimates
/// the standard deviation of normal data; `None` for an empty slice.
pub fn mad(x: &[f64]) -> Option<f64> {
    let med = median(x)?;
    let dev: Vec<f64> = x.iter().map(|v| (v - med).abs()).collect();
    Some(median(&dev)? * MAD_TO_SIGMA)
}

/// Two-sided quantile t_{1−α/2, df} of Student's t distribution; `None` for df ≤ 0 or α
/// outside (0, 1).
pub fn t_quantile(alpha: f64, df: f64) -> Option<f64> {
    if df.is_nan() || df <= 0.0 || !(alpha > 0.0 && alpha < 1.0) {
        return None;
    }
    let t = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(t.inverse_cdf(1.0 - alpha / 2.0))
}

/// The outcome of a two-sample t-test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TTest {
    /// The t statistic, positive when the second sample's mean is larger.
    pub t: f64,
    /// Degrees of freedom (n₁ + n₂ − 2 for Student, Welch–Satterthwaite for Welch).
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Two-sample t-test of `a` against `b`: Student's (pooled variance) when `welch` is false,
/// Welch's (unequal variances) otherwise. `None` when either sample has fewer than two values
/// for Welch, or the pooled test has no degree of freedom. Identical constant samples give
/// p = 1; different constant samples give p = 0.
pub fn t_test(a: &[f64], b: &[f64], welch: bool) -> Option<TTest> {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (m1, m2) = (mean(a)?, mean(b)?);
    let diff = m2 - m1;
    let (se, df) = if welch {
        let (v1, v2) = (variance(a)? / n1, variance(b)? / n2);
        let se2 = v1 + v2;
        let df = if se2 > 0.0 {
            se2 * se2 / (v1 * v1 / (n1 - 1.0) + v2 * v2 / (n2 - 1.0))
        } else {
            n1 + n2 - 2.0
        };
        (se2.sqrt(), df)
    } else {
        let df = n1 + n2 - 2.0;
        if df < 1.0 {
            return None;
        }
        let ss = |x: &[f64], m: f64| x.iter().map(|v| (v - m) * (v - m)).sum::<f64>();
        let pooled = (ss(a, m1) + ss(b, m2)) / df;
        ((pooled * (1.0 / n1 + 1.0 / n2)).sqrt(), df)
    };
    if se == 0.0 || !se.is_finite() {
        let t = if diff == 0.0 { 0.0 } else { diff.signum() * f64::INFINITY };
        let p_value = if diff == 0.0 { 1.0 } else { 0.0 };
        return Some(TTest { t, df, p_value });
    }
    let t = diff / se;
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let p_value = (2.0 * dist.sf(t.abs())).min(1.0);
    Some(TTest { t, df, p_value })
}

/// Mann–Whitney U test of `a` against `b`: returns `(U, p)` where U is the statistic of `a`
/// (the number of pairs with a > b, ties counting one half) and p the two-sided p-value from
/// the normal approximation with tie correction and continuity correction (the same as SciPy's
/// `mannwhitneyu(a, b, method="asymptotic", use_continuity=True)`). `None` when either sample is
/// empty. All values tied gives p = 1.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() || a.iter().chain(b).any(|v| v.is_nan()) {
        return None;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let n = n1 + n2;
    // Rank the pooled sample, ties getting the mean of their ranks.
    let mut pooled: Vec<(f64, bool)> =
        a.iter().map(|&v| (v, true)).chain(b.iter().map(|&v| (v, false))).collect();
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0; // Σ (t³ − t) over tie groups
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i;
        while j + 1 < pooled.len() && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let count = (j - i + 1) as f64;
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_a += rank * pooled[i..=j].iter().filter(|p| p.1).count() as f64;
        tie_term += count * count * count - count;
        i = j + 1;
    }
    let u1 = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let u2 = n1 * n2 - u1;
    let mu = n1 * n2 / 2.0;
    let sigma2 = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if sigma2 <= 0.0 || n < 2.0 {
        return Some((u1, 1.0));
    }
    let z = (u1.max(u2) - mu - 0.5) / sigma2.sqrt();
    let normal = Normal::standard();
    let p = (2.0 * normal.sf(z)).clamp(0.0, 1.0);
    Some((u1, p))
}
