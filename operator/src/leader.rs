//! Leader election through a `coordination.k8s.io/v1` Lease, so that two operator replicas
//! can run and only one reconciles.
//!
//! The algorithm is client-go's: the holder renews the Lease every `retry_period`; a
//! candidate takes it over only after the Lease record stayed unchanged for a whole
//! `lease_duration` *as measured on the candidate's own clock* (so clock skew between
//! replicas does not matter); every write carries the `resourceVersion` it read, so two
//! candidates racing for it cannot both win (the loser gets 409 Conflict). A leader that
//! cannot renew for `renew_deadline` stops leading.

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::time::{Instant, sleep};
use tracing::{info, warn};

use crate::controller::Clock;

/// Name of the Lease.
pub const LEASE_NAME: &str = "logstream-operator";
/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps trying to renew before it gives up leading.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and candidates retry.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Leader election settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// Validity of the Lease without renewal.
    pub lease_duration: Duration,
    /// How long a leader may fail to renew before it stops leading.
    pub renew_deadline: Duration,
    /// Interval of renewals and acquisition attempts.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Default timings for `identity`.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            name: LEASE_NAME.into(),
            identity: identity.into(),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }
}

/// Why leading ended badly.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica holds the Lease now, or it could not be renewed in time.
    #[error("lost the leader Lease {name}: {reason}")]
    Lost {
        /// Lease name.
        name: String,
        /// What happened.
        reason: String,
    },
}

/// One replica's view of the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    clock: Clock,
    /// The Lease's resourceVersion as last seen held by someone else, and when (on our
    /// clock) it was first seen.
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    /// An elector for the Lease in `api`'s namespace.
    pub fn new(api: Api<Lease>, settings: LeaseSettings, clock: Clock) -> Self {
        Self {
            api,
            settings,
            clock,
            observed: None,
        }
    }

    fn now(&self) -> MicroTime {
        MicroTime((self.clock)())
    }

    /// One attempt: create the Lease, renew it, or take it over when it expired. `Ok(true)`
    /// when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let name = self.settings.name.clone();
        let Some(lease) = self.api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        if holder == Some(self.settings.identity.as_str()) {
            let mut renewed = lease;
            let mut spec = spec;
            spec.renew_time = Some(self.now());
            spec.lease_duration_seconds = Some(secs(self.settings.lease_duration));
            renewed.spec = Some(spec);
            return conflict_is_false(
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &renewed)
                    .await,
            );
        }

        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let now = Instant::now();
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                self.observed = Some((version, now));
                now
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.lease_duration, Duration::from_secs);
        if holder.is_some() && now.duration_since(first_seen) < duration {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
        let mut taken = lease;
        taken.spec = Some(self.held_spec(transitions));
        let won = conflict_is_false(
            self.api
                .replace(&self.settings.name, &PostParams::default(), &taken)
                .await,
        )?;
        if won {
            info!(
                previous = holder.unwrap_or("nobody"),
                "took over the leader Lease"
            );
        }
        Ok(won)
    }

    fn held_spec(&self, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(secs(self.settings.lease_duration)),
            acquire_time: Some(self.now()),
            renew_time: Some(self.now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives the Lease up (on shutdown), so a standby takes over at once instead of after
    /// the lease duration.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(self.now());
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }

    /// Waits until this replica holds the Lease; `false` when `shutdown` came first.
    pub async fn acquire(&mut self, shutdown: impl Future<Output = ()>) -> bool {
        tokio::pin!(shutdown);
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.settings.identity, lease = %self.settings.name, "leading");
                    return true;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "failed to read or write the leader Lease"),
            }
            tokio::select! {
                () = &mut shutdown => return false,
                () = sleep(self.settings.retry_period) => {}
            }
        }
    }

    /// Renews the Lease every retry period; returns when leadership is lost.
    pub async fn keep_renewing(&mut self) -> LeaderError {
        let mut renewed_at = Instant::now();
        loop {
            sleep(self.settings.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed_at = Instant::now(),
                Ok(false) => {
                    return LeaderError::Lost {
                        name: self.settings.name.clone(),
                        reason: "another replica holds it".into(),
                    };
                }
                Err(e) => {
                    warn!(error = %e, "failed to renew the leader Lease");
                    if renewed_at.elapsed() >= self.settings.renew_deadline {
                        return LeaderError::Lost {
                            name: self.settings.name.clone(),
                            reason: format!(
                                "not renewed for {}s: {e}",
                                self.settings.renew_deadline.as_secs()
                            ),
                        };
                    }
                }
            }
        }
    }

    /// Runs `work` while this replica leads: waits for the Lease, runs `work` while renewing,
    /// and releases the Lease when `work` ends. Fails when leadership is lost while `work`
    /// still runs (the caller should exit: another replica leads now).
    pub async fn lead<W, S>(
        &mut self,
        work: W,
        shutdown: S,
        on_leading: impl FnOnce(),
    ) -> Result<(), LeaderError>
    where
        W: Future<Output = ()>,
        S: Future<Output = ()>,
    {
        if !self.acquire(shutdown).await {
            return Ok(());
        }
        on_leading();
        tokio::pin!(work);
        let outcome = tokio::select! {
            () = &mut work => Ok(()),
            lost = self.keep_renewing() => Err(lost),
        };
        if outcome.is_ok()
            && let Err(e) = self.release().await
        {
            warn!(error = %e, "failed to release the leader Lease");
        }
        outcome
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        // Someone else wrote the Lease between our read and our write.
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
