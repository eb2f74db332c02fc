//! Run-time instruction-set detection, with a cap for testing narrower paths.
//!
//! `DYNO_MAX_ISA=scalar|avx2|avx512` caps what [`Isa::detect`] reports, so CI can run every
//! kernel test once per path on a machine with a wider ISA. An unknown value is an error, not
//! silently ignored.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::OnceLock;

/// The environment variable that caps the detected ISA.
pub const MAX_ISA_ENV: &str = "DYNO_MAX_ISA";

/// A family of SIMD instructions a kernel path is written for, ordered narrow to wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// Portable Rust; the compiler may still auto-vectorize with the baseline target features.
    Scalar,
    /// AVX2 + FMA (Haswell, Zen and later).
    Avx2,
    /// AVX-512 F (Skylake-SP, Ice Lake, Sapphire Rapids, Zen 4 and later).
    Avx512,
}

impl Isa {
    /// All ISAs, narrow to wide.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The lowercase name used in YAML, `DYNO_MAX_ISA` and reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses a name as written in `DYNO_MAX_ISA`.
    pub fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" | "avx512f" => Some(Isa::Avx512),
            _ => None,
        }
    }

    /// The widest ISA this CPU supports, ignoring the cap.
    pub fn hardware() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// The widest ISA kernels may use: the hardware's, capped by `DYNO_MAX_ISA`.
    ///
    /// Read once per process. Panics with a clear message if `DYNO_MAX_ISA` names no ISA, since
    /// a typo there would otherwise silently test the wrong path.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let hw = Isa::hardware();
            match std::env::var(MAX_ISA_ENV) {
                Ok(v) if !v.trim().is_empty() => match Isa::parse(&v) {
                    Some(cap) => hw.min(cap),
                    None => panic!(
                        "{MAX_ISA_ENV}={v:?} is not an ISA name (expected scalar, avx2 or avx512)"
                    ),
                },
                _ => hw,
            }
        })
    }

    /// Whether kernels written for `self` may run here (the CPU has it and the cap allows it).
    pub fn is_available(self) -> bool {
        self <= Isa::detect()
    }

    /// The ISAs usable here, narrow to wide.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Optional integer dot-product extensions that quantized kernels may use when present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IntDotFeatures {
    /// AVX-512 VNNI (`vpdpbusd` on 512-bit registers).
    pub avx512_vnni: bool,
    /// AVX-VNNI (`vpdpbusd` on 256-bit registers, Alder Lake / Zen 5).
    pub avx_vnni: bool,
}

impl IntDotFeatures {
    /// Detects the extensions, respecting the `DYNO_MAX_ISA` cap.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let isa = Isa::detect();
            Self {
                avx512_vnni: isa >= Isa::Avx512
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx512bw"),
                avx_vnni: isa >= Isa::Avx2 && std::arch::is_x86_feature_detected!("avxvnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert_eq!(Isa::parse("sse9"), None);
    }

    #[test]
    fn detected_is_available_and_scalar_always_is() {
        assert!(Isa::detect().is_available());
        assert!(Isa::Scalar.is_available());
        assert!(Isa::detect() <= Isa::hardware());
    }
}
