//! The Pareto frontier of tuning trials: throughput up, tail latencies down. The tuner picks
//! from it and the dashboard draws it, so both use this one definition.

/// Indices of the points no other point dominates, in input order. Each point is
/// `(throughput, ttft, tpot)`: more throughput is better, less latency is better. A point
/// dominates another when it is at least as good in all three and better in one.
pub fn pareto_front(points: &[(f64, f64, f64)]) -> Vec<usize> {
    let dominates = |a: &(f64, f64, f64), b: &(f64, f64, f64)| {
        a.0 >= b.0 && a.1 <= b.1 && a.2 <= b.2 && (a.0 > b.0 || a.1 < b.1 || a.2 < b.2)
    };
    (0..points.len()).filter(|&i| !points.iter().any(|q| dominates(q, &points[i]))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominated_points_leave_the_frontier() {
        let pts = [(10.0, 5.0, 5.0), (12.0, 4.0, 5.0), (15.0, 9.0, 9.0), (12.0, 4.0, 5.0)];
        // The first is dominated by the second; equal points do not dominate each other.
        assert_eq!(pareto_front(&pts), [1, 2, 3]);
        assert!(pareto_front(&[]).is_empty());
    }
}
