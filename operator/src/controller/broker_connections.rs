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
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use logstream_broker::{
    BrokerAdmin, BrokerEndpoint, BrokerError, ManagementClient, ManagementError, VhostListing,
};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One broker, credentials and vhost: the connection and the last listing of the vhost.
#[derive(Default)]
struct Held {
    admin: Option<BrokerAdmin>,
    listing: Option<Arc<VhostListing>>,
}

/// One slot: what is held, and how many first applies wait for it.
#[derive(Default)]
struct Slot {
    held: Arc<AsyncMutex<Held>>,
    first_applies_waiting: AtomicUsize,
    /// The management API client of the last connection made.
    management: Mutex<Option<ManagementClient>>,
}

/// Open administrative connections, by broker, credentials and vhost.
#[derive(Default)]
pub struct AdminConnections {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
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
    /// one, or a new one when there is none or the broker closed it. A `first` apply counts
    /// as waiting until it has the connection (see [`first_applies_waiting`]).
    ///
    /// [`first_applies_waiting`]: Self::first_applies_waiting
    pub async fn lock(
        &self,
        endpoint: &BrokerEndpoint,
        vhost: &str,
        first: bool,
    ) -> Result<AdminGuard, BrokerError> {
        let slot = self.slot(endpoint, vhost);
        let mut held = if first {
            // Counted until it has the connection, also when the reconcile is dropped.
            struct Waiting<'a>(&'a AtomicUsize);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            slot.first_applies_waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(&slot.first_applies_waiting);
            Arc::clone(&slot.held).lock_owned().await
        } else {
            Arc::clone(&slot.held).lock_owned().await
        };
        if !held.admin.as_ref().is_some_and(BrokerAdmin::is_connected) {
            if let Some(old) = held.admin.take() {
                old.close().await;
            }
            let admin = BrokerAdmin::connect(endpoint, vhost).await?;
            *slot
                .management
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(admin.management().clone());
            held.admin = Some(admin);
        }
        Ok(AdminGuard(held))
    }

    /// First applies waiting for the connection to `vhost` on `endpoint`: while there are
    /// any, rechecks leave it to them (a thousand new pipelines are not held up by the
    /// drift checks of the ones applied already).
    pub fn first_applies_waiting(&self, endpoint: &BrokerEndpoint, vhost: &str) -> usize {
        self.slot(endpoint, vhost)
            .first_applies_waiting
            .load(Ordering::SeqCst)
    }

    /// The management API client of the last connection to `vhost` on `endpoint`, without
    /// waiting for the connection; `None` before the first.
    pub fn management(&self, endpoint: &BrokerEndpoint, vhost: &str) -> Option<ManagementClient> {
        self.slot(endpoint, vhost)
            .management
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn slot(&self, endpoint: &BrokerEndpoint, vhost: &str) -> Arc<Slot> {
        let key = endpoint.connection_key(vhost);
        Arc::clone(
            self.slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default(),
        )
    }

    /// Open connections (for tests and the benchmark's accounting).
    pub fn open(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use logstream_testkit::{TestVhost, endpoint};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_apply_counts_as_waiting_until_it_has_the_connection() {
        let vhost = TestVhost::new("admin-slots").await;
        let admins = Arc::new(AdminConnections::default());
        let endpoint = endpoint();
        let held = admins.lock(&endpoint, &vhost.name, false).await.unwrap();
        assert_eq!(admins.first_applies_waiting(&endpoint, &vhost.name), 0);
        assert!(admins.management(&endpoint, &vhost.name).is_some());

        let first = tokio::spawn({
            let (admins, endpoint, vhost) = (admins.clone(), endpoint.clone(), vhost.name.clone());
            async move {
                let guard = admins.lock(&endpoint, &vhost, true).await.unwrap();
                guard.is_connected()
            }
        });
        let waiting = async {
            while admins.first_applies_waiting(&endpoint, &vhost.name) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the first apply waits");
        drop(held);
        assert!(first.await.unwrap(), "it gets the open connection");
        assert_eq!(admins.first_applies_waiting(&endpoint, &vhost.name), 0);
        assert_eq!(admins.open(), 1, "one connection for both");
    }
}
