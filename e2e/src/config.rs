//! The suite's knobs, from the environment (so `make e2e` and CI need no flags).

use std::time::Duration;

/// Name of the cluster the suite creates when `KIND_CLUSTER` names none.
pub const DEFAULT_CLUSTER: &str = "logstream-e2e";

/// Why the environment could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to read {name}={value:?}: expected {expected}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    expected: &'static str,
}

/// Settings of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// kind cluster name.
    pub cluster: String,
    /// True when `KIND_CLUSTER` named an existing cluster to reuse (and keep).
    pub reuse_cluster: bool,
    /// Keep a cluster the suite created (`E2E_KEEP_CLUSTER=1`), to look around after a run.
    pub keep_cluster: bool,
    /// Namespace of the release and the pipelines (`E2E_NAMESPACE`).
    pub namespace: String,
    /// Tag of the images built and loaded (`E2E_IMAGE_TAG`).
    pub image_tag: String,
    /// Use images already loaded (`E2E_SKIP_BUILD=1`).
    pub skip_build: bool,
    /// Good logs in the burst (`E2E_MESSAGES`).
    pub messages: u64,
    /// Poison logs (over the output's maxMessageBytes) (`E2E_POISON`).
    pub poison: u64,
    /// Multiplies every deadline (`E2E_TIMEOUT_SCALE`, for slow CI machines).
    pub timeout_scale: u32,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| ConfigError {
                    name,
                    value: v,
                    expected: "a whole number",
                }),
            }
        };
        let flag = |name: &str| get(name).is_some_and(|v| v == "1" || v == "true");
        let given_cluster = get("KIND_CLUSTER").filter(|c| !c.is_empty());
        let scale = number("E2E_TIMEOUT_SCALE", 1)?;
        Ok(Self {
            reuse_cluster: given_cluster.is_some(),
            cluster: given_cluster.unwrap_or_else(|| DEFAULT_CLUSTER.to_owned()),
            keep_cluster: flag("E2E_KEEP_CLUSTER"),
            namespace: get("E2E_NAMESPACE").unwrap_or_else(|| "logstream-e2e".into()),
            image_tag: get("E2E_IMAGE_TAG").unwrap_or_else(|| "e2e".into()),
            skip_build: flag("E2E_SKIP_BUILD"),
            messages: number("E2E_MESSAGES", 30_000)?,
            poison: number("E2E_POISON", 40)?,
            timeout_scale: u32::try_from(scale.clamp(1, 20)).unwrap_or(1),
        })
    }

    /// The kubectl context of the cluster.
    pub fn context(&self) -> String {
        format!("kind-{}", self.cluster)
    }

    /// `base` stretched by the timeout scale.
    pub fn deadline(&self, base: Duration) -> Duration {
        base * self.timeout_scale
    }

    /// The local image `logstream-<name>:<tag>`.
    pub fn image(&self, name: &str) -> String {
        format!("logstream-{name}:{}", self.image_tag)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn defaults_create_a_cluster_and_kind_cluster_reuses_one() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(
            (c.cluster.as_str(), c.reuse_cluster),
            (DEFAULT_CLUSTER, false)
        );
        assert_eq!(c.context(), "kind-logstream-e2e");
        assert_eq!(c.image("worker"), "logstream-worker:e2e");
        let env = BTreeMap::from([("KIND_CLUSTER", "ci"), ("E2E_MESSAGES", "500")]);
        let c = Config::from_lookup(|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(
            (c.cluster.as_str(), c.reuse_cluster, c.messages),
            ("ci", true, 500)
        );
        let env = BTreeMap::from([("E2E_POISON", "many")]);
        let err = Config::from_lookup(|k| env.get(k).map(|v| (*v).to_owned())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to read E2E_POISON=\"many\": expected a whole number"
        );
    }
}
