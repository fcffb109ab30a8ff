//! The reconciles' administrative broker connections: one AMQP connection per broker,
//! credentials and vhost, opened by the first reconcile that needs it and kept for the next
//! ones (a connection per reconcile made a thousand pipelines open and close a connection
//! every 30 ms). The reconciles of one connection take turns: a passive check of a queue
//! that does not exist yet closes the channel it ran on, which must not fail another
//! reconcile's declaration in flight. The autoscalers keep connections of their own
//! (`logstream_autoscaler::shared::SharedAdmins`) for the same reason.

use std::{
    collections::HashMap,
    ops::Deref,
    sync::{Arc, Mutex, PoisonError},
};

use logstream_broker::{BrokerAdmin, BrokerEndpoint, BrokerError};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Slot = Arc<AsyncMutex<Option<BrokerAdmin>>>;

/// Open administrative connections, by broker, credentials and vhost.
#[derive(Default)]
pub struct AdminConnections {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A connection this reconcile has to itself until it drops the guard.
pub struct AdminGuard(OwnedMutexGuard<Option<BrokerAdmin>>);

impl Deref for AdminGuard {
    type Target = BrokerAdmin;

    fn deref(&self) -> &BrokerAdmin {
        self.0
            .as_ref()
            .expect("an AdminGuard always holds a connection")
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
        let mut guard = slot.lock_owned().await;
        if !guard.as_ref().is_some_and(BrokerAdmin::is_connected) {
            if let Some(old) = guard.take() {
                old.close().await;
            }
            *guard = Some(BrokerAdmin::connect(endpoint, vhost).await?);
        }
        Ok(AdminGuard(guard))
    }

    /// Open connections (for tests and the benchmark's accounting).
    pub fn open(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
