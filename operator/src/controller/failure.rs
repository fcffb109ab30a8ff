//! A failed reconcile step and the one place it is reported: the status gets the step's
//! conditions (each output keeping a bare entry), a Warning Event repeats the Ready message,
//! and the error goes back to the controller for its retry policy.

use kube::{Resource, ResourceExt, runtime::events::EventType};
use logstream_api::{LogPipeline, validate::ValidationErrors};
use logstream_broker::BrokerError;
use tracing::warn;

use super::{apply_topology::AppliedTopology, context::Context, error::Error};
use crate::status::{self, ConditionState, Conditions};

/// What a failed step leaves behind (boxed: it travels through every step's `Result`).
#[derive(Debug)]
pub struct Failure(Box<Failed>);

#[derive(Debug)]
struct Failed {
    /// What failed, for the controller's retry policy, metrics and logs.
    error: Error,
    /// What the status and the Event say about it; `None` when the status cannot say it
    /// (writing the status is what failed).
    notice: Option<Notice>,
}

/// What the status and the Warning Event say about a failed step.
#[derive(Debug)]
struct Notice {
    /// The step that failed, as the Event's action.
    step: &'static str,
    /// The conditions the status reports.
    conditions: Conditions,
}

impl Failure {
    /// The spec is invalid: nothing was contacted or applied.
    pub fn invalid_spec(errors: ValidationErrors) -> Self {
        Self::reported(
            "Validate",
            Conditions::invalid_spec(&errors),
            Error::InvalidSpec(errors),
        )
    }

    /// The broker Secret is missing or holds no usable credentials.
    pub fn broker_secret(error: Error) -> Self {
        let conditions = Conditions::broker_failed(error.category(), error.to_string());
        Self::reported("ReadBrokerSecret", conditions, error)
    }

    /// Applying the topology on `vhost` failed; `login` is the BrokerReachable message when
    /// the login had worked.
    pub fn topology(login: Option<&str>, vhost: &str, source: BrokerError) -> Self {
        let (reason, message) = (source.category(), source.to_string());
        let conditions = match login {
            None => Conditions::broker_failed(reason, message),
            Some(login) => Conditions::topology_failed(login, reason, message),
        };
        let error = Error::ApplyTopology {
            vhost: vhost.to_owned(),
            source,
        };
        Self::reported("ApplyTopology", conditions, error)
    }

    /// The topology is in place, but applying or pruning the workers' children failed.
    pub fn workers(topology: &AppliedTopology, error: Error) -> Self {
        let workers = ConditionState::no(error.category(), error.to_string());
        Self::reported("ApplyWorkers", topology.conditions(workers), error)
    }

    /// A failure the status cannot carry.
    pub fn unreported(error: Error) -> Self {
        Self(Box::new(Failed {
            error,
            notice: None,
        }))
    }

    fn reported(step: &'static str, conditions: Conditions, error: Error) -> Self {
        Self(Box::new(Failed {
            error,
            notice: Some(Notice { step, conditions }),
        }))
    }

    /// Writes the failure into `pipeline`'s status and a Warning Event with the same words,
    /// and returns the error. Failures to write are logged: the step's error is what counts.
    pub async fn report(self, ctx: &Context, pipeline: &LogPipeline) -> Error {
        let Failed { error, notice } = *self.0;
        let Some(Notice { step, conditions }) = notice else {
            return error;
        };
        let outputs = status::bare_outputs(
            &pipeline.namespace().unwrap_or_default(),
            &pipeline.name_any(),
            &pipeline.spec,
        );
        let status = status::build(
            pipeline.meta().generation,
            &conditions,
            outputs,
            &[],
            pipeline.status.as_ref(),
            ctx.now(),
        );
        if let Err(e) = ctx.apply_status(pipeline, &status).await {
            warn!(error = %e, "failed to write the failure into the status");
        }
        ctx.publish(
            pipeline,
            EventType::Warning,
            error.category(),
            step,
            conditions.ready().message,
        )
        .await;
        error
    }
}
