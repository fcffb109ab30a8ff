//! Locating `helm` and `kubernetes-validate`: the project's `.tools/bin` first (where
//! `scripts/install-chart-tools.sh` puts them), then `PATH`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::workspace_root;

/// Why a tool could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Neither `.tools/bin` nor `PATH` has it.
    #[error(
        "failed to find {tool} in {tools_dir} or on PATH: run `make chart-tools` (scripts/install-chart-tools.sh) first"
    )]
    Missing {
        /// The tool.
        tool: String,
        /// Where the project installs it.
        tools_dir: String,
    },
    /// It could not be started.
    #[error("failed to run {tool}: {source}")]
    Spawn {
        /// The tool.
        tool: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The path of `tool`, from `.tools/bin` or `PATH`.
pub fn find(tool: &str) -> Result<PathBuf, ToolError> {
    let tools_dir = workspace_root().join(".tools").join("bin");
    let local = tools_dir.join(tool);
    if is_executable(&local) {
        return Ok(local);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
        .ok_or_else(|| ToolError::Missing {
            tool: tool.to_owned(),
            tools_dir: tools_dir.display().to_string(),
        })
}

/// Runs `tool` with `args` in the workspace root and returns its output (whatever the exit
/// status: callers assert on it).
pub fn run(tool: &str, args: &[&str]) -> Result<Output, ToolError> {
    let path = find(tool)?;
    Command::new(&path)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .map_err(|source| ToolError::Spawn {
            tool: tool.to_owned(),
            source,
        })
}

/// The newest Kubernetes version kubernetes-validate ships schemas for (e.g. `1.37.0`),
/// asked from the tool's own library in the venv next to it.
pub fn newest_validate_version() -> Result<String, ToolError> {
    let venv_python = workspace_root().join(".tools/venv/bin/python");
    let python = if is_executable(&venv_python) {
        venv_python
    } else {
        find("python3")?
    };
    let out = Command::new(&python)
        .args([
            "-c",
            "import kubernetes_validate.utils as u; print(u.latest_version())",
        ])
        .output()
        .map_err(|source| ToolError::Spawn {
            tool: python.display().to_string(),
            source,
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || version.is_empty() {
        return Err(ToolError::Missing {
            tool: "the kubernetes_validate Python module".into(),
            tools_dir: ".tools/venv".into(),
        });
    }
    Ok(version)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
