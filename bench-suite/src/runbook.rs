//! Runbooks: big-ann-benchmarks' streaming format (NeurIPS'23 streaming track).
//!
//! A runbook is YAML: one entry per dataset name, each a table of numbered
//! steps (1, 2, ... N) and an optional `max_pts`:
//!
//! ```yaml
//! glove-50:
//!   max_pts: 100000
//!   1: { operation: insert, start: 0, end: 50000 }
//!   2: { operation: search }
//!   3: { operation: delete, start: 0, end: 10000 }
//!   4: { operation: replace, tags_start: 10000, tags_end: 20000, ids_start: 60000, ids_end: 70000 }
//!   5: { operation: search }
//! ```
//!
//! `insert {start, end}` adds dataset rows `start..end` under the tags
//! `start..end`; `delete {start, end}` removes the tags `start..end`;
//! `replace` gives the live tags `tags_start..tags_end` the vectors of rows
//! `ids_start..ids_end`; `search` runs the queries over the live tags. The
//! entry's `gt_url` (big-ann's precomputed ground truth) is accepted and
//! ignored: the harness computes exact ground truth itself.
//!
//! One extension of omen's, for the clustered-insertion-order runs that
//! big-ann makes by writing a permuted copy of a dataset
//! (`clustered_data_gen.py`): `row_order: { clusters: C, seed: S }` permutes
//! the dataset's rows before the steps refer to them, grouping them by their
//! nearest of `C` k-means centroids ([`cluster_order`]).
//!
//! [`parse`] refuses a malformed file, an unknown operation or key, and
//! [`Runbook::check`] replays the steps over the dataset's row count before
//! anything runs: a range outside the rows, an insert of a live tag, a delete
//! or replace of one that is not, and `max_pts` exceeded are refused with one
//! line naming the step and the problem.

use omen_core::{Error, Result};
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// One operation of a runbook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Rows `start..end` added under the tags `start..end`.
    Insert {
        /// First row (and tag).
        start: usize,
        /// One past the last.
        end: usize,
    },
    /// Tags `start..end` removed.
    Delete {
        /// First tag.
        start: usize,
        /// One past the last.
        end: usize,
    },
    /// Live tags `tags_start..tags_end` take the vectors of rows `ids_start..ids_end`.
    Replace {
        /// First tag.
        tags_start: usize,
        /// One past the last tag.
        tags_end: usize,
        /// First row.
        ids_start: usize,
        /// One past the last row.
        ids_end: usize,
    },
    /// The queries, over the live tags.
    Search,
}

impl Op {
    /// The operation's name in the runbook (`insert`, `delete`, `replace`, `search`).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Insert { .. } => "insert",
            Op::Delete { .. } => "delete",
            Op::Replace { .. } => "replace",
            Op::Search => "search",
        }
    }

    /// Rows the operation touches (0 for a search).
    pub fn rows(&self) -> usize {
        match *self {
            Op::Insert { start, end } | Op::Delete { start, end } => end - start,
            Op::Replace {
                tags_start,
                tags_end,
                ..
            } => tags_end - tags_start,
            Op::Search => 0,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Op::Insert { start, end } => write!(f, "insert {start}..{end}"),
            Op::Delete { start, end } => write!(f, "delete {start}..{end}"),
            Op::Replace {
                tags_start,
                tags_end,
                ids_start,
                ids_end,
            } => write!(
                f,
                "replace tags {tags_start}..{tags_end} with rows {ids_start}..{ids_end}"
            ),
            Op::Search => f.write_str("search"),
        }
    }
}

/// One numbered step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Its number in the file (1-based, consecutive).
    pub number: usize,
    /// What it does.
    pub op: Op,
}

/// The `row_order` extension: rows grouped by their nearest of `clusters`
/// k-means centroids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowOrder {
    /// Centroids.
    pub clusters: usize,
    /// Seed of the k-means sample and initialisation.
    pub seed: u64,
}

/// A parsed runbook (one dataset entry of the file).
#[derive(Clone, Debug, PartialEq)]
pub struct Runbook {
    /// The file it came from.
    pub file: PathBuf,
    /// The entry's key (a dataset name).
    pub entry: String,
    /// Most live tags allowed at any time, if the entry says.
    pub max_pts: Option<usize>,
    /// Row permutation before the steps apply, if any.
    pub row_order: Option<RowOrder>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Checksum of the file's bytes (names the ground-truth cache).
    pub checksum: String,
}

