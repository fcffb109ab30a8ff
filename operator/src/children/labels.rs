//! The labels of every child: the `app.kubernetes.io` recommended set plus LogStream's own
//! `logstream.io/pipeline` and `logstream.io/output`, which select an output's pods and let
//! the operator find (and prune) the children of outputs removed from the spec.

use std::collections::BTreeMap;

use crate::settings::FIELD_MANAGER;

/// Label naming the LogPipeline a child belongs to.
pub const PIPELINE: &str = "logstream.io/pipeline";
/// Label naming the output a child serves.
pub const OUTPUT: &str = "logstream.io/output";
/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`] on every child; watches select children by it.
pub const MANAGED_BY_VALUE: &str = FIELD_MANAGER;
/// `app.kubernetes.io/name` of the worker children.
pub const WORKER_APP: &str = "logstream-worker";

/// The selector of every child the operator manages, for its watches.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// The selector of the worker children of `pipeline`.
pub fn pipeline_selector(pipeline: &str) -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},{PIPELINE}={pipeline}")
}

/// Labels of the children of one output.
pub fn output(pipeline: &str, output: &str) -> BTreeMap<String, String> {
    let mut labels = common(pipeline, "worker");
    labels.insert(OUTPUT.into(), output.into());
    labels
}

/// The labels that select one output's pods (a Deployment's selector is immutable: keep it
/// to these two).
pub fn selector(pipeline: &str, output: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PIPELINE.to_owned(), pipeline.to_owned()),
        (OUTPUT.to_owned(), output.to_owned()),
    ])
}

/// Labels of an output's broker-user Secret.
pub fn worker_user(pipeline: &str, output: &str) -> BTreeMap<String, String> {
    let mut labels = common(pipeline, "broker-user");
    labels.insert(OUTPUT.into(), output.into());
    labels
}

/// True when `labels` are those of a child the operator made for `output` of `pipeline`:
/// managed by the operator, naming that pipeline and output.
pub fn belong_to(labels: &BTreeMap<String, String>, pipeline: &str, output: &str) -> bool {
    let is = |key: &str, value: &str| labels.get(key).is_some_and(|v| v == value);
    is(MANAGED_BY, MANAGED_BY_VALUE) && is(PIPELINE, pipeline) && is(OUTPUT, output)
}

fn common(pipeline: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), WORKER_APP.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), pipeline.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (PIPELINE.to_owned(), pipeline.to_owned()),
    ])
}
