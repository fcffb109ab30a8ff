//! Prints the operator's ClusterRole (from `logstream_operator::rbac::PERMISSIONS`) as YAML,
//! for the Helm chart to render or be checked against.

use std::process::ExitCode;

use clap::Parser;
use logstream_api::exit;
use logstream_operator::{rbac, startup};

/// Prints the operator's ClusterRole as YAML.
#[derive(Debug, Parser)]
#[command(name = "rbacgen", version, after_help = exit::HELP)]
struct Args {}

fn main() -> ExitCode {
    if let Err(code) = startup::parse_args::<Args>() {
        return code;
    }
    match serde_yaml::to_string(&rbac::cluster_role()) {
        Ok(yaml) => {
            print!(
                "# Generated from operator/src/rbac.rs by `cargo run -p logstream-operator --bin rbacgen`.\n{yaml}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => startup::fail(
            &format_args!("failed to render the ClusterRole: {e}"),
            exit::FAILURE,
        ),
    }
}
