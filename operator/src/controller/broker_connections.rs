//! The reconciles' administrative broker connections: one AMQP connection per broker,
//! credentials and vhost, opened by the first reconcile that needs it and kept for the next
//! ones (a connection per reconcile made a thousand pipelines open and close a connection
//! every 30 ms). The reconciles of one connection take turns: a passive check of a queue
//! that does not exist yet closes the channel it ran on, which must not fail another
//! reconcile's declaration in flight. The autoscalers keep connections of their own
//! (`logstream_autoscaler::shared::SharedAdmins`) for the same reason.
//!
//! Beside each connection the slot keeps the last listing of its vhost
//! ([`VhostListing`]) for the first applies that come next: a thousand new pipelines on one
//! vhost are applied from a handful of listings instead of a thousand filtered ones, each of
//! which costs the broker the whole vhost.

use std::{
    collections::HashMap,
    ops::Deref,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use logstream_broker::{BrokerAdmin, BrokerEndpoint, BrokerError, ManagementError, VhostListing};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One broker, credentials and vhost: the connection and the last listing of the vhost.
#[derive(Default)]
struct Held {
    admin: Option<BrokerAdmin>,
    listing: Option<Arc<VhostListing>>,
}

type Slot = Arc<AsyncMutex<Held>>;

/// Open administrative connections, by broker, credentials and vhost.
#[derive(Default)]
pub struct AdminConnections {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A connection this reconcile has to itself until it drops the guard.
pub struct AdminGuard(OwnedMutexGuard<Held>);

impl Deref for AdminGuard {
    type Target = BrokerAdmin;

    fn deref(&self) -> &BrokerAdmin {
        self.0
            .admin
            .as_ref()
            .expect("an AdminGuard always holds a connection")
    }
}

impl AdminGuard {
    /// A listing of the vhost that began after `after`: the last one when it did, else a new
    /// one (kept for the reconciles that come next).
    pub async fn listing_after(
        &mut self,
        after: Instant,
    ) -> Result<Arc<VhostListing>, ManagementError> {
        if let Some(kept) = &self.0.listing
            && kept.started() > after
        {
            return Ok(Arc::clone(kept));
        }
        let listing = Arc::new(VhostListing::read(self.management(), self.vhost()).await?);
        self.0.listing = Some(Arc::clone(&listing));
        Ok(listing)
    }
}

impl AdminConnections {
    /// The connection to `vhost` on `endpoint`, once no other reconcile uses it: the open
    /// one, or a new one when there is none or the broker closed it.
    pub async fn lock(
        &self,
        endpoint: &BrokerEndpoint,
        vhost: &str,
    ) -> Result<AdminGuard, BrokerError> {
        let key = endpoint.connection_key(vhost);
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let mut held = slot.lock_owned().await;
        if !held.admin.as_ref().is_some_and(BrokerAdmin::is_connected) {
            if let Some(old) = held.admin.take() {
                old.close().await;
            }
            held.admin = Some(BrokerAdmin::connect(endpoint, vhost).await?);
        }
        Ok(AdminGuard(held))
    }

    /// Open connections (for tests and the benchmark's accounting).
    pub fn open(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
