//! Ctrl-C as a request to stop sending: long commands finish what is in flight (await its
//! confirms, settle its dead letters) and print their summary instead of dying mid-way.

use tokio::sync::watch;

/// Exit code after a second Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Set once the user pressed Ctrl-C.
#[derive(Clone)]
pub struct StopSignal {
    stopped: watch::Receiver<bool>,
}

impl StopSignal {
    /// Watches for Ctrl-C from now on.
    pub fn on_ctrl_c() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = tx.send(true);
                eprintln!("stopping: finishing what is in flight (Ctrl-C again to quit at once)");
                // A second Ctrl-C is a person who does not want to wait.
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(EXIT_INTERRUPTED);
                }
            }
            // Keep the sender alive so `stopped()` does not fire on a closed channel.
            tx.closed().await;
        });
        Self { stopped: rx }
    }

    /// True once Ctrl-C was pressed.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves when Ctrl-C is pressed.
    pub async fn stopped(&mut self) {
        let _ = self.stopped.wait_for(|s| *s).await;
    }
}
