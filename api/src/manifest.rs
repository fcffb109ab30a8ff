//! Reading LogPipeline manifests (YAML, one or more documents) with errors that name the field,
//! and the `kind: Secret` documents beside them ([`parse_secrets`], for `logstream dev`).
//!
//! `kubectl apply` gets its errors from the API server; `logstream dev` and the tests read the
//! same files here and should be as precise: a wrong type, an unknown enum value or a misspelled
//! field is reported with its path (`spec.outputs[0].scaling.maxReplicas`).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::pipeline::LogPipeline;

/// API version of the resource.
pub const API_VERSION: &str = "logstream.io/v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "LogPipeline";

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML at all.
    #[error("document {doc}: invalid YAML: {source}")]
    Yaml {
        /// 1-based document number.
        doc: usize,
        /// The parser's error.
        source: serde_yaml::Error,
    },
    /// A LogPipeline document whose field has the wrong type or value.
    #[error("document {doc}: {path}: {message}")]
    Field {
        /// 1-based document number.
        doc: usize,
        /// Path of the field.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Fields LogStream does not know (usually a misspelling).
    #[error("document {doc}: unknown field{} {}", if paths.len() > 1 { "s" } else { "" }, paths.join(", "))]
    UnknownFields {
        /// 1-based document number.
        doc: usize,
        /// Paths of the unknown fields.
        paths: Vec<String>,
    },
    /// A document of this API group with an unsupported version.
    #[error("document {doc}: apiVersion {found:?} is not supported (expected {API_VERSION})")]
    ApiVersion {
        /// 1-based document number.
        doc: usize,
        /// What the document says.
        found: String,
    },
    /// A Secret document that cannot be read. Values are never repeated.
    #[error("document {doc}: Secret {name}: {message}")]
    Secret {
        /// 1-based document number.
        doc: usize,
        /// The Secret's name (empty when it has none).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// No LogPipeline in the input.
    #[error("no {KIND} document found (expected apiVersion: {API_VERSION}, kind: {KIND})")]
    NoPipeline,
}

/// Reads every LogPipeline document in `yaml`, skipping documents of other kinds (a Secret
/// next to the pipeline, say).
pub fn parse_pipelines(yaml: &str) -> Result<Vec<LogPipeline>, ManifestError> {
    let mut pipelines = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let doc = i + 1;
        let value =
            Value::deserialize(document).map_err(|source| ManifestError::Yaml { doc, source })?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(Value::as_str);
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind != Some(KIND) {
            continue;
        }
        if api_version != API_VERSION {
            return Err(ManifestError::ApiVersion {
                doc,
                found: api_version.to_owned(),
            });
        }
        pipelines.push(parse_value(doc, value)?);
    }
    if pipelines.is_empty() {
        return Err(ManifestError::NoPipeline);
    }
    Ok(pipelines)
}

/// Reads a manifest that must hold exactly one LogPipeline (others are an error).
pub fn parse_pipeline(yaml: &str) -> Result<LogPipeline, ManifestError> {
    let mut all = parse_pipelines(yaml)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => Err(ManifestError::Field {
            doc: 1,
            path: "kind".into(),
            message: format!("expected one {KIND}, found {n}"),
        }),
    }
}

/// A Secret's data: each key's value, decoded.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Reads every `kind: Secret` document (`apiVersion: v1`) in `yaml`, by name: `data` (base64)
/// and `stringData` (text, which wins for a key in both, as the API server does). Other
/// documents are skipped.
pub fn parse_secrets(yaml: &str) -> Result<BTreeMap<String, SecretData>, ManifestError> {
    let mut secrets = BTreeMap::new();
    for (i, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let doc = i + 1;
        let value =
            Value::deserialize(document).map_err(|source| ManifestError::Yaml { doc, source })?;
        if value.get("kind").and_then(Value::as_str) != Some("Secret") {
            continue;
        }
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let fail = |message: String| ManifestError::Secret {
            doc,
            name: name.clone(),
            message,
        };
        if name.is_empty() {
            return Err(fail("metadata.name is missing".into()));
        }
        let mut data = SecretData::new();
        for (field, base64) in [("data", true), ("stringData", false)] {
            let Some(entries) = value.get(field) else {
                continue;
            };
            let Some(entries) = entries.as_object() else {
                return Err(fail(format!("{field} must be a map of keys to values")));
            };
            for (key, v) in entries {
                let Some(text) = v.as_str() else {
                    return Err(fail(format!("{field}.{key} must be a string")));
                };
                let bytes = if base64 {
                    base64::engine::general_purpose::STANDARD
                        .decode(text.trim())
                        .map_err(|_| fail(format!("{field}.{key} is not base64")))?
                } else {
                    text.as_bytes().to_vec()
                };
                data.insert(key.clone(), bytes);
            }
        }
        secrets.insert(name, data);
    }
    Ok(secrets)
}

