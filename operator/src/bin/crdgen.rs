//! Writes the LogPipeline CustomResourceDefinition generated from the Rust types.
//!
//! `cargo run -p logstream-operator --bin crdgen` rewrites `crds/logstream.io_logpipelines.yaml`;
//! `crdgen -` prints it instead. A test fails when the committed file is stale.

use std::{fs, path::PathBuf, process::ExitCode};

use clap::Parser;
use logstream_api::{
    crd::{CRD_PATH, crd_yaml},
    exit,
};
use logstream_operator::startup;

/// Writes the LogPipeline CRD generated from the Rust types.
#[derive(Debug, Parser)]
#[command(name = "crdgen", version, after_help = exit::HELP)]
struct Args {
    /// Where to write it: a file, or `-` for stdout [default: crds/logstream.io_logpipelines.yaml
    /// in the workspace]
    target: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = match startup::parse_args::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let yaml = crd_yaml();
    let path = match args.target {
        Some(target) if target.as_os_str() == "-" => {
            print!("{yaml}");
            return ExitCode::SUCCESS;
        }
        Some(target) => target,
        None => workspace_root().join(CRD_PATH),
    };
    match fs::write(&path, yaml) {
        Ok(()) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => startup::fail(
            &format_args!("failed to write {}: {e}", path.display()),
            exit::FAILURE,
        ),
    }
}

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), PathBuf::from)
}
