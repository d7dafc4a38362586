//! What a cache line read from DRAM costs on this machine, on one thread: the
//! yardstick for the quantized graph's walk (issue 14), whose time per node visit
//! follows the lines the visit reads (a block of 13 contiguous lines at GloVe-50,
//! a list of 3 and a vector of 4, each at an unpredictable address).
//!
//! Reads about 4 million 64-byte lines in runs of `LINES` contiguous lines, each
//! run at a random place in a 2 GiB buffer (huge-page advice, touched first),
//! summing one word per line; with `AHEAD` > 0 the lines of the run `AHEAD`
//! places later are prefetched first (`omen_core::simd::prefetch`, as the walk
//! does). Prints the time per line and per run. `LINE_PROBE_MIB=N` shrinks the
//! buffer to N MiB, to see where the caches end (on the Intel Xeon VM of issue
//! 14: 5.5 ns per single line at 8 MiB, 10.3 at 32, 16.3 at 128, 27-30 at 512
//! and beyond).
//!
//! `chase` mode walks like the graph does: every node owns a block, a list and a
//! vector of `B`, `L` and `V` lines in three arrays (2 GiB in all); the list's
//! first word names the next node (one random cycle through all nodes), so the
//! next address is known only once the list is read. `CHAINS` walks take one
//! step each in turn; a step reads the node's list, prefetches the next node's
//! three parts, then reads its block and vector. With one chain the next node's
//! loads have no time to land; with more, each has `CHAINS - 1` steps: the time
//! per step then shows what the memory system gives this access pattern. A
//! block or vector of 0 lines leaves that part out (`0,20,0`: one run of 20
//! lines per node).
//!
//! ```text
//! cargo run --release -p omen-bench --example line_probe -- [LINES,LINES,...] [AHEAD,AHEAD,...]
//! cargo run --release -p omen-bench --example line_probe -- 1,3,4,13,32 0,2
//! LINE_PROBE_MIB=16 cargo run --release -p omen-bench --example line_probe -- 1 0,8
//! cargo run --release -p omen-bench --example line_probe -- chase [CHAINS,...] [B,L,V]
//! cargo run --release -p omen-bench --example line_probe -- chase 1,2,4,8 13,3,4
//! ```

use std::error::Error;
use std::time::Instant;

const BUFFER: usize = 2 << 30;
const WORDS_PER_LINE: usize = 8;
/// Lines read per measurement (about 4 million, whatever the run length).
const TOTAL_LINES: usize = 4_000_000;

fn list(arg: Option<String>, default: &str) -> Result<Vec<usize>, Box<dyn Error>> {
    Ok(arg
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "chase") {
        args.next();
        let chains = list(args.next(), "1,2,4,8")?;
        let shape = list(args.next(), "13,3,4")?;
        return chase(&chains, &shape);
    }
    let runs = list(args.next(), "1,3,4,13,32")?;
    let aheads = list(args.next(), "0,2")?;
    if runs
        .iter()
        .any(|&r| r == 0 || r * 64 > buffer_bytes().unwrap_or(BUFFER))
    {
        return Err("LINES must be between 1 and the buffer's line count".into());
    }
    let mut buf = vec![0u64; buffer_bytes()? / 8];
    advise_huge_pages(&buf);
    for (i, w) in buf.iter_mut().enumerate().step_by(WORDS_PER_LINE) {
        *w = i as u64;
    }
    let lines = buf.len() / WORDS_PER_LINE;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    println!("| lines per run | ahead | ns per line | ns per run |");
    println!("|---:|---:|---:|---:|");
    for &run in &runs {
        let slots = lines / run;
        let count = (TOTAL_LINES / run).max(1);
        let starts: Vec<usize> = (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) as usize % slots) * run * WORDS_PER_LINE
            })
            .collect();
        for &ahead in &aheads {
            let t = Instant::now();
            let mut sum = 0u64;
            for (i, &s) in starts.iter().enumerate() {
                if ahead > 0 {
                    if let Some(&p) = starts.get(i + ahead) {
                        omen_core::simd::prefetch(&buf[p..p + run * WORDS_PER_LINE]);
                    }
                }
                let r = &buf[s..s + run * WORDS_PER_LINE];
                for l in 0..run {
                    sum = sum.wrapping_add(r[l * WORDS_PER_LINE]);
                }
            }
            std::hint::black_box(sum);
            let ns = t.elapsed().as_secs_f64() * 1e9;
            println!(
                "| {run} | {ahead} | {:.1} | {:.1} |",
                ns / (count * run) as f64,
                ns / count as f64
            );
        }
    }
    Ok(())
}