fn parse_value(doc: usize, mut value: Value) -> Result<LogPipeline, ManifestError> {
    // Status is written by the operator, never read from a manifest.
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    let pipeline = serde_path_to_error::deserialize::<_, LogPipeline>(&value).map_err(|e| {
        ManifestError::Field {
            doc,
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        }
    })?;
    let mut unknown = Vec::new();
    // Same input, same types: this second pass cannot fail where the first one succeeded.
    let _ = serde_ignored::deserialize::<_, _, LogPipeline>(&value, |path| {
        let path = path.to_string();
        // apiVersion and kind were checked above; Kubernetes metadata is open-ended
        // (managedFields and friends): only our own fields are checked.
        if !matches!(path.as_str(), "apiVersion" | "kind") && !path.starts_with("metadata") {
            unknown.push(bracket_indices(&path));
        }
    });
    if unknown.is_empty() {
        Ok(pipeline)
    } else {
        Err(ManifestError::UnknownFields {
            doc,
            paths: unknown,
        })
    }
}

/// `spec.outputs.0.scalling` → `spec.outputs[0].scalling`, the notation of every other error.
fn bracket_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for (i, part) in path.split('.').enumerate() {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_from_data_and_string_data_without_repeating_values() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: loki-auth}\ndata: {username: YWxpY2U=, password: b2xk}\nstringData: {password: s3cret}\n---\napiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: p}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {token: abc}\n";
        let secrets = parse_secrets(yaml).unwrap();
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets["loki-auth"]["username"], b"alice");
        assert_eq!(
            secrets["loki-auth"]["password"], b"s3cret",
            "stringData wins"
        );
        assert_eq!(secrets["token"]["token"], b"abc");

        let bad = parse_secrets(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {password: \"not base64 s3cret!\"}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(bad, "document 1: Secret s: data.password is not base64");
        let unnamed = parse_secrets("apiVersion: v1\nkind: Secret\nstringData: {a: b}\n")
            .unwrap_err()
            .to_string();
        assert!(unnamed.contains("metadata.name is missing"), "{unnamed}");
    }

    const MINIMAL: &str = r#"
apiVersion: logstream.io/v1alpha1
kind: LogPipeline
metadata: {name: app, namespace: prod}
spec:
  broker: {secretRef: {name: rabbitmq}}
  outputs:
    - name: all
      sink: {stdout: {}}
"#;

    #[test]
    fn reads_a_minimal_pipeline_and_skips_other_kinds() {
        let yaml =
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: rabbitmq}}\n---\n{MINIMAL}");
        let pipelines = parse_pipelines(&yaml).unwrap();
        assert_eq!(pipelines.len(), 1);
        assert_eq!(pipelines[0].metadata.name.as_deref(), Some("app"));
        assert_eq!(pipelines[0].spec.outputs[0].name, "all");
    }

    #[test]
    fn unknown_enum_value_names_the_field() {
        let yaml = MINIMAL.replace("broker:", "exchange: {type: banana}\n  broker:");
        let err = parse_pipeline(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.exchange.type"), "{err}");
        assert!(err.contains("banana"), "{err}");
    }

    #[test]
    fn misspelled_field_is_reported_with_its_path() {
        let yaml = MINIMAL.replace(
            "sink: {stdout: {}}",
            "sink: {stdout: {}}\n      scalling: {maxReplicas: 3}",
        );
        let err = parse_pipeline(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.outputs[0].scalling"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let yaml = MINIMAL.replace(
            "sink: {stdout: {}}",
            "sink: {stdout: {}}\n      scaling: {maxReplicas: many}",
        );
        let err = parse_pipeline(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.outputs[0].scaling.maxReplicas"), "{err}");
    }

    #[test]
    fn other_versions_and_empty_input_are_refused() {
        let yaml = MINIMAL.replace("v1alpha1", "v9");
        assert!(matches!(
            parse_pipelines(&yaml),
            Err(ManifestError::ApiVersion { .. })
        ));
        assert!(matches!(
            parse_pipelines(""),
            Err(ManifestError::NoPipeline)
        ));
        assert!(matches!(
            parse_pipelines("a: [b"),
            Err(ManifestError::Yaml { .. })
        ));
    }
}
