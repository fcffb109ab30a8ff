//! Every Kubernetes API call the operator makes, written down once.
//!
//! The controller tests check each call they see against [`PERMISSIONS`], and the Helm chart's
//! rules are generated from [`rules_file`] (`make rbac`): a ClusterRole (or, with
//! `operator.watchNamespaces`, a Role in each of those namespaces) with
//! [`Place::Pipelines`]' rules, and a Role in the operator's own namespace with
//! [`Place::OperatorNamespace`]' rules. The operator asks for exactly what it uses: least
//! privilege that cannot drift from the code.
//!
//! Secrets: `get` (the broker Secret a pipeline names, and the worker-user Secrets the
//! operator made) and `create` (those worker-user Secrets). No `list`, `watch`, `patch` or
//! `delete`: the operator cannot enumerate, follow or rewrite anybody's Secrets.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::ObjectMeta;
use serde::Serialize;

/// Where a permission is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In every namespace whose LogPipelines the operator manages.
    Pipelines,
    /// In the operator's own namespace (the leader Lease).
    OperatorNamespace,
}

/// One resource and the verbs the operator uses on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, with `/subresource` where one is used.
    pub resource: &'static str,
    /// Verbs, as RBAC spells them.
    pub verbs: &'static [&'static str],
    /// Where.
    pub place: Place,
}

/// What the operator calls, and why:
/// - LogPipelines: watched; patched to add and remove the finalizer; status applied.
/// - Secrets: the broker Secret a pipeline names is read; an output's worker-user Secret is
///   created once and read (`spec.broker.workerUsers`).
/// - ConfigMaps, Deployments, Services: read before each apply (to leave alone an object
///   of that name the operator did not make), applied, watched, listed to prune outputs that
///   were removed from the spec, and deleted then.
/// - Events: published and, when repeated, patched as a series.
/// - Deployments' scale subresource: read and patched by the autoscaler.
/// - Leases: leader election.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "logstream.io",
        resource: "logpipelines",
        verbs: &["get", "list", "watch", "patch"],
        place: Place::Pipelines,
    },
    Permission {
        group: "logstream.io",
        resource: "logpipelines/status",
        verbs: &["patch"],
        place: Place::Pipelines,
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "create"],
        place: Place::Pipelines,
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["get", "list", "watch", "patch", "delete"],
        place: Place::Pipelines,
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &["get", "list", "watch", "patch", "delete"],
        place: Place::Pipelines,
    },
    Permission {
        group: "apps",
        resource: "deployments",
        verbs: &["get", "list", "watch", "patch", "delete"],
        place: Place::Pipelines,
    },
    Permission {
        group: "apps",
        resource: "deployments/scale",
        verbs: &["get", "patch"],
        place: Place::Pipelines,
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        place: Place::Pipelines,
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        place: Place::OperatorNamespace,
    },
];

/// Name of the ClusterRole the chart installs.
pub const CLUSTER_ROLE_NAME: &str = "logstream-operator";

/// True when [`PERMISSIONS`] allows `verb` on `resource` of `group`.
pub fn allows(verb: &str, group: &str, resource: &str) -> bool {
    PERMISSIONS
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}

/// The rules of [`PERMISSIONS`] granted at `place`.
pub fn rules(place: Place) -> Vec<PolicyRule> {
    PERMISSIONS
        .iter()
        .filter(|p| p.place == place)
        .map(|p| PolicyRule {
            api_groups: Some(vec![p.group.to_owned()]),
            resources: Some(vec![p.resource.to_owned()]),
            verbs: p.verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// The ClusterRole of a cluster-wide install: the rules of [`Place::Pipelines`].
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(CLUSTER_ROLE_NAME.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(rules(Place::Pipelines)),
        ..ClusterRole::default()
    }
}

/// What `make rbac` writes to `charts/logstream/files/rbac.yaml`, which the chart's RBAC
/// templates read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RulesFile {
    /// Rules in each namespace whose LogPipelines the operator manages (a ClusterRole when
    /// it manages all).
    pub pipelines: Vec<PolicyRule>,
    /// Rules in the operator's own namespace.
    pub operator_namespace: Vec<PolicyRule>,
}

/// The rules the chart grants.
pub fn rules_file() -> RulesFile {
    RulesFile {
        pipelines: rules(Place::Pipelines),
        operator_namespace: rules(Place::OperatorNamespace),
    }
}

/// The first line of the generated rules file.
pub const RULES_FILE_HEADER: &str = "# Generated from operator/src/rbac.rs by `make rbac` (cargo run -p logstream-operator --bin rbacgen).";

/// An API call as RBAC sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiCall {
    /// RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`).
    pub verb: String,
    /// API group (`""` for the core group).
    pub group: String,
    /// Resource, with `/subresource` when the path names one.
    pub resource: String,
}

/// Reads the RBAC verb, group and resource of an HTTP request to the API server, e.g.
/// `PATCH /apis/apps/v1/namespaces/ns/deployments/x?fieldManager=..` is
/// `patch apps deployments`. `None` for paths that are not resource requests.
pub fn classify(method: &str, path_and_query: &str) -> Option<ApiCall> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, named) = match rest {
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(ApiCall {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_as_rbac_verbs_and_resources() {
        let call = |m, p| classify(m, p).map(|c| (c.verb, c.group, c.resource));
        let own = |v: &str, g: &str, r: &str| Some((v.to_owned(), g.to_owned(), r.to_owned()));
        assert_eq!(
            call(
                "PATCH",
                "/apis/apps/v1/namespaces/ns/deployments/a-b?&force=true&fieldManager=x"
            ),
            own("patch", "apps", "deployments")
        );
        assert_eq!(
            call("GET", "/api/v1/namespaces/ns/secrets/s"),
            own("get", "", "secrets")
        );
        assert_eq!(
            call(
                "GET",
                "/apis/logstream.io/v1alpha1/logpipelines?&watch=true&timeoutSeconds=290"
            ),
            own("watch", "logstream.io", "logpipelines")
        );
        assert_eq!(
            call(
                "PATCH",
                "/apis/logstream.io/v1alpha1/namespaces/ns/logpipelines/p/status?&fieldManager=x"
            ),
            own("patch", "logstream.io", "logpipelines/status")
        );
        assert_eq!(
            call(
                "GET",
                "/apis/apps/v1/namespaces/ns/deployments?&labelSelector=a%3Db"
            ),
            own("list", "apps", "deployments")
        );
        assert_eq!(call("GET", "/healthz"), None);
    }

    #[test]
    fn the_roles_grant_exactly_the_listed_permissions_and_no_secret_listing() {
        let file = rules_file();
        let rules: Vec<PolicyRule> = file
            .pipelines
            .into_iter()
            .chain(file.operator_namespace)
            .collect();
        assert_eq!(rules.len(), PERMISSIONS.len());
        assert_eq!(cluster_role().rules.unwrap().len(), PERMISSIONS.len() - 1);
        for verb in ["list", "watch", "patch", "update", "delete"] {
            assert!(!allows(verb, "", "secrets"), "{verb} on Secrets");
        }
        for (rule, p) in rules.iter().zip(PERMISSIONS) {
            assert_eq!(rule.api_groups.as_deref(), Some(&[p.group.to_owned()][..]));
            assert_eq!(
                rule.resources.as_deref(),
                Some(&[p.resource.to_owned()][..])
            );
            assert_eq!(rule.verbs, p.verbs);
        }
        assert!(allows("create", "coordination.k8s.io", "leases"));
        assert!(
            !allows("delete", "", "secrets"),
            "the operator never deletes Secrets"
        );
    }
}
