//! The Dockerfiles: each final stage runs as a non-root user, and every package and binary a
//! Dockerfile builds or copies exists in the workspace (a renamed binary breaks the test, not
//! the release).

use std::{collections::BTreeSet, fs, process::Command};

use logstream_chart_tests::workspace_root;
use serde_json::Value;

const IMAGES: [&str; 3] = ["operator", "worker", "cli"];

/// Package names and `[[bin]]` names of the workspace, from `cargo metadata`.
fn workspace_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut packages = BTreeSet::new();
    let mut bins = BTreeSet::new();
    for package in meta["packages"].as_array().unwrap() {
        packages.insert(package["name"].as_str().unwrap().to_owned());
        for target in package["targets"].as_array().unwrap() {
            if target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "bin")
            {
                bins.insert(target["name"].as_str().unwrap().to_owned());
            }
        }
    }
    (packages, bins)
}

/// The words after `flag` in `text` (`-p x`, `--bin y`).
fn after<'a>(text: &'a str, flag: &str) -> Vec<&'a str> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1])
        .collect()
}

fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or(user);
    name == "root" || name == "0" || name.is_empty()
}

#[test]
fn every_image_runs_as_non_root_and_builds_binaries_the_workspace_has() {
    let (packages, bins) = workspace_names();
    for image in IMAGES {
        let path = workspace_root().join(format!("images/{image}.Dockerfile"));
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
        let stages: Vec<&str> = text.split("\nFROM ").collect();
        assert!(stages.len() >= 3, "{image}: a multi-stage build");
        let last = stages.last().unwrap();
        let users: Vec<&str> = last
            .lines()
            .filter_map(|l| l.trim().strip_prefix("USER "))
            .collect();
        assert!(!users.is_empty(), "{image}: the final stage sets USER");
        for user in users {
            assert!(!is_root(user.trim()), "{image}: USER {user} is root");
        }

        let built_packages = after(&text, "-p");
        let built_bins = after(&text, "--bin");
        assert!(
            !built_packages.is_empty() && !built_bins.is_empty(),
            "{image}"
        );
        for p in &built_packages {
            assert!(
                packages.contains(*p),
                "{image}: no package {p} in {packages:?}"
            );
        }
        for b in &built_bins {
            assert!(bins.contains(*b), "{image}: no binary {b} in {bins:?}");
        }
        let copied: Vec<&str> = last
            .lines()
            .filter(|l| l.starts_with("COPY --from="))
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter_map(|src| src.rsplit('/').next())
            .collect();
        assert!(!copied.is_empty(), "{image}: copies its binary");
        for name in copied {
            assert!(
                bins.contains(name),
                "{image}: copies {name}, not a workspace binary"
            );
            assert!(
                built_bins.contains(&name),
                "{image}: copies {name} it did not build"
            );
        }
    }
}

#[test]
fn root_users_are_recognised() {
    assert!(is_root("root"));
    assert!(is_root("0:0"));
    assert!(!is_root("65532:65532"));
    assert!(!is_root("nonroot"));
}

#[test]
fn the_build_context_leaves_out_targets_and_tools() {
    let ignore = fs::read_to_string(workspace_root().join(".dockerignore")).expect(".dockerignore");
    for entry in ["**/target", ".tools", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            "{entry} not ignored"
        );
    }
}