/// What replaying a runbook found (see [`Runbook::check`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Distinct tags ever inserted.
    pub distinct_tags: usize,
    /// Most tags live at once.
    pub max_live: usize,
    /// Tags live after the last step.
    pub final_live: usize,
    /// Search steps.
    pub searches: usize,
}

/// The live tags of a runbook as it is replayed, and the row whose vector each
/// holds.
#[derive(Clone, Debug)]
pub struct LiveSet {
    row_of: Vec<u32>,
    live: usize,
}

/// No row: a tag that is not live.
const NONE: u32 = u32::MAX;

impl LiveSet {
    /// Nothing live, over a dataset of `n` rows (tags are below `n` too).
    pub fn new(n: usize) -> LiveSet {
        LiveSet {
            row_of: vec![NONE; n],
            live: 0,
        }
    }

    /// Tags live now.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether nothing is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The row whose vector `tag` holds, if it is live.
    pub fn row(&self, tag: usize) -> Option<usize> {
        self.row_of
            .get(tag)
            .filter(|&&r| r != NONE)
            .map(|&r| r as usize)
    }

    /// The live tags in increasing order, with their rows.
    pub fn live(&self) -> Vec<(u32, u32)> {
        self.row_of
            .iter()
            .enumerate()
            .filter(|(_, &r)| r != NONE)
            .map(|(t, &r)| (t as u32, r))
            .collect()
    }

    /// Applies `op` (checked: [`Runbook::check`] refuses what this would get
    /// wrong). A search changes nothing.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Insert { start, end } => {
                for t in start..end {
                    self.row_of[t] = t as u32;
                }
                self.live += end - start;
            }
            Op::Delete { start, end } => {
                for t in start..end {
                    self.row_of[t] = NONE;
                }
                self.live -= end - start;
            }
            Op::Replace {
                tags_start,
                tags_end,
                ids_start,
                ..
            } => {
                for t in tags_start..tags_end {
                    self.row_of[t] = (ids_start + (t - tags_start)) as u32;
                }
            }
            Op::Search => {}
        }
    }
}

fn refuse(file: &Path, what: impl std::fmt::Display) -> Error {
    Error::invalid_param("runbook", format!("{}: {what}", file.display()))
}

fn key_name(k: &Yaml) -> String {
    match k {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Reads and parses `path` (see [`parse`]).
pub fn load(path: &Path, dataset: &str) -> Result<Runbook> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path, dataset)
}

