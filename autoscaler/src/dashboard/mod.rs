//! The live dashboard served by LogStream itself (the operator's HTTP port and `logstream dev`):
//! every pipeline's outputs with their latest figures, 15 minutes of history, the recent
//! scaling decisions, and a server-sent event stream of samples, decisions and errors.
//!
//! - [`figures`]: what one autoscaler record becomes on the page (pure);
//! - [`history`]: the bounded ring of per-output samples behind the charts (pure);
//! - [`events`]: the numbered event log that lets a reconnecting client catch up;
//! - [`state`]: [`Dashboard`], fed by the autoscaler's broadcast of [`ScaleRecord`]s;
//! - [`sse`]: one client's event stream (backlog first, then live, lag reported);
//! - [`routes`]: the page, its embedded assets and the JSON/SSE endpoints.
//!
//! The autoscaler never waits for the dashboard, and the dashboard never waits for a client:
//! records arrive through a `broadcast` channel, [`Dashboard::record`] only takes a short lock,
//! and every SSE client reads from its own `broadcast` receiver, which lags instead of blocking.
//!
//! [`ScaleRecord`]: crate::scaling::ScaleRecord

pub mod events;
pub mod figures;
pub mod history;
pub mod routes;
pub mod sse;
pub mod state;

use std::time::Duration;

pub use events::{EventKind, StreamEvent};
pub use figures::{ErrorReport, FlowRates, OutputSample, Replicas, ScaleEvent};
pub use history::{History, HistoryPoint};
pub use routes::router;
pub use state::{Dashboard, OutputView, PipelineView, Snapshot};

/// Width of one history bucket: the charts show one point per bucket.
pub const HISTORY_BUCKET: Duration = Duration::from_secs(5);
/// How far back the charts go.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Scaling decisions kept for the page (all pipelines together).
pub const DECISIONS_KEPT: usize = 50;
/// Events kept for clients that reconnect with `Last-Event-ID`: a browser's 2 s reconnect
/// with 250 outputs polled every second; one who missed more reloads the snapshot. Each kept
/// event holds its JSON (about 0.5 KiB for a sample), so this is part of the operator's memory.
pub const BACKLOG_EVENTS: usize = 512;
/// Events a client may fall behind before it is told it lagged.
pub const CLIENT_BUFFER: usize = 256;
/// How often an idle event stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting a dropped event stream (SSE `retry:`).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// The dashboard's limits; [`Default`] gives the documented constants above.
#[derive(Clone, Debug)]
pub struct DashboardSettings {
    /// Width of one history bucket.
    pub history_bucket: Duration,
    /// How far back the history goes.
    pub history_window: Duration,
    /// Scaling decisions kept.
    pub decisions_kept: usize,
    /// Events kept for reconnecting clients.
    pub backlog_events: usize,
    /// Events one client may fall behind before it lags.
    pub client_buffer: usize,
    /// Keep-alive comment interval of the event stream.
    pub keep_alive: Duration,
    /// Reconnect delay suggested to browsers.
    pub reconnect_after: Duration,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            history_bucket: HISTORY_BUCKET,
            history_window: HISTORY_WINDOW,
            decisions_kept: DECISIONS_KEPT,
            backlog_events: BACKLOG_EVENTS,
            client_buffer: CLIENT_BUFFER,
            keep_alive: KEEP_ALIVE,
            reconnect_after: RECONNECT_AFTER,
        }
    }
}
