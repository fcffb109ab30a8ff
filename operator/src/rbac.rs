//! Every Kubernetes API call the operator makes, written down once.
//!
//! The controller tests check each call they see against [`PERMISSIONS`], and the Helm chart's
//! ClusterRole is rendered from (or checked against) [`cluster_role`], so the operator asks for
//! exactly what it uses: least privilege that cannot drift from the code.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::ObjectMeta;

/// One resource and the verbs the operator uses on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, with `/subresource` where one is used.
    pub resource: &'static str,
    /// Verbs, as RBAC spells them.
    pub verbs: &'static [&'static str],
}

/// What the operator calls, and why:
/// - LogPipelines: watched; patched to add and remove the finalizer; status applied.
/// - Secrets: the broker Secret is read; the derived per-pipeline Secret is applied and
///   watched (as an owned child).
/// - ConfigMaps, Deployments, Services: applied, watched, listed to prune outputs that were
///   removed from the spec, and deleted then.
/// - Events: published and, when repeated, patched as a series.
/// - Deployments' scale subresource: read and patched by the autoscaler.
/// - Leases: leader election.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "logstream.io",
        resource: "logpipelines",
        verbs: &["get", "list", "watch", "patch"],
    },
    Permission {
        group: "logstream.io",
        resource: "logpipelines/status",
        verbs: &["patch"],
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch", "patch"],
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["list", "watch", "patch", "delete"],
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &["list", "watch", "patch", "delete"],
    },
    Permission {
        group: "apps",
        resource: "deployments",
        verbs: &["list", "watch", "patch", "delete"],
    },
    Permission {
        group: "apps",
        resource: "deployments/scale",
        verbs: &["get", "patch"],
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
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

/// The ClusterRole granting exactly [`PERMISSIONS`].
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(CLUSTER_ROLE_NAME.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(
            PERMISSIONS
                .iter()
                .map(|p| PolicyRule {
                    api_groups: Some(vec![p.group.to_owned()]),
                    resources: Some(vec![p.resource.to_owned()]),
                    verbs: p.verbs.iter().map(|v| (*v).to_owned()).collect(),
                    ..PolicyRule::default()
                })
                .collect(),
        ),
        ..ClusterRole::default()
    }
}

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
    fn the_cluster_role_grants_exactly_the_listed_permissions() {
        let role = cluster_role();
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), PERMISSIONS.len());
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