/// Parses runbook `text` (from `file`, for messages) and picks the entry named
/// `dataset`, or the file's only entry. Refuses malformed YAML (naming the
/// line), an entry that is not a table of numbered steps, step numbers that do
/// not run 1, 2, ... N, an unknown operation, a missing, negative or unknown
/// key of a step, and an empty range: one line naming the step and the problem.
pub fn parse(text: &str, file: &Path, dataset: &str) -> Result<Runbook> {
    prescan(text).map_err(|why| refuse(file, why))?;
    let docs = YamlLoader::load_from_str(text).map_err(|e| refuse(file, not_yaml(&e)))?;
    let [doc] = docs.as_slice() else {
        return Err(refuse(
            file,
            format!("holds {} YAML documents, expected one", docs.len()),
        ));
    };
    let Yaml::Hash(top) = doc else {
        return Err(refuse(file, "is not a table of runbooks by dataset name"));
    };
    let names: Vec<String> = top.keys().map(key_name).collect();
    let (entry, body) = match top
        .iter()
        .find(|(k, _)| k.as_str() == Some(dataset))
        .or_else(|| {
            if top.len() == 1 {
                top.iter().next()
            } else {
                None
            }
        }) {
        Some((k, v)) => (key_name(k), v),
        None => {
            return Err(refuse(
                file,
                format!(
                    "has no runbook for {dataset:?} (entries: {})",
                    names.join(", ")
                ),
            ))
        }
    };
    let Yaml::Hash(body) = body else {
        return Err(refuse(
            file,
            format!("entry {entry:?} is not a table of numbered steps"),
        ));
    };
    let mut max_pts = None;
    let mut row_order = None;
    let mut numbered: Vec<(usize, &Yaml)> = Vec::new();
    for (k, v) in body {
        match k {
            Yaml::Integer(i) => {
                let n = usize::try_from(*i)
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| refuse(file, format!("step number {i} is not 1 or more")))?;
                numbered.push((n, v));
            }
            Yaml::String(s) if s == "max_pts" => {
                max_pts = Some(
                    v.as_i64()
                        .and_then(|x| usize::try_from(x).ok())
                        .filter(|&x| x >= 1)
                        .ok_or_else(|| {
                            refuse(file, format!("max_pts {v:?} is not a count of 1 or more"))
                        })?,
                );
            }
            Yaml::String(s) if s == "gt_url" => {}
            Yaml::String(s) if s == "row_order" => row_order = Some(parse_row_order(file, v)?),
            other => {
                return Err(refuse(
                    file,
                    format!(
                        "entry {entry:?}: unknown key {:?} (expected numbered steps, max_pts, gt_url, row_order)",
                        key_name(other)
                    ),
                ))
            }
        }
    }
    numbered.sort_by_key(|(n, _)| *n);
    let mut steps = Vec::with_capacity(numbered.len());
    for (i, (n, v)) in numbered.iter().enumerate() {
        if *n != i + 1 {
            return Err(refuse(
                file,
                format!(
                    "step numbers must run 1, 2, ... {}: step {} {}",
                    numbered.len(),
                    i + 1,
                    if *n > i + 1 {
                        "is missing"
                    } else {
                        "is given twice"
                    }
                ),
            ));
        }
        steps.push(Step {
            number: *n,
            op: parse_op(file, *n, v)?,
        });
    }
    if steps.is_empty() {
        return Err(refuse(file, format!("entry {entry:?} has no steps")));
    }
    Ok(Runbook {
        file: file.to_path_buf(),
        entry,
        max_pts,
        row_order,
        steps,
        checksum: omen_datasets::checksum_bytes(text.as_bytes()),
    })
}

fn not_yaml(e: &yaml_rust2::ScanError) -> String {
    format!(
        "not YAML: line {}, column {}: {}",
        e.marker().line(),
        e.marker().col() + 1,
        e.info()
    )
}

/// Most bytes a runbook may have (big-ann's longest is under 100 KiB).
pub const MAX_RUNBOOK_BYTES: usize = 16 << 20;

/// Deepest nesting of tables and lists a runbook may have (it needs three).
const MAX_DEPTH: usize = 32;

