//! The environment a run was measured in, recorded in every report.

use std::process::Command;

/// Where and how a run was made.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Environment {
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPUs visible.
    pub logical_cpus: usize,
    /// The SIMD instruction set omen's kernels chose (`OMEN_ISA` can force it).
    pub simd_isa: String,
    /// ISAs available on this CPU.
    pub simd_available: Vec<String>,
    /// `rustc -V`.
    pub rustc: String,
    /// `git rev-parse HEAD` (with `-dirty` if the tree had changes).
    pub git_commit: String,
    /// The exact command line.
    pub command_line: String,
    /// Operating system and kernel.
    pub os: String,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// UTC time the run started (RFC 3339).
    pub started_utc: String,
    /// The kernel's transparent huge page mode (`always`, `madvise`, `never`;
    /// empty where unknown): under `always` large allocations of every system
    /// may get huge pages, which changes TLB misses in graph walks.
    #[serde(default)]
    pub transparent_hugepages: String,
}

impl Environment {
    /// The Markdown lines every report opens its environment section with: CPU,
    /// SIMD ISA, rustc and OS, the huge-page mode where known, the git commit.
    pub fn markdown_lines(&self) -> String {
        let mut m = format!(
            "- CPU: {} ({} logical CPUs), memory {:.1} GiB\n",
            self.cpu_model,
            self.logical_cpus,
            self.memory_bytes as f64 / 1073741824.0
        );
        m.push_str(&format!(
            "- SIMD ISA chosen by omen's kernels: **{}** (available: {})\n",
            self.simd_isa,
            self.simd_available.join(", ")
        ));
        m.push_str(&format!("- rustc: {}; OS: {}\n", self.rustc, self.os));
        if !self.transparent_hugepages.is_empty() {
            m.push_str(&format!("- transparent huge pages: `{}` (no system here asks for them with MADV_HUGEPAGE, so only `always` would give any of them huge pages)\n", self.transparent_hugepages));
        }
        m.push_str(&format!("- git commit: {}\n", self.git_commit));
        m
    }
}

/// The selected mode in `/sys/kernel/mm/transparent_hugepage/enabled`
/// ("always [madvise] never" gives "madvise").
pub fn thp_mode() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| {
            let a = s.find('[')?;
            let b = s[a..].find(']')?;
            Some(s[a + 1..a + b].to_string())
        })
        .unwrap_or_default()
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

impl Environment {
    /// Reads the environment of this process.
    pub fn capture() -> Environment {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let mut git_commit = first_line("git", &["rev-parse", "HEAD"]);
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .ok()
            .is_some_and(|o| !o.stdout.is_empty());
        if dirty {
            git_commit.push_str("-dirty");
        }
        let kernels = omen_core::simd::Kernels::best();
        Environment {
            cpu_model,
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            simd_isa: kernels.isa().name().to_string(),
            simd_available: omen_core::simd::Isa::available()
                .iter()
                .map(|i| i.name().to_string())
                .collect(),
            rustc: first_line("rustc", &["-V"]),
            git_commit,
            command_line: std::env::args().collect::<Vec<_>>().join(" "),
            os: format!("{} {}", std::env::consts::OS, first_line("uname", &["-r"])),
            memory_bytes,
            started_utc: first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            transparent_hugepages: thp_mode(),
        }
    }
}

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Current resident set size, in bytes (Linux `VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}
