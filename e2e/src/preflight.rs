//! What the suite needs on the machine: docker (with a daemon that answers), kind, kubectl
//! and helm on `PATH`. Missing anything is one line naming all of it, not a stack of errors.

use std::{path::Path, process::Command};

/// The tools the suite runs.
pub const TOOLS: [&str; 4] = ["docker", "kind", "kubectl", "helm"];

/// Why the suite cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    /// Tools absent from `PATH`.
    #[error(
        "needs docker, kind, kubectl and helm on PATH to run on a kind cluster; missing: {}",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    /// docker is there but its daemon is not.
    #[error(
        "needs a running Docker daemon (kind runs the cluster in containers); `docker info` failed: {0}"
    )]
    DockerDown(String),
}

/// The tools of [`TOOLS`] not found on `path` (a `PATH`-style list).
pub fn missing_on(path: Option<&std::ffi::OsStr>) -> Vec<String> {
    let dirs: Vec<_> = path
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .collect();
    TOOLS
        .iter()
        .filter(|tool| !dirs.iter().any(|d| is_executable(&d.join(tool))))
        .map(|t| (*t).to_owned())
        .collect()
}

/// Checks the tools and the Docker daemon.
pub fn check() -> Result<(), PreflightError> {
    let missing = missing_on(std::env::var_os("PATH").as_deref());
    if !missing.is_empty() {
        return Err(PreflightError::Missing(missing));
    }
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|e| PreflightError::DockerDown(e.to_string()))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let first = why
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no answer");
        return Err(PreflightError::DockerDown(first.trim().to_owned()));
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_path_lacks_every_tool_and_says_so_in_one_line() {
        let missing = missing_on(Some(std::ffi::OsStr::new("")));
        assert_eq!(missing, TOOLS);
        let line = PreflightError::Missing(missing).to_string();
        assert!(!line.contains('\n'));
        assert!(
            line.ends_with("missing: docker, kind, kubectl, helm"),
            "{line}"
        );
    }
}
