//! `dyno profile --hw cpu`: measures this machine and writes its calibrated hardware profile.
//! The measuring and fitting live in `dyno_tuner::calibrate`; this parses, wires and prints.

use anyhow::{Context, Result, bail};
use clap::Args;
use dyno_tuner::calibrate::{CalibrateOptions, Calibrated, calibrate_cpu, calibrated_cpu_path};
use dyno_tuner::hardware::OpClass;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Arguments of `dyno profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The hardware to measure: `cpu` (this machine; alias `local`).
    #[arg(long, default_value = "cpu")]
    pub hw: String,
    /// Where to write the profile [default: `<kernel cache dir>/hardware/cpu-<machine>.yaml`,
    /// where `--hw cpu` looks for it].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Fewer sizes and repeats on the test-sized model: seconds, for tests (the figures are
    /// rough; the full run is what the simulator should use).
    #[arg(long)]
    pub quick: bool,
    /// The model whose shapes are timed and whose engine is stepped [default: mixtral-mini,
    /// or mixtral-tiny with --quick].
    #[arg(long)]
    pub model: Option<String>,
}

/// Runs `dyno profile`.
pub fn run_profile(args: ProfileArgs) -> Result<()> {
    let hw = args.hw.to_ascii_lowercase();
    if hw != "cpu" && hw != "local" {
        bail!(
            "--hw {}: only `cpu` (this machine) can be profiled here; GPU profiles are measured by \
             `dyno profile --hw h100` (or another GPU) on a machine with that GPU, which is not \
             available yet: it needs the CUDA backend. Until then `--hw {}` simulates from the \
             built-in datasheet profile",
            args.hw,
            args.hw
        );
    }
    let mut opts = if args.quick { CalibrateOptions::quick() } else { CalibrateOptions::full() };
    opts.progress = true;
    if let Some(m) = args.model {
        opts.model = m;
    }
    let out = args.out.unwrap_or_else(calibrated_cpu_path);
    let cal = calibrate_cpu(&opts).context("dyno profile --hw cpu")?;
    eprint!("{}", fit_table(&cal));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for --out", dir.display()))?;
    }
    let header = format!(
        "# Calibrated by `dyno profile --hw cpu{}` ({}, {:.0} s).\n# `--hw cpu` reads this file on this machine; rerun to refresh it.\n",
        if opts.quick { " --quick" } else { "" },
        opts.model,
        cal.seconds
    );
    let tmp = out.with_extension("yaml.tmp");
    std::fs::write(&tmp, format!("{header}{}", cal.profile.to_yaml()))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
    print!("{}", summary(&cal, &opts.model));
    println!("wrote {}", out.display());
    Ok(())
}

/// Engine steps: measured, predicted by the calibrated profile, error.
fn fit_table(cal: &Calibrated) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:>12} {:>13} {:>8} {:>15}",
        "engine step", "measured ms", "predicted ms", "error", "kernels-only ms"
    );
    for r in &cal.fit {
        let _ = writeln!(
            s,
            "{:<24} {:>12.2} {:>13.2} {:>7.1}% {:>15.2}",
            r.shape,
            r.measured_ms,
            r.predicted_ms,
            r.error_pct(),
            r.kernel_only_ms
        );
    }
    s
}

/// What was measured, in a few lines.
fn summary(cal: &Calibrated, model: &str) -> String {
    let p = &cal.profile;
    let c = &p.calibration;
    let mut s = String::new();
    let _ = writeln!(s, "profile {} ({})", p.name, c.source);
    let _ = writeln!(s, "  model shapes      {model}, {} threads", cal.threads);
    if let Some(cpu) = p.cpu {
        let _ = writeln!(
            s,
            "  bandwidth         {:.1} GB/s ({} threads), {:.1} GB/s one core; {} cores, {:.1} GiB",
            p.memory_bandwidth_gbs,
            cal.threads,
            cpu.bandwidth_one_core_gbs,
            cpu.cores,
            p.memory_gib
        );
    }
    let _ = writeln!(
        s,
        "  peak              {:.1} GFLOP/s f32 (bf16 same, int8 2×)",
        p.peak_tflops.f32 * 1e3
    );
    if cal.rescale > 1.0 {
        let _ = writeln!(
            s,
            "  rescale           peak and bandwidth above are the probes' × {:.2} (efficiencies ÷ {:.2}): some op beat the probes' roofline",
            cal.rescale, cal.rescale
        );
    }
    let _ = writeln!(
        s,
        "  overheads         step {:.0} µs, per sampled token {:.1} µs",
        c.step_overhead_us, c.sample_overhead_us
    );
    for class in OpClass::ALL {
        if let Some(curve) = c.efficiency.get(&class) {
            let pts: Vec<String> =
                curve.points.iter().map(|p| format!("{}:{:.2}", p.size, p.efficiency)).collect();
            let _ = writeln!(s, "  {:<17} {}", class.label(), pts.join(" "));
        }
    }
    if !cal.linear_correction.is_empty() {
        let f: Vec<String> =
            cal.linear_correction.iter().map(|(t, k)| format!("{t}:{k:.2}")).collect();
        let _ = writeln!(
            s,
            "  engine correction linear efficiency × (from rows:factor) {}",
            f.join(" ")
        );
    }
    if let Some(load) = cal.load_average.filter(|l| *l > cal.threads as f64 + 0.5) {
        let _ = writeln!(
            s,
            "  warning           load average {load:.1} on {} threads: other processes competed for the cores, so these figures are pessimistic; rerun on an idle machine",
            cal.threads
        );
    }
    let worst = cal.fit.iter().map(|r| r.error_pct().abs()).fold(0.0, f64::max);
    let mean =
        cal.fit.iter().map(|r| r.error_pct().abs()).sum::<f64>() / cal.fit.len().max(1) as f64;
    let _ = writeln!(
        s,
        "  engine-step fit   {} shapes, mean |error| {mean:.1}%, worst {worst:.1}%",
        cal.fit.len()
    );
    let _ = write!(s, "{}", fit_table(cal));
    s
}
