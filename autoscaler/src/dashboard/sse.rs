//! One client's server-sent event stream: first the events it missed (from the log), then
//! live events from its own `broadcast` receiver. A client too slow to keep up lags behind its
//! receiver instead of holding anyone back; when it reads again it is caught up from the log,
//! and told with an `event: lagged` when events it never saw are no longer kept.

use std::{collections::VecDeque, convert::Infallible, sync::Arc};

use axum::response::sse::Event;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{
    events::{Replay, StreamEvent},
    state::{Dashboard, Subscription},
};

/// The SSE `event:` name of a gap notice.
pub const LAGGED: &str = "lagged";

enum Pending {
    Event(Arc<StreamEvent>),
    Gap(Option<u64>),
}

struct Client {
    dashboard: Arc<Dashboard>,
    live: tokio::sync::broadcast::Receiver<Arc<StreamEvent>>,
    pending: VecDeque<Pending>,
    seen: u64,
}

impl Client {
    fn queue(&mut self, replay: Replay) {
        if let Some(missed) = replay.gap {
            self.pending.push_back(Pending::Gap(missed));
        }
        self.pending
            .extend(replay.events.into_iter().map(Pending::Event));
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            match self.pending.pop_front() {
                // Seen already: the log and the receiver overlap after a lag.
                Some(Pending::Event(e)) if e.seq <= self.seen => continue,
                Some(Pending::Event(e)) => {
                    self.seen = e.seq;
                    return Some(sse_event(&e));
                }
                Some(Pending::Gap(missed)) => return Some(gap_notice(missed)),
                None => {}
            }
            match self.live.recv().await {
                Ok(e) => self.pending.push_back(Pending::Event(e)),
                Err(RecvError::Lagged(_)) => {
                    let replay = self.dashboard.replay_after(self.seen);
                    self.queue(replay);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The SSE form of a logged event.
pub fn sse_event(e: &StreamEvent) -> Event {
    Event::default()
        .id(e.id.as_str())
        .event(e.kind.name())
        .data(e.data.as_str())
}

/// `event: lagged` with `{"missed": n}` (`null` when unknown): the client reloads the snapshot.
fn gap_notice(missed: Option<u64>) -> Event {
    Event::default()
        .event(LAGGED)
        .data(serde_json::json!({ "missed": missed }).to_string())
}

/// The event stream of one client subscribed as `subscription`; it starts with the browser's
/// reconnect delay.
pub fn client_stream(
    dashboard: Arc<Dashboard>,
    subscription: Subscription,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let retry = dashboard.settings().reconnect_after;
    let mut client = Client {
        dashboard,
        live: subscription.live,
        pending: VecDeque::new(),
        seen: subscription.seen,
    };
    client.queue(subscription.replay);
    let first = futures::stream::once(async move { Ok(Event::default().retry(retry)) });
    let rest = futures::stream::unfold(client, |mut client| async move {
        client.next().await.map(|event| (Ok(event), client))
    });
    futures::StreamExt::chain(first, rest)
}
