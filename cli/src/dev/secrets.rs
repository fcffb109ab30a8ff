//! The `kind: Secret` documents of `logstream dev`'s manifests, so that every `secretRef` of a
//! pipeline resolves on one machine as it does in a cluster: the broker Secret gives the
//! broker (instead of `--amqp`/`--management`), the Secrets of `spec.broker.tls` its CA and
//! client certificate (instead of `--ca-file`/`--cert-file`/`--key-file`), and each Secret a
//! worker reads as files is written, one file per key and readable by the owner only, into
//! the work directory.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
};

use logstream_api::{
    LogPipeline,
    manifest::SecretData,
    worker_config::{SecretFiles, SecretUse, WorkerConfig},
};
use logstream_broker::{
    BrokerSecret, TlsMaterial, secret,
    tls::{CA_KEY, CERT_KEY, KEY_KEY},
};

use crate::{args::BrokerArgs, error::CliError};

/// The Secrets of the manifests, by name.
#[derive(Debug, Default)]
pub struct SecretStore {
    secrets: BTreeMap<String, SecretData>,
}

impl SecretStore {
    /// The Secrets `secrets` (from `parse_secrets`).
    pub fn new(secrets: BTreeMap<String, SecretData>) -> Self {
        Self { secrets }
    }

    /// How many Secrets there are.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// True when the manifests hold no Secret.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The broker Secret `pipeline` names, when the manifests hold it.
    pub fn broker(&self, pipeline: &LogPipeline) -> Result<Option<BrokerSecret>, CliError> {
        let Some(name) = secret::secret_name(&pipeline.spec.broker) else {
            return Ok(None);
        };
        let Some(data) = self.secrets.get(&name) else {
            return Ok(None);
        };
        secret::from_secret_data(&name, data)
            .map(Some)
            .map_err(|e| CliError::Usage(e.to_string()))
    }

    /// The CA and client certificate of `pipeline`'s `spec.broker.tls`, from the manifests'
    /// Secrets; `None` when the spec names none.
    pub fn broker_tls(&self, pipeline: &LogPipeline) -> Result<Option<TlsMaterial>, CliError> {
        let (ca, client) = secret::tls_secret_names(&pipeline.spec.broker);
        if ca.is_none() && client.is_none() {
            return Ok(None);
        }
        let ca = self.tls_secret(ca.as_deref(), "caSecretRef")?;
        let client = self.tls_secret(client.as_deref(), "clientCertSecretRef")?;
        secret::tls_from_secret_data(ca, client)
            .map(Some)
            .map_err(|e| CliError::Usage(e.to_string()))
    }

    /// Secret `name` of `spec.broker.tls.<field>` with its data; missing from the manifests is
    /// an error.
    fn tls_secret<'a>(
        &'a self,
        name: Option<&'a str>,
        field: &str,
    ) -> Result<Option<(&'a str, &'a SecretData)>, CliError> {
        let Some(name) = name else {
            return Ok(None);
        };
        let data = self.secrets.get(name).ok_or_else(|| {
            CliError::Usage(format!(
                "spec.broker.tls.{field} names Secret {name}: add a `kind: Secret` document named {name} to the manifest"
            ))
        })?;
        Ok(Some((name, data)))
    }

    /// Writes each Secret `config` reads as files under `dir/<use>/` and points the
    /// configuration there. `who` names the output in errors.
    pub fn materialize(
        &self,
        config: &mut WorkerConfig,
        dir: &Path,
        who: &str,
    ) -> Result<(), CliError> {
        for (use_, files) in &mut config.secrets {
            let data = self.secrets.get(&files.secret).ok_or_else(|| {
                CliError::Usage(format!(
                    "{who} needs Secret {} ({}): add a `kind: Secret` document named {} to the manifest",
                    files.secret,
                    use_.as_str(),
                    files.secret
                ))
            })?;
            let target = dir.join(use_.as_str());
            write_secret(&target, data).map_err(|e| {
                CliError::Usage(format!(
                    "failed to write Secret {} into {}: {e}",
                    files.secret,
                    target.display()
                ))
            })?;
            *files = SecretFiles {
                secret: files.secret.clone(),
                dir: target.display().to_string(),
            };
        }
        Ok(())
    }
}

