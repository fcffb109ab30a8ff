//! Run on a machine without the cluster tools, the suite says in one line what it needs
//! and fails: it never passes silently.

use std::process::Command;

#[test]
fn without_docker_kind_kubectl_and_helm_it_prints_one_line_and_exits_non_zero() {
    let empty =
        std::env::temp_dir().join(format!("logstream-e2e-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logstream-e2e"))
        .env("PATH", &empty)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "logstream-e2e: needs docker, kind, kubectl and helm on PATH to run on a kind cluster; missing: docker, kind, kubectl, helm"
    );
}

#[test]
fn with_only_some_tools_it_names_the_missing_ones() {
    let dir = std::env::temp_dir().join(format!("logstream-e2e-some-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for tool in ["kubectl", "helm"] {
        let path = dir.join(tool);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_logstream-e2e"))
        .env("PATH", &dir)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.trim_end().ends_with("missing: docker, kind"),
        "{stderr}"
    );
}
