//! Writes the LogPipeline CustomResourceDefinition generated from the Rust types.
//!
//! `cargo run -p logstream-operator --bin crdgen` rewrites `crds/logstream.io_logpipelines.yaml`;
//! `crdgen -` prints it instead. A test fails when the committed file is stale.

use std::{env, fs, path::PathBuf, process::ExitCode};

use logstream_api::crd::{CRD_PATH, crd_yaml};

fn main() -> ExitCode {
    let yaml = crd_yaml();
    let target = env::args().nth(1);
    if target.as_deref() == Some("-") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let path = target.map_or_else(|| workspace_root().join(CRD_PATH), PathBuf::from);
    match fs::write(&path, yaml) {
        Ok(()) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: failed to write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), PathBuf::from)
}
