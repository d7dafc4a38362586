//! Storage-only append rate: `N` random 128-d vectors appended in batches of
//! 1,000 into a `MemoryStorage` and an `MmapStorage`, with no index and no
//! durability (the mmap storage's final `flush` is timed separately).
//!
//! ```sh
//! cargo run --release -p omen-storage --example append_rate -- [--n N] [--dir DIR]
//! ```
//!
//! `--dir` puts the mmap chunk files in `DIR/append-rate-<pid>` (removed at the
//! end) instead of a temporary directory, to measure a particular file system.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// `MmapStorage` does file I/O and is not built under `cfg(loom)`.
#[cfg(not(loom))]
mod bench {
    use omen_core::VectorStorage;
    use omen_storage::{MemoryStorage, MmapStorage};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::path::PathBuf;
    use std::time::Instant;

    const DIM: usize = 128;
    const BATCH: usize = 1_000;

    /// Appends `rows` in batches and returns the vectors per second.
    fn append_all(s: &dyn VectorStorage, rows: &[f32]) -> f64 {
        let start = Instant::now();
        for batch in rows.chunks(BATCH * DIM) {
            s.append_batch(batch).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(s.len(), rows.len() / DIM);
        (rows.len() / DIM) as f64 / secs
    }

    pub fn main() {
        let mut n = 1_000_000usize;
        let mut dir: Option<PathBuf> = None;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--n" => n = args.next().and_then(|v| v.parse().ok()).expect("--n N"),
                "--dir" => dir = Some(args.next().expect("--dir DIR").into()),
                other => panic!("unknown argument {other:?} (use --n N, --dir DIR)"),
            }
        }
        let mut rng = StdRng::seed_from_u64(42);
        let rows: Vec<f32> = (0..n * DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        println!(
            "storage-only append (no index, no durability): {n} × {DIM}-d vectors, batches of {BATCH}"
        );

        let mem = MemoryStorage::new(DIM).unwrap();
        let rate = append_all(&mem, &rows);
        println!("  memory: {rate:>12.0} vectors/s");
        drop(mem);

        let (_tmp, path) = match &dir {
            Some(d) => (None, d.join(format!("append-rate-{}", std::process::id()))),
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().join("vectors");
                (Some(t), p)
            }
        };
        let mmap = MmapStorage::create(&path, DIM).unwrap();
        let rate = append_all(&mmap, &rows);
        println!("  mmap:   {rate:>12.0} vectors/s   ({})", path.display());
        let start = Instant::now();
        mmap.flush().unwrap();
        println!(
            "  mmap final flush(): {:.3} s ({} MiB mapped)",
            start.elapsed().as_secs_f64(),
            mmap.memory_bytes() >> 20
        );
        drop(mmap);
        if dir.is_some() {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
}

#[cfg(not(loom))]
fn main() {
    bench::main();
}

#[cfg(loom)]
fn main() {}
