//! Running the tools: every command is echoed before it runs, and a failure carries the
//! command line and what the tool said.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// It could not be started.
    #[error("failed to run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("failed: `{command}` exited with {status}: {stderr}")]
    Exit {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its stderr (last lines).
        stderr: String,
    },
}

/// Runs `program args…` in `dir`, feeding `stdin` when given; returns stdout.
pub fn run_in(
    dir: &Path,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    quiet: bool,
) -> Result<String, CmdError> {
    let command = format!("{program} {}", args.join(" "));
    if !quiet {
        eprintln!("+ {command}");
    }
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CmdError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| CmdError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| CmdError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(CmdError::Exit {
            command,
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
