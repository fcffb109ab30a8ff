//! The shared dedup store on Redis: the ids every replica of an output wrote within the window,
//! so that a duplicate reaching another replica (or a restarted one) is not written again.
//!
//! A batch's ids are checked before it is written (one `MGET`) and the ids of what was written
//! are stored after the write and before the ACK (one pipeline of `SET key 1 PX window`): one
//! round trip each. Keys are `logstream:dedup:<namespace>/<pipeline>/<output>:<32 hex digits>`
//! (the [`DedupKey`]).
//!
//! The store only ever adds to the per-process cache ([`super::dedup::DedupCache`]), which the
//! worker keeps using. When Redis does not answer within [`STORE_TIMEOUT`] the worker says so
//! (a warning, `logstream_dedup_store_up` 0, `logstream_dedup_store_errors_total`), goes on
//! without it — never blocking or losing a delivery — and asks again after
//! [`STORE_RETRY_AFTER`]. The URL (which may hold a password) is never logged or shown.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::{
    Client,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tracing::{info, warn};

use super::dedup::DedupKey;
use crate::metrics::Metrics;

/// Longest wait for one request to the store (and for a connection to it).
pub const STORE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the worker goes without the store after it failed to answer.
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DedupStoreError {
    /// The URL is not one the client takes (the URL itself is not repeated: it may hold a
    /// password).
    #[error(
        "failed to use the dedup store URL of Secret {secret}: expected redis://[user:password@]host[:port][/db]"
    )]
    Url {
        /// The Secret.
        secret: String,
    },
}

/// The shared store.
pub struct DedupStore {
    connection: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    /// Until when the store is left alone after a failure.
    resting_until: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for DedupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Checks that `url` (from Secret `secret`) is a URL the store takes, without connecting.
pub fn client(url: &str, secret: &str) -> Result<Client, DedupStoreError> {
    let url_error = || DedupStoreError::Url {
        secret: secret.to_owned(),
    };
    if !url.starts_with("redis://") {
        return Err(url_error());
    }
    Client::open(url).map_err(|_| url_error())
}

impl DedupStore {
    /// The store behind `client` for one output (`scope` = `<namespace>/<pipeline>/<output>`),
    /// remembering ids for `window`. Connects lazily: an unreachable Redis is a warning later,
    /// not a failure now. Must be called inside the Tokio runtime.
    pub fn new(
        client: &Client,
        scope: &str,
        window: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(STORE_TIMEOUT))
            .set_response_timeout(Some(STORE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = client.get_connection_manager_lazy(config)?;
        Ok(Self {
            connection,
            prefix: format!("logstream:dedup:{scope}:"),
            ttl_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            resting_until: Mutex::new(None),
            metrics,
        })
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: DedupKey) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }

    /// Which of `keys` some worker wrote within the window; `None` when the store did not
    /// answer (then nothing is known: write).
    pub async fn written(&self, keys: &[DedupKey]) -> Option<Vec<bool>> {
        if keys.is_empty() || self.resting() {
            return None;
        }
        let mut command = redis::cmd("MGET");
        for &key in keys {
            command.arg(self.redis_key(key));
        }
        let mut connection = self.connection.clone();
        let answer = tokio::time::timeout(
            STORE_TIMEOUT,
            command.query_async::<Vec<Option<String>>>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(values)) if values.len() == keys.len() => {
                self.answered();
                Some(values.iter().map(Option::is_some).collect())
            }
            Ok(Ok(values)) => {
                self.failed(&format!(
                    "MGET answered {} values for {} keys",
                    values.len(),
                    keys.len()
                ));
                None
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {STORE_TIMEOUT:?}"));
                None
            }
        }
    }

    /// Stores `keys` as written, each for the window. False when the store did not take them.
    pub async fn remember(&self, keys: &[DedupKey]) -> bool {
        if keys.is_empty() {
            return true;
        }
        if self.resting() {
            return false;
        }
        let mut pipe = redis::pipe();
        for &key in keys {
            pipe.cmd("SET")
                .arg(self.redis_key(key))
                .arg(1)
                .arg("PX")
                .arg(self.ttl_ms)
                .ignore();
        }
        let mut connection = self.connection.clone();
        match tokio::time::timeout(STORE_TIMEOUT, pipe.query_async::<()>(&mut connection)).await {
            Ok(Ok(())) => {
                self.answered();
                true
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                false
            }
            Err(_) => {
                self.failed(&format!("no answer within {STORE_TIMEOUT:?}"));
                false
            }
        }
    }

    fn resting(&self) -> bool {
        let Ok(mut resting) = self.resting_until.lock() else {
            return false;
        };
        match *resting {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *resting = None;
                false
            }
            None => false,
        }
    }

    fn answered(&self) {
        if self.metrics.dedup_store_up.get() == 0 {
            info!("the shared dedup store answers again");
        }
        self.metrics.dedup_store_up.set(1);
    }

    fn failed(&self, reason: &str) {
        self.metrics.dedup_store_errors.inc();
        if self.metrics.dedup_store_up.get() == 1 {
            warn!(
                "failed to reach the shared dedup store: {reason}; going on with this worker's own cache (a duplicate reaching another replica may be written again) and trying again every {STORE_RETRY_AFTER:?}"
            );
        }
        self.metrics.dedup_store_up.set(0);
        if let Ok(mut resting) = self.resting_until.lock() {
            *resting = Some(Instant::now() + STORE_RETRY_AFTER);
        }
    }
}