/// The buffer of the plain mode: `LINE_PROBE_MIB` MiB (to see the caches), by
/// default [`BUFFER`].
fn buffer_bytes() -> Result<usize, Box<dyn Error>> {
    match std::env::var("LINE_PROBE_MIB") {
        Ok(v) => Ok(v.parse::<usize>()?.max(1) << 20),
        Err(_) => Ok(BUFFER),
    }
}

/// The `chase` mode (see the crate documentation).
fn chase(chains: &[usize], shape: &[usize]) -> Result<(), Box<dyn Error>> {
    let &[b, l, v] = shape else {
        return Err("the shape is three line counts: BLOCK,LIST,VECTOR".into());
    };
    if l == 0 || chains.contains(&0) {
        return Err("the list's line count and the chains must be at least 1".into());
    }
    let nodes = BUFFER / ((b + l + v) * 64);
    let part = |lines: usize| {
        let mut p = vec![0u64; nodes * lines * WORDS_PER_LINE];
        advise_huge_pages(&p);
        // Touched after the advice, so that the pages are huge and distinct.
        p.iter_mut().step_by(WORDS_PER_LINE).for_each(|w| *w = 1);
        p
    };
    let (blocks, mut lists, vectors) = (part(b), part(l), part(v));
    // One cycle through every node (Sattolo's shuffle), written into the lists.
    let mut next: Vec<usize> = (0..nodes).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..nodes).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        next.swap(i, (state >> 33) as usize % i);
    }
    for (u, &n) in next.iter().enumerate() {
        lists[u * l * WORDS_PER_LINE] = n as u64;
    }
    drop(next);
    let (bw, lw, vw) = (b * WORDS_PER_LINE, l * WORDS_PER_LINE, v * WORDS_PER_LINE);
    println!("{nodes} nodes of {b} + {l} + {v} lines");
    println!("| chains | ns per step | ns per line |");
    println!("|---:|---:|---:|");
    for &k in chains {
        let mut cur: Vec<usize> = (0..k).map(|c| c * (nodes / k)).collect();
        let steps = 2_000_000usize;
        let mut sum = 0u64;
        let t = Instant::now();
        for s in 0..steps {
            let c = s % k;
            let u = cur[c];
            let list = &lists[u * lw..(u + 1) * lw];
            let n = (list[0] as usize).min(nodes - 1);
            omen_core::simd::prefetch(&lists[n * lw..(n + 1) * lw]);
            omen_core::simd::prefetch(&blocks[n * bw..(n + 1) * bw]);
            omen_core::simd::prefetch(&vectors[n * vw..(n + 1) * vw]);
            for w in list.iter().step_by(WORDS_PER_LINE).skip(1) {
                sum = sum.wrapping_add(*w);
            }
            for w in blocks[u * bw..(u + 1) * bw].iter().step_by(WORDS_PER_LINE) {
                sum = sum.wrapping_add(*w);
            }
            for w in vectors[u * vw..(u + 1) * vw].iter().step_by(WORDS_PER_LINE) {
                sum = sum.wrapping_add(*w);
            }
            cur[c] = n;
        }
        std::hint::black_box(sum);
        let ns = t.elapsed().as_secs_f64() * 1e9 / steps as f64;
        println!("| {k} | {ns:.1} | {:.1} |", ns / (b + l + v) as f64);
    }
    Ok(())
}

/// Asks for transparent huge pages over `v` (where the system gives them on
/// request), so that the probe measures DRAM and not page walks.
fn advise_huge_pages(v: &[u64]) {
    #[cfg(target_os = "linux")]
    {
        let start = v.as_ptr() as usize;
        let end = start + std::mem::size_of_val(v);
        let aligned = (start + 4095) & !4095;
        if end > aligned {
            // SAFETY: madvise with MADV_HUGEPAGE only gives the kernel advice about
            // pages of this process's own live allocation (the page-aligned part
            // of `v`); it changes neither their contents nor their validity.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}
