//! Support for the fuzz targets in `fuzz_targets/`: a model of how hyper's HTTP/1 server
//! frames requests ([`hyper_model`]) and the input formats shared by targets and seed corpora
//! ([`frames`]).

pub mod frames;
pub mod hyper_model;

// The unit tests link libFuzzer for the coverage hooks the build flags insert (`fuzz/run.sh
// --test`); the test harness keeps its own `main`.
#[cfg(test)]
use libfuzzer_sys as _;
