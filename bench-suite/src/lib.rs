//! The Omen benchmark harness: runs index × parameter × storage × dataset × thread
//! matrices, measures build (storage-only append and index build, reported
//! separately), search QPS and latency, recall by id and by distance computed by the
//! harness itself, memory, and the environment; writes JSON, CSV, Markdown and plots.

pub mod bench;
pub mod cli;
pub mod config;
pub mod durability;
pub mod env;
pub mod filtered;
pub mod frontier;
pub mod indexing;
pub mod latency;
pub mod measure;
pub mod model;
pub mod peers;
pub mod plot;
pub mod recall;
pub mod report;
pub mod runbook;
pub mod runner;
pub mod streaming;
