use std::fmt;
use std::str::FromStr;

/// An instruction set a kernel implementation is written for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust, no explicit SIMD. Always available.
    Scalar,
    /// x86_64 AVX2 with FMA3.
    Avx2,
    /// x86_64 AVX-512 Foundation.
    Avx512,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// Every ISA this build knows of, in order of preference (best first).
    pub const PREFERENCE: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar];

    /// The lower-case name used by `OMEN_ISA` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Whether this ISA is compiled into this build and supported by the running CPU.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => Feature::Avx2.is_available() && Feature::Fma.is_available(),
            Isa::Avx512 => Feature::Avx512F.is_available(),
            Isa::Neon => Feature::Neon.is_available(),
        }
    }

    /// The ISA chosen for this process: `OMEN_ISA` if set and available, otherwise
    /// the best the CPU supports (see [`Kernels::best`](crate::Kernels::best), which
    /// makes the choice once). Code with its own SIMD paths (IVF-PQ's fast scan)
    /// follows it, so that `OMEN_ISA=scalar` forces every portable path at once.
    pub fn selected() -> Isa {
        crate::Kernels::best().isa()
    }

    /// Every ISA available here, best first.
    pub fn available() -> Vec<Isa> {
        Self::PREFERENCE
            .iter()
            .copied()
            .filter(|i| i.is_available())
            .collect()
    }

    /// The number of f32 lanes in one vector register of this ISA (1 for scalar).
    pub fn lanes(self) -> usize {
        match self {
            Isa::Scalar => 1,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
            Isa::Neon => 4,
        }
    }
}

/// A CPU feature that SIMD code (the kernels here, or another crate's
/// `#[target_feature]` functions) may need beyond its [`Isa`]: the one place the
/// running CPU is asked.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// x86_64 AVX2.
    Avx2,
    /// x86_64 FMA3.
    Fma,
    /// x86_64 AVX-512 Foundation.
    Avx512F,
    /// x86_64 AVX-512 Byte and Word instructions.
    Avx512Bw,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Feature {
    /// Whether this build's target has the feature and the running CPU supports it.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Feature::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Feature::Fma => std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Feature::Avx512F => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Feature::Avx512Bw => std::arch::is_x86_feature_detected!("avx512bw"),
            #[cfg(target_arch = "aarch64")]
            Feature::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an ISA could not be selected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IsaError {
    /// The name is not one of `scalar`, `avx2`, `avx512`, `neon`.
    Unknown(String),
    /// The ISA is known but this CPU (or this build's target) does not support it.
    Unavailable(Isa),
}

// omen-simd keeps zero dependencies, so the error impls are written out by hand.
impl std::error::Error for IsaError {}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(s) => write!(
                f,
                "unknown ISA {s:?}: expected one of scalar, avx2, avx512, neon"
            ),
            IsaError::Unavailable(isa) => {
                write!(f, "ISA {isa} is not supported by this CPU or build")
            }
        }
    }
}

impl FromStr for Isa {
    type Err = IsaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx512f" => Ok(Isa::Avx512),
            "neon" => Ok(Isa::Neon),
            other => Err(IsaError::Unknown(other.to_string())),
        }
    }
}
