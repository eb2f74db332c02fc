//! `dyno profile` end to end: `--hw cpu --quick` writes a calibrated profile that reads back;
//! a GPU target exits 2 saying why it cannot be measured here.

use std::process::Command;

use dyno_tuner::hardware::HardwareProfile;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn quick_cpu_profile_writes_a_calibrated_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("sub").join("cpu.yaml");
    let run = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .env("DYNO_KERNEL_CACHE", dir.path().join("cache").join("kernels.jsonl"))
        .args(["profile", "--hw", "cpu", "--quick", "--out"])
        .arg(&out)
        .output()
        .expect("run");
    let (stdout, stderr) = (text(&run.stdout), text(&run.stderr));
    assert!(run.status.success(), "{stderr}");
    assert!(stdout.contains("wrote ") && stdout.contains("bandwidth"), "{stdout}");
    assert!(stderr.contains("measured ms") && stderr.contains("decode b"), "{stderr}");
    let p = HardwareProfile::from_yaml_file(&out).expect("profile reads back");
    assert!(p.calibration.calibrated, "{}", p.to_yaml());
    assert_eq!(p.name, "cpu");
    assert!(p.calibration.source.contains("dyno profile --hw cpu"));
}

#[test]
fn gpu_profiles_exit_2_naming_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .env("DYNO_KERNEL_CACHE", dir.path().join("kernels.jsonl"))
        .args(["profile", "--hw", "h100"])
        .output()
        .expect("run");
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--hw h100") && stderr.contains("CUDA backend"), "{stderr}");
    assert!(!dir.path().join("hardware").exists());
}
