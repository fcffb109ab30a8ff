//! What the autoscalers of one vhost share: one management API request per vhost and
//! refresh interval (and a second, the consumer listing, while a quorum queue has consumers),
//! and one AMQP connection for passive declares, however many pipelines live there. Without
//! it, 100 pipelines polling every 2 s would ask the broker for the same queue list 50 times a
//! second.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use logstream_broker::{
    BrokerAdmin, BrokerEndpoint, BrokerError, ManagementClient, ManagementError, QueueStats,
};
use tracing::warn;

/// How long one answer serves every autoscaler of its vhost, at least. The broker itself
/// samples its statistics every few seconds (`collect_statistics_interval`), and depth comes
/// from a passive declare in real time, so a second changes nothing the policy could see.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How long one page of a vhost's listing serves: a listing of `n` pages (500 queues each)
/// serves `n` times this, so a vhost costs the management API at most one request per
/// second however many queues it holds (10,000 queues: a listing every 20 s; depth stays
/// real-time by passive declare).
pub const REFRESH_PER_PAGE: Duration = Duration::from_secs(1);

/// A value per key behind an async lock, so that the callers of one key wait for the one
/// filling it instead of each doing the same work.
struct Slots<T> {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<T>>>>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
        }
    }
}

impl<T> Slots<T> {
    /// The slot of `key`, empty the first time.
    fn slot(&self, key: String) -> Arc<tokio::sync::Mutex<Option<T>>> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }
}

/// The latest queue statistics per broker and vhost.
#[derive(Default)]
pub struct SharedQueueStats {
    /// When each vhost's listing becomes stale; its lock is held while one is fetched.
    slots: Slots<Instant>,
    /// The last listing of each vhost, readable while the next one is being fetched.
    latest: Mutex<HashMap<String, Arc<Vec<QueueStats>>>>,
}

impl SharedQueueStats {
    /// The queues of `admin`'s vhost, fetched at most once per [`REFRESH`], or per
    /// [`REFRESH_PER_PAGE`] times its pages when that is longer: concurrent callers wait for
    /// the one listing in flight instead of sending their own.
    pub async fn queues(
        &self,
        admin: &BrokerAdmin,
    ) -> Result<Arc<Vec<QueueStats>>, ManagementError> {
        self.queues_of(admin.endpoint(), admin.management()).await
    }

    /// [`queues`](Self::queues) of the vhost of `endpoint`, through `management`.
    pub async fn queues_of(
        &self,
        endpoint: &BrokerEndpoint,
        management: &ManagementClient,
    ) -> Result<Arc<Vec<QueueStats>>, ManagementError> {
        let (key, slot) = self.slot_of(endpoint);
        let stale_at = slot.lock().await;
        self.fill(key, stale_at, management, endpoint.vhost()).await
    }

    /// [`queues_of`](Self::queues_of), except that while a listing is being fetched the
    /// previous one is taken instead of waiting for it (for the reconciles' status figures:
    /// a listing of 10,000 queues takes 20 requests).
    pub async fn latest_or_fetch(
        &self,
        endpoint: &BrokerEndpoint,
        management: &ManagementClient,
    ) -> Result<Arc<Vec<QueueStats>>, ManagementError> {
        let (key, slot) = self.slot_of(endpoint);
        let stale_at = match slot.try_lock() {
            Ok(stale_at) => stale_at,
            Err(_) => match self.latest(&key) {
                Some(queues) => return Ok(queues),
                None => slot.lock().await,
            },
        };
        self.fill(key, stale_at, management, endpoint.vhost()).await
    }

    /// The key of `endpoint`'s vhost and its slot.
    fn slot_of(
        &self,
        endpoint: &BrokerEndpoint,
    ) -> (String, Arc<tokio::sync::Mutex<Option<Instant>>>) {
        let key = endpoint.connection_key(endpoint.vhost());
        (key.clone(), self.slots.slot(key))
    }

    /// The last listing of `key`.
    fn latest(&self, key: &str) -> Option<Arc<Vec<QueueStats>>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The latest listing of `key` while it is fresh (`stale_at`), else a new one.
    async fn fill(
        &self,
        key: String,
        mut stale_at: tokio::sync::MutexGuard<'_, Option<Instant>>,
        management: &ManagementClient,
        vhost: &str,
    ) -> Result<Arc<Vec<QueueStats>>, ManagementError> {
        if stale_at.is_some_and(|at| Instant::now() < at)
            && let Some(queues) = self.latest(&key)
        {
            return Ok(queues);
        }
        let (queues, pages) = queue_stats(management, vhost).await?;
        let pages = u32::try_from(pages).unwrap_or(u32::MAX);
        let serves = REFRESH.max(REFRESH_PER_PAGE.saturating_mul(pages));
        let queues = Arc::new(queues);
        *stale_at = Some(Instant::now() + serves);
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, queues.clone());
        Ok(queues)
    }
}

/// What an autoscaler reads of `vhost`: its queues' statistics in pages (and how many pages
/// it took), with how many consumers still consume from its quorum queues (see
/// [`ManagementClient::read_consuming`]); without the consumer listing they are read as before.
pub async fn queue_stats(
    management: &ManagementClient,
    vhost: &str,
) -> Result<(Vec<QueueStats>, usize), ManagementError> {
    let (mut queues, pages) = management.queue_stats_paged(vhost).await?;
    if let Err(e) = management.read_consuming(vhost, &mut queues).await {
        warn!(%vhost, error = %e, "consumer listing unavailable: paused workers of a quorum queue are read as consuming");
    }
    Ok((queues, pages))
}

/// One administrative AMQP connection per broker and vhost, shared by the autoscalers there
/// for their passive declares. A connection costs lapin an I/O thread and its buffers: one
/// per pipeline made 100 pipelines cost 100 threads and ~90 MiB.
#[derive(Default)]
pub struct SharedAdmins {
    slots: Slots<Arc<BrokerAdmin>>,
}

impl SharedAdmins {
    /// The connection to `vhost` on `endpoint`: the open one, or a new one when there is none
    /// or the broker closed it.
    pub async fn get(
        &self,
        endpoint: &BrokerEndpoint,
        vhost: &str,
    ) -> Result<Arc<BrokerAdmin>, BrokerError> {
        let key = endpoint.connection_key(vhost);
        let slot = self.slots.slot(key);
        let mut admin = slot.lock().await;
        if let Some(open) = admin.as_ref()
            && open.is_connected()
        {
            return Ok(open.clone());
        }
        let connected = Arc::new(BrokerAdmin::connect(endpoint, vhost).await?);
        *admin = Some(connected.clone());
        Ok(connected)
    }
}
