//! The operator's binaries speak the workspace's exit-code convention
//! (`logstream_api::exit`): 0 done, 1 usage or configuration mistake, 2 runtime failure, one
//! `error: ...` line on stderr, and `--help` ending with the line that says so.

mod support;

use std::process::{Command, Output};

use logstream_api::exit;
use support::assert_failed;

const BINARIES: [&str; 3] = [
    env!("CARGO_BIN_EXE_logstream-operator"),
    env!("CARGO_BIN_EXE_crdgen"),
    env!("CARGO_BIN_EXE_rbacgen"),
];

fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn code(n: u8) -> Option<i32> {
    Some(i32::from(n))
}

#[test]
fn help_exits_0_and_ends_with_the_exit_codes() {
    for binary in BINARIES {
        let out = run(binary, &["--help"], &[]);
        assert_eq!(out.status.code(), code(exit::SUCCESS), "{binary}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.trim_end().ends_with(exit::HELP), "{binary}:\n{help}");
    }
}

#[test]
fn a_usage_mistake_exits_1() {
    for binary in BINARIES {
        let out = run(binary, &["--no-such-flag"], &[]);
        assert_eq!(out.status.code(), code(exit::USAGE), "{binary}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{binary}: {stderr}");
    }
    let out = run(BINARIES[0], &["--recheck-interval=soon"], &[]);
    assert_eq!(out.status.code(), code(exit::USAGE));
}

#[test]
fn an_unusable_kubeconfig_is_a_configuration_mistake() {
    let out = run(
        BINARIES[0],
        &["--listen=127.0.0.1:0"],
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    assert_failed(
        &out,
        exit::USAGE,
        "failed to configure the Kubernetes client",
    );
}

#[test]
fn a_failed_write_is_a_runtime_failure_on_one_line() {
    let out = run(BINARIES[1], &["/nonexistent/dir/crd.yaml"], &[]);
    assert_failed(
        &out,
        exit::FAILURE,
        "failed to write /nonexistent/dir/crd.yaml: ",
    );
}

#[test]
fn crdgen_prints_to_stdout_and_rbacgen_prints_the_rbac_rules() {
    let crd = run(BINARIES[1], &["-"], &[]);
    assert_eq!(crd.status.code(), code(exit::SUCCESS));
    assert_eq!(
        String::from_utf8_lossy(&crd.stdout),
        logstream_api::crd::crd_yaml()
    );
    let rbac = run(BINARIES[2], &[], &[]);
    assert_eq!(rbac.status.code(), code(exit::SUCCESS));
    let text = String::from_utf8_lossy(&rbac.stdout);
    assert!(
        text.contains("\npipelines:\n") && text.contains("\noperatorNamespace:\n"),
        "{text}"
    );
}