/// Refuses, before the YAML is loaded into values, what would make loading
/// cost more than the text: aliases (`*name`, which the loader expands by
/// copying: a few lines of nested aliases are gigabytes), nesting deeper than
/// [`MAX_DEPTH`], and a text over [`MAX_RUNBOOK_BYTES`].
fn prescan(text: &str) -> std::result::Result<(), String> {
    use yaml_rust2::parser::{Event, Parser};
    if text.len() > MAX_RUNBOOK_BYTES {
        return Err(format!(
            "is {} bytes, over the {MAX_RUNBOOK_BYTES}-byte limit of a runbook",
            text.len()
        ));
    }
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| not_yaml(&e))?;
        match event {
            Event::StreamEnd => return Ok(()),
            Event::Alias(_) => {
                return Err(format!(
                    "line {}: YAML aliases (*name) are not allowed in a runbook",
                    mark.line()
                ))
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "line {}: nested deeper than {MAX_DEPTH} levels",
                        mark.line()
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

fn parse_row_order(file: &Path, v: &Yaml) -> Result<RowOrder> {
    let bad = |why: String| refuse(file, format!("row_order: {why}"));
    let Yaml::Hash(h) = v else {
        return Err(bad("expected a table { clusters: C, seed: S }".into()));
    };
    let mut clusters = None;
    let mut seed = 0u64;
    for (k, x) in h {
        let val = x
            .as_i64()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| {
                bad(format!(
                    "{} must be a whole number of 0 or more",
                    key_name(k)
                ))
            })?;
        match k.as_str() {
            Some("clusters") => clusters = Some(val as usize),
            Some("seed") => seed = val,
            _ => {
                return Err(bad(format!(
                    "unknown key {:?} (expected clusters, seed)",
                    key_name(k)
                )))
            }
        }
    }
    match clusters {
        Some(c) if c >= 1 => Ok(RowOrder { clusters: c, seed }),
        _ => Err(bad("clusters must be given, 1 or more".into())),
    }
}

fn parse_op(file: &Path, n: usize, v: &Yaml) -> Result<Op> {
    let bad = |why: String| refuse(file, format!("step {n}: {why}"));
    let Yaml::Hash(h) = v else {
        return Err(bad("is not a table with an operation".into()));
    };
    let op = h
        .iter()
        .find(|(k, _)| k.as_str() == Some("operation"))
        .map(|(_, v)| v)
        .ok_or_else(|| bad("has no operation".into()))?;
    let op = op
        .as_str()
        .ok_or_else(|| bad(format!("operation {op:?} is not a name")))?;
    let keys: &[&str] = match op {
        "insert" | "delete" => &["start", "end"],
        "replace" => &["tags_start", "tags_end", "ids_start", "ids_end"],
        "search" => &[],
        other => {
            return Err(bad(format!(
                "unknown operation {other:?} (insert, delete, replace, search)"
            )))
        }
    };
    let mut vals = vec![None; keys.len()];
    for (k, x) in h {
        let name = key_name(k);
        if name == "operation" {
            continue;
        }
        let Some(i) = keys.iter().position(|&want| want == name) else {
            return Err(bad(format!(
                "{op} takes no key {name:?} (it takes {})",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            )));
        };
        vals[i] = Some(
            x.as_i64()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| bad(format!("{name} {x:?} is not a row number")))?,
        );
    }
    let mut got = Vec::with_capacity(keys.len());
    for (k, v) in keys.iter().zip(&vals) {
        got.push(v.ok_or_else(|| bad(format!("{op} needs {k}")))?);
    }
    let op = match op {
        "insert" => Op::Insert {
            start: got[0],
            end: got[1],
        },
        "delete" => Op::Delete {
            start: got[0],
            end: got[1],
        },
        "replace" => Op::Replace {
            tags_start: got[0],
            tags_end: got[1],
            ids_start: got[2],
            ids_end: got[3],
        },
        _ => Op::Search,
    };
    match op {
        Op::Insert { start, end } | Op::Delete { start, end } if start >= end => {
            Err(bad(format!("{op}: empty range (start must be below end)")))
        }
        Op::Replace {
            tags_start,
            tags_end,
            ids_start,
            ids_end,
        } if tags_start >= tags_end
            || tags_end - tags_start != ids_end.saturating_sub(ids_start) =>
        {
            Err(bad(format!(
                "{op}: the tag range must be non-empty and as long as the row range"
            )))
        }
        _ => Ok(op),
    }
}

impl Runbook {
    /// Replays the steps over a dataset of `n` rows without running anything:
    /// refuses a range outside the rows, an insert of a live tag, a delete or
    /// replace of a tag that is not live, `max_pts` exceeded and a runbook
    /// without a search, naming the step.
    pub fn check(&self, n: usize) -> Result<Replay> {
        let mut live = LiveSet::new(n);
        let mut ever = vec![false; n];
        let mut out = Replay::default();
        for s in &self.steps {
            let bad =
                |why: String| refuse(&self.file, format!("step {} ({}): {why}", s.number, s.op));
            let inside = |lo: usize, hi: usize, what: &str| {
                if hi > n {
                    Err(bad(format!(
                        "{what} {lo}..{hi} reach past the dataset's {n} rows"
                    )))
                } else {
                    Ok(())
                }
            };
            match s.op {
                Op::Insert { start, end } => {
                    inside(start, end, "rows")?;
                    if let Some(t) = (start..end).find(|&t| live.row(t).is_some()) {
                        return Err(bad(format!("tag {t} is live already")));
                    }
                    for e in &mut ever[start..end] {
                        if !*e {
                            *e = true;
                            out.distinct_tags += 1;
                        }
                    }
                }
                Op::Delete { start, end } => {
                    inside(start, end, "tags")?;
                    if let Some(t) = (start..end).find(|&t| live.row(t).is_none()) {
                        return Err(bad(format!("tag {t} is not live")));
                    }
                }
                Op::Replace {
                    tags_start,
                    tags_end,
                    ids_start,
                    ids_end,
                } => {
                    inside(tags_start, tags_end, "tags")?;
                    inside(ids_start, ids_end, "rows")?;
                    if let Some(t) = (tags_start..tags_end).find(|&t| live.row(t).is_none()) {
                        return Err(bad(format!("tag {t} is not live")));
                    }
                }
                Op::Search => out.searches += 1,
            }
            live.apply(&s.op);
            if let Some(m) = self.max_pts {
                if live.len() > m {
                    return Err(bad(format!(
                        "max_pts {m} exceeded: {} tags live after this step",
                        live.len()
                    )));
                }
            }
            out.max_live = out.max_live.max(live.len());
        }
        if out.searches == 0 {
            return Err(refuse(
                &self.file,
                "no step searches: there is nothing to measure",
            ));
        }
        out.final_live = live.len();
        Ok(out)
    }
}