/// Points `config` at the command line's `--ca-file`, `--cert-file` and `--key-file` for the
/// broker when the pipeline names no TLS Secret of its own: the files are copied under
/// `dir/<use>/` with the keys a Secret would have (`ca.crt`; `tls.crt`, `tls.key`).
pub fn materialize_tls_flags(
    config: &mut WorkerConfig,
    dir: &Path,
    flags: &BrokerArgs,
) -> Result<(), CliError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| CliError::Usage(format!("failed to read {}: {e}", path.display())))
    };
    let mut files = Vec::new();
    if let Some(ca) = &flags.ca_file
        && !config.secrets.contains_key(&SecretUse::BrokerCa)
    {
        files.push((
            SecretUse::BrokerCa,
            "--ca-file",
            SecretData::from([(CA_KEY.to_owned(), read(ca)?)]),
        ));
    }
    if let (Some(cert), Some(key)) = (&flags.cert_file, &flags.key_file)
        && !config.secrets.contains_key(&SecretUse::BrokerClientCert)
    {
        files.push((
            SecretUse::BrokerClientCert,
            "--cert-file",
            SecretData::from([
                (CERT_KEY.to_owned(), read(cert)?),
                (KEY_KEY.to_owned(), read(key)?),
            ]),
        ));
    }
    for (use_, flag, data) in files {
        let target = dir.join(use_.as_str());
        write_secret(&target, &data).map_err(|e| {
            CliError::Usage(format!(
                "failed to write {flag} into {}: {e}",
                target.display()
            ))
        })?;
        config.secrets.insert(
            use_,
            SecretFiles {
                secret: flag.to_owned(),
                dir: target.display().to_string(),
            },
        );
    }
    Ok(())
}

/// One file per key, in a directory only the owner can read, as a Secret volume would hold.
fn write_secret(dir: &Path, data: &SecretData) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for (key, value) in data {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(key))?;
        file.write_all(value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use logstream_api::{
        manifest::{parse_pipeline, parse_secrets},
        worker_config::SecretUse,
    };

    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: rabbitmq}\nstringData: {uri: \"amqp://app:p%40ss@127.0.0.1:5672/logs\"}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: loki-auth}\nstringData: {username: alice, password: s3cret}\n---\napiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: p}\nspec:\n  broker: {secretRef: {name: rabbitmq}}\n  outputs:\n    - {name: o, sink: {stdout: {}}}\n";

    #[test]
    fn the_broker_secret_of_the_manifest_gives_the_broker() {
        let store = SecretStore::new(parse_secrets(MANIFEST).unwrap());
        let pipeline = parse_pipeline(MANIFEST).unwrap();
        let broker = store.broker(&pipeline).unwrap().unwrap();
        assert_eq!(broker.vhost.as_deref(), Some("logs"));
        assert_eq!(broker.endpoint.username(), "app");
        assert!(SecretStore::default().broker(&pipeline).unwrap().is_none());
    }

    #[test]
    fn secrets_a_worker_reads_are_written_as_private_files() {
        let store = SecretStore::new(parse_secrets(MANIFEST).unwrap());
        let pipeline = parse_pipeline(MANIFEST).unwrap();
        let mut config = WorkerConfig::for_output("ns", "p", &pipeline.spec, "o").unwrap();
        config.secrets.insert(
            SecretUse::SinkAuth,
            SecretFiles::mounted("loki-auth", SecretUse::SinkAuth),
        );
        let dir =
            std::env::temp_dir().join(format!("logstream-dev-secrets-{}", std::process::id()));
        store.materialize(&mut config, &dir, "output p/o").unwrap();
        let files = &config.secrets[&SecretUse::SinkAuth];
        assert_eq!(files.dir, dir.join("sink-auth").display().to_string());
        let password = Path::new(&files.dir).join("password");
        assert_eq!(std::fs::read(&password).unwrap(), b"s3cret");
        let mode = std::fs::metadata(&password).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        config.secrets.insert(
            SecretUse::SinkHeaders,
            SecretFiles::mounted("absent", SecretUse::SinkHeaders),
        );
        let err = store
            .materialize(&mut config, &dir, "output p/o")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("output p/o needs Secret absent (sink-headers)"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
