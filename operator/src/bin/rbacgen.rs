//! Prints the operator's RBAC rules (from `logstream_operator::rbac::PERMISSIONS`) as YAML:
//! the file `make rbac` writes to `charts/logstream/files/rbac.yaml`, which the chart's
//! ClusterRole and Roles read.

use std::process::ExitCode;

use clap::Parser;
use logstream_api::exit;
use logstream_operator::{rbac, startup};

/// Prints the operator's RBAC rules as YAML.
#[derive(Debug, Parser)]
#[command(name = "rbacgen", version, after_help = exit::HELP)]
struct Args {}

fn main() -> ExitCode {
    if let Err(code) = startup::parse_args::<Args>() {
        return code;
    }
    match serde_yaml::to_string(&rbac::rules_file()) {
        Ok(yaml) => {
            print!("{}\n{yaml}", rbac::RULES_FILE_HEADER);
            ExitCode::SUCCESS
        }
        Err(e) => startup::fail(
            &format_args!("failed to render the RBAC rules: {e}"),
            exit::FAILURE,
        ),
    }
}
