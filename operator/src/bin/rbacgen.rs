//! Prints the operator's ClusterRole (from `logstream_operator::rbac::PERMISSIONS`) as YAML,
//! for the Helm chart to render or be checked against.

use std::process::ExitCode;

fn main() -> ExitCode {
    match serde_yaml::to_string(&logstream_operator::rbac::cluster_role()) {
        Ok(yaml) => {
            print!(
                "# Generated from operator/src/rbac.rs by `cargo run -p logstream-operator --bin rbacgen`.\n{yaml}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rbacgen: failed to render the ClusterRole: {e}");
            ExitCode::FAILURE
        }
    }
}
