//! Per-output broker users (`spec.broker.workerUsers`): each output's workers log in as a
//! RabbitMQ user of their own that may consume only the output's main queue and publish only
//! through the default exchange (its retry and dead-letter copies), and may declare, bind,
//! purge or delete nothing.
//!
//! The password is generated once and kept in a Secret the operator creates (never patches)
//! beside the output's ConfigMap, which owns it. The user is written on the broker through the
//! management API when this process has not written it with that password and those
//! permissions yet (so a steady reconcile costs the broker nothing), and deleted with the
//! output (pruning) or the pipeline (cleanup).

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use k8s_openapi::{
    ByteString, api::core::v1::ConfigMap, api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    ResourceExt,
    api::{Api, PostParams},
};
use logstream_api::{TopologyPlan, digest};
use logstream_broker::{
    ManagementClient,
    management::{Permissions, exact_regex},
};

use super::{context::Context, error::Error};
use crate::children::{
    self, Owner, WorkerBroker, labels,
    secret::{PASSWORD_KEY, USERNAME_KEY},
};

/// What a worker user may do on its vhost: nothing to configure, publish only through the
/// default exchange (RabbitMQ checks a publish against the exchange, so this also lets it
/// publish into other queues of the vhost by name: it cannot read them), consume only the
/// output's main queue. Passive declares of its queues need none of the three (tested on
/// RabbitMQ 3.10 and 4.0).
pub fn permissions(main_queue: &str) -> Permissions {
    Permissions {
        configure: "^$".into(),
        write: "^amq\\.default$".into(),
        read: exact_regex(main_queue),
    }
}

/// The broker users this process has written, by name, with a digest of what it wrote.
#[derive(Default)]
pub struct WrittenUsers(Mutex<BTreeMap<String, String>>);

impl WrittenUsers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes sure `output`'s worker user exists: its Secret (created once, owned by
/// `config_map`) and the user on the broker with its permissions. Returns how the workers
/// log in, and the Secret's resourceVersion.
pub async fn ensure(
    ctx: &Context,
    management: &ManagementClient,
    owner: &Owner,
    plan: &TopologyPlan,
    output: &str,
    config_map: &ConfigMap,
    location: String,
) -> Result<(WorkerBroker, Option<String>), Error> {
    let ns = owner.namespace.as_str();
    let name = children::worker_user_secret_name(&owner.pipeline, output);
    let api = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let found = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::ReadChild {
            kind: "Secret",
            namespace: ns.to_owned(),
            name: name.clone(),
            source,
        })?;
    let secret = match found {
        Some(secret) => {
            if !labels::belong_to(secret.labels(), &owner.pipeline, output) {
                return Err(Error::NameConflict {
                    kind: "Secret",
                    namespace: ns.to_owned(),
                    name,
                    holder: super::apply_children::holder(secret.labels()),
                });
            }
            secret
        }
        None => {
            let user = plan.names.worker_user(output, &plan.vhost);
            let body = children::worker_user_secret(
                owner,
                output,
                reference_to(config_map),
                &user,
                &children::secret::generate_password(),
            );
            api.create(&PostParams::default(), &body)
                .await
                .map_err(|source| Error::ApplyChild {
                    kind: "Secret",
                    namespace: ns.to_owned(),
                    name: name.clone(),
                    source,
                })?
        }
    };
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .and_then(|ByteString(b)| String::from_utf8(b.clone()).ok())
            .filter(|s| !s.is_empty())
    };
    let (Some(user), Some(password)) = (text(USERNAME_KEY), text(PASSWORD_KEY)) else {
        return Err(Error::InvalidWorkerUserSecret {
            namespace: ns.to_owned(),
            name,
        });
    };
    let permissions = permissions(&plan.names.main_queue(output));
    write_user(ctx, management, &plan.vhost, &user, &password, &permissions).await?;
    Ok((
        WorkerBroker::UserKeys {
            uri: location,
            secret: name,
        },
        secret.metadata.resource_version,
    ))
}

/// Writes user `user` with `password` and `permissions` on `vhost`, unless this process
/// already did.
async fn write_user(
    ctx: &Context,
    management: &ManagementClient,
    vhost: &str,
    user: &str,
    password: &str,
    permissions: &Permissions,
) -> Result<(), Error> {
    let wanted = digest::hex(&format!(
        "{:?}|{vhost}|{password}|{permissions:?}",
        management
    ));
    if ctx.worker_users.lock().get(user) == Some(&wanted) {
        return Ok(());
    }
    let failed = |action| {
        move |source| Error::WorkerUser {
            action,
            user: user.to_owned(),
            source,
        }
    };
    management
        .put_user(user, password, "")
        .await
        .map_err(failed("create"))?;
    management
        .put_permissions(vhost, user, permissions)
        .await
        .map_err(failed("set the permissions of"))?;
    ctx.worker_users.lock().insert(user.to_owned(), wanted);
    Ok(())
}

/// Deletes the broker users of `outputs` (a missing user is fine).
pub async fn delete(
    ctx: &Context,
    management: &ManagementClient,
    plan: &TopologyPlan,
    outputs: &[String],
) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    for output in outputs {
        let user = plan.names.worker_user(output, &plan.vhost);
        management
            .delete_user(&user)
            .await
            .map_err(|source| Error::WorkerUser {
                action: "delete",
                user: user.clone(),
                source,
            })?;
        ctx.worker_users.lock().remove(&user);
        deleted.push(user);
    }
    Ok(deleted)
}

fn reference_to(config_map: &ConfigMap) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: config_map.name_any(),
        uid: config_map.uid().unwrap_or_default(),
        ..OwnerReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_user_reads_its_queue_and_publishes_through_the_default_exchange_only() {
        let p = permissions("logstream.games.game-logs.security");
        assert_eq!(p.configure, "^$");
        assert_eq!(p.write, "^amq\\.default$");
        assert_eq!(p.read, "^logstream\\.games\\.game\\-logs\\.security$");
    }
}
