//! `dyno kernels bench`: our kernels against baselines and the machine's limits.
