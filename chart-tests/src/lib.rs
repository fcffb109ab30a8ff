//! Support for the chart and image tests (the tests live in `tests/`): finding the chart
//! tools, rendering the chart, and reading metric names out of PromQL.
//!
//! The tools come from `scripts/install-chart-tools.sh` (`make chart-tools`, a prerequisite
//! of `make test`). When one is missing the tests fail and say how to install it: a chart
//! check that silently skips is a chart check CI never runs.

pub mod metric_names;
pub mod render;
pub mod tools;

use std::path::PathBuf;

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts").join("logstream")
}