/// The row permutation of [`RowOrder`], as big-ann's `clustered_data_gen.py`
/// makes it: k-means++ with `clusters` centroids on a seeded sample of at most
/// 100,000 rows (10 Lloyd iterations), every row assigned to its nearest
/// centroid (squared L2), and the rows grouped by centroid, each group in the
/// rows' original order. Returns `order[i]` = the dataset row at position `i`.
pub fn cluster_order(base: &[f32], dim: usize, ro: &RowOrder) -> Result<Vec<u32>> {
    use omen_ivfpq::kmeans::{assign, kmeans, KMeansInit, KMeansParams};
    let n = omen_core::validate::check_rows(base, dim)?;
    let kernels = omen_core::simd::Kernels::best();
    let params = KMeansParams {
        iters: 10,
        seed: ro.seed,
        max_sample: 100_000,
        init: KMeansInit::PlusPlus,
        ..KMeansParams::new(ro.clusters)
    };
    let km = kmeans(kernels, base, dim, &params)?;
    let mut labels = vec![0u32; n];
    let mut dists = vec![0f32; n];
    assign(kernels, &km.centroids, dim, base, &mut labels, &mut dists);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by_key(|&r| labels[r as usize]);
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Runbook> {
        parse(text, Path::new("rb.yaml"), "toy")
    }

    fn err(text: &str, n: usize) -> String {
        match p(text).and_then(|r| r.check(n).map(|_| r)) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = "toy:\n  max_pts: 30\n  gt_url: \"x\"\n  1:\n    operation: insert\n    start: 0\n    end: 20\n  2:\n    operation: search\n  3: {operation: delete, start: 0, end: 10}\n  4: {operation: replace, tags_start: 10, tags_end: 15, ids_start: 30, ids_end: 35}\n  5: {operation: insert, start: 0, end: 5}\n  6: {operation: search}\n";

    #[test]
    fn parses_and_replays_big_ann_format() {
        let r = p(GOOD).unwrap();
        assert_eq!(r.entry, "toy");
        assert_eq!(r.max_pts, Some(30));
        assert_eq!(r.steps.len(), 6);
        assert_eq!(
            r.steps[3].op,
            Op::Replace {
                tags_start: 10,
                tags_end: 15,
                ids_start: 30,
                ids_end: 35
            }
        );
        let replay = r.check(40).unwrap();
        assert_eq!(
            replay,
            Replay {
                distinct_tags: 20,
                max_live: 20,
                final_live: 15,
                searches: 2
            }
        );
        let mut live = LiveSet::new(40);
        for s in &r.steps {
            live.apply(&s.op);
        }
        assert_eq!(live.len(), 15);
        assert_eq!(live.row(12), Some(32));
        assert_eq!(live.row(7), None);
        assert_eq!(live.row(3), Some(3));
        assert_eq!(live.live().len(), 15);
    }

    #[test]
    fn picks_the_named_entry_or_the_only_one() {
        let two = "a:\n  1: {operation: search}\ntoy:\n  1: {operation: insert, start: 0, end: 2}\n  2: {operation: search}\n";
        assert_eq!(p(two).unwrap().steps.len(), 2);
        let other = "a:\n  1: {operation: search}\nb:\n  1: {operation: search}\n";
        assert!(err(other, 10).contains("no runbook for \"toy\" (entries: a, b)"));
        let one =
            "msturing:\n  1: {operation: insert, start: 0, end: 2}\n  2: {operation: search}\n";
        assert_eq!(p(one).unwrap().entry, "msturing");
    }

    #[test]
    fn bad_input_names_the_step_and_the_problem() {
        let deep = format!("toy: {}{}\n", "[".repeat(40), "]".repeat(40));
        let cases: Vec<(&str, &str)> = vec![
            // outside the dataset's rows
            ("toy:\n  1: {operation: insert, start: 0, end: 50}\n  2: {operation: search}\n", "step 1 (insert 0..50): rows 0..50 reach past the dataset's 40 rows"),
            // insert of a live tag
            ("toy:\n  1: {operation: insert, start: 0, end: 5}\n  2: {operation: insert, start: 4, end: 6}\n  3: {operation: search}\n", "step 2 (insert 4..6): tag 4 is live already"),
            // delete of a tag that is not live
            ("toy:\n  1: {operation: insert, start: 0, end: 5}\n  2: {operation: delete, start: 3, end: 7}\n  3: {operation: search}\n", "step 2 (delete 3..7): tag 5 is not live"),
            // replace of a tag that is not live
            ("toy:\n  1: {operation: insert, start: 0, end: 5}\n  2: {operation: replace, tags_start: 4, tags_end: 6, ids_start: 10, ids_end: 12}\n  3: {operation: search}\n", "step 2 (replace tags 4..6 with rows 10..12): tag 5 is not live"),
            // max_pts exceeded
            ("toy:\n  max_pts: 4\n  1: {operation: insert, start: 0, end: 5}\n  2: {operation: search}\n", "step 1 (insert 0..5): max_pts 4 exceeded: 5 tags live after this step"),
            // unknown operation
            ("toy:\n  1: {operation: upsert, start: 0, end: 5}\n", "step 1: unknown operation \"upsert\""),
            // unknown key of a step
            ("toy:\n  1: {operation: insert, start: 0, end: 5, batch: 3}\n", "step 1: insert takes no key \"batch\""),
            // missing key
            ("toy:\n  1: {operation: delete, start: 0}\n", "step 1: delete needs end"),
            // empty range
            ("toy:\n  1: {operation: insert, start: 5, end: 5}\n", "step 1: insert 5..5: empty range"),
            // negative
            ("toy:\n  1: {operation: insert, start: -1, end: 5}\n", "step 1: start"),
            // a gap in the numbering
            ("toy:\n  1: {operation: search}\n  3: {operation: search}\n", "step 2 is missing"),
            // lengths differ
            ("toy:\n  1: {operation: replace, tags_start: 0, tags_end: 3, ids_start: 5, ids_end: 6}\n", "as long as the row range"),
            // no search
            ("toy:\n  1: {operation: insert, start: 0, end: 5}\n", "no step searches"),
            // unknown entry key
            ("toy:\n  maxpts: 3\n  1: {operation: search}\n", "unknown key \"maxpts\""),
            // malformed YAML
            ("toy:\n  1: {operation: insert, start: 0\n", "not YAML: line"),
            ("- 1\n- 2\n", "not a table of runbooks"),
            ("toy:\n  1: {operation: search}\n  row_order: {clusters: 0}\n", "row_order: clusters must be given"),
            // an alias (the loader would expand it by copying)
            ("a: &x [1, 2]\nb: [*x, *x]\n", "aliases (*name) are not allowed"),
            // nesting
            (deep.as_str(), "nested deeper than 32"),
        ];
        for (text, want) in cases {
            let got = err(text, 40);
            assert!(got.contains(want), "{text}\nwanted {want:?}\ngot {got:?}");
            assert!(got.contains("rb.yaml"), "{got}");
        }
    }

    #[test]
    fn row_order_groups_rows_by_centroid() {
        // Two far-apart blobs, interleaved: the order puts each blob together.
        let dim = 4;
        let mut base = Vec::new();
        for i in 0..200 {
            let c = if i % 2 == 0 { 0.0 } else { 100.0 };
            for d in 0..dim {
                base.push(c + ((i * 7 + d * 13) % 10) as f32 * 0.01);
            }
        }
        let ro = RowOrder {
            clusters: 2,
            seed: 3,
        };
        let order = cluster_order(&base, dim, &ro).unwrap();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<u32>>());
        let parity: Vec<u32> = order.iter().map(|r| r % 2).collect();
        assert!(parity[..100].iter().all(|&p| p == parity[0]));
        assert!(parity[100..].iter().all(|&p| p != parity[0]));
        // Within a group, the original order.
        assert!(order[..100].windows(2).all(|w| w[0] < w[1]));
    }
}
