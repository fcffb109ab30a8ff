//! Queue statistics shared by every autoscaler of a vhost: one management API request per
//! vhost and refresh interval, however many pipelines live there. Without it, 100 pipelines
//! polling every 2 s would ask the broker for the same queue list 50 times a second.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::broker::{BrokerAdmin, ManagementError, QueueInfo};

/// How long one answer serves every autoscaler of its vhost. The broker itself samples its
/// statistics every few seconds (`collect_statistics_interval`), and depth comes from a
/// passive declare in real time, so a second changes nothing the policy could see.
pub const REFRESH: Duration = Duration::from_secs(1);

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Arc<Vec<QueueInfo>>)>>>;

/// The latest queue statistics per broker and vhost.
#[derive(Default)]
pub struct SharedQueueStats {
    slots: Mutex<HashMap<String, Slot>>,
}

impl SharedQueueStats {
    /// The queues of `admin`'s vhost, fetched at most once per [`REFRESH`]: concurrent
    /// callers wait for the one request in flight instead of sending their own.
    pub async fn queues(
        &self,
        admin: &BrokerAdmin,
    ) -> Result<Arc<Vec<QueueInfo>>, ManagementError> {
        let key = format!("{:?}|{}", admin.endpoint().management(), admin.vhost());
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some((at, queues)) = cached.as_ref()
            && at.elapsed() < REFRESH
        {
            return Ok(queues.clone());
        }
        let queues = Arc::new(admin.management().queues(admin.vhost()).await?);
        *cached = Some((Instant::now(), queues.clone()));
        Ok(queues)
    }
}
