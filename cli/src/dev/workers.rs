//! `logstream dev`'s [`ScaleTarget`]: local `logstream-worker` processes of one output.
//!
//! Scaling up starts processes; scaling down sends SIGTERM to the newest ones, which settle
//! their in-flight messages and exit (as a pod does in the cluster), and are killed only if
//! they outlive the grace period. A worker that dies on its own is no longer counted, so the
//! next poll starts a replacement, as a Deployment would.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::future::BoxFuture;
use logstream_api::worker_config::AMQP_URI_ENV;
use logstream_autoscaler::{ScaleError, ScaleTarget};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    process::{Child, Command},
    task::JoinSet,
};

/// How long a stopping worker may take to settle before it is killed (the worker
/// Deployment's default `terminationGracePeriodSeconds`).
pub const GRACE_PERIOD: Duration = Duration::from_secs(30);

/// How to start one worker of an output.
#[derive(Clone)]
pub struct WorkerCommand {
    /// The `logstream-worker` binary.
    pub binary: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// The broker URI, with the password (passed in the environment, as in the cluster).
    pub amqp_uri: String,
    /// Directory of the workers' output files.
    pub log_dir: PathBuf,
    /// `pipeline-output`, the prefix of the workers' names.
    pub name: String,
}

struct Worker {
    id: u32,
    child: Child,
}

#[derive(Default)]
struct State {
    running: Vec<Worker>,
    next_id: u32,
    /// Worker exits the user has not been told about yet.
    exits: Vec<String>,
}

/// The local worker processes of one output.
pub struct LocalWorkers {
    command: WorkerCommand,
    state: Mutex<State>,
    stopping: Arc<Mutex<JoinSet<()>>>,
}

impl LocalWorkers {
    /// No workers yet; they will be started with `command`.
    pub fn new(command: WorkerCommand) -> Self {
        Self {
            command,
            state: Mutex::default(),
            stopping: Arc::default(),
        }
    }

    /// Messages about workers that exited on their own since the last call.
    pub fn take_exits(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.state).exits)
    }

    /// The file a worker writes its standard output and error to.
    pub fn log_file(&self, id: u32) -> PathBuf {
        self.command
            .log_dir
            .join(format!("{}-{id}.log", self.command.name))
    }

    /// Stops every worker: SIGTERM, then waits for each to settle (killing those that
    /// outlive [`GRACE_PERIOD`]). Returns how many exited cleanly and how many did not.
    pub async fn shutdown(&self) -> (usize, usize) {
        let running = std::mem::take(&mut lock(&self.state).running);
        let mut clean = 0;
        let mut failed = 0;
        let mut waits = JoinSet::new();
        for worker in running {
            waits.spawn(terminate(worker.child, GRACE_PERIOD));
        }
        while let Some(done) = waits.join_next().await {
            match done {
                Ok(true) => clean += 1,
                _ => failed += 1,
            }
        }
        let mut stopping = std::mem::take(&mut *lock(&self.stopping));
        while stopping.join_next().await.is_some() {}
        (clean, failed)
    }

    fn spawn(&self, id: u32) -> Result<Child, ScaleError> {
        let error = |reason: String| ScaleError {
            action: "scale",
            target: self.describe(),
            reason,
        };
        let log = self.log_file(id);
        let out = File::create(&log)
            .map_err(|e| error(format!("failed to create {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| error(format!("failed to open {}: {e}", log.display())))?;
        Command::new(&self.command.binary)
            .arg("--config")
            .arg(&self.command.config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env(AMQP_URI_ENV, &self.command.amqp_uri)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Its own process group: Ctrl-C in the terminal reaches `logstream dev` only,
            // which then stops the workers in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                error(format!(
                    "failed to start {}: {e}",
                    self.command.binary.display()
                ))
            })
    }
}

impl ScaleTarget for LocalWorkers {
    fn describe(&self) -> String {
        format!("local workers {}", self.command.name)
    }

    fn replicas(&self) -> BoxFuture<'_, Result<u32, ScaleError>> {
        Box::pin(async move {
            let mut state = lock(&self.state);
            let mut exits = Vec::new();
            state.running.retain_mut(|w| match w.child.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    exits.push(format!(
                        "worker {}-{} exited ({status}); see {}",
                        self.command.name,
                        w.id,
                        self.log_file(w.id).display()
                    ));
                    false
                }
                Err(_) => false,
            });
            state.exits.extend(exits);
            Ok(u32::try_from(state.running.len()).unwrap_or(u32::MAX))
        })
    }

    fn scale(&self, replicas: u32) -> BoxFuture<'_, Result<(), ScaleError>> {
        Box::pin(async move {
            let wanted = usize::try_from(replicas).unwrap_or(usize::MAX);
            let mut state = lock(&self.state);
            while state.running.len() < wanted {
                let id = state.next_id;
                let child = self.spawn(id)?;
                state.next_id += 1;
                state.running.push(Worker { id, child });
            }
            if state.running.len() > wanted {
                let extra = state.running.split_off(wanted);
                let mut stopping = lock(&self.stopping);
                for worker in extra {
                    stopping.spawn(async move {
                        terminate(worker.child, GRACE_PERIOD).await;
                    });
                }
            }
            Ok(())
        })
    }
}

/// Sends SIGTERM and waits up to `grace` for the exit; kills after that. True when the
/// worker exited with status 0 on its own.
async fn terminate(mut child: Child, grace: Duration) -> bool {
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        // Already reaped.
        return child.wait().await.is_ok_and(|s| s.success());
    };
    if kill(Pid::from_raw(pid), Signal::SIGTERM).is_err() {
        return child.wait().await.is_ok_and(|s| s.success());
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.is_ok_and(|s| s.success()),
        Err(_) => {
            let _ = child.kill().await;
            false
        }
    }
}

/// The `logstream-worker` binary: `explicit`, else the one next to this executable, else
/// the one on `PATH`.
pub fn worker_binary(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("logstream-worker")))
        .filter(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("logstream-worker"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
