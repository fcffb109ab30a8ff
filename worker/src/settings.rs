//! Everything the worker needs before it starts: the configuration file, the broker URI from
//! the environment (one host or a cluster's comma-separated list), the broker's CA and client
//! certificate from the Secrets the configuration names, and the address of its HTTP
//! endpoints.

use std::{net::SocketAddr, path::Path};

use logstream_api::worker_config::{
    AMQP_URI_ENV, SecretFiles, SecretUse, WorkerConfig, WorkerConfigError,
};
use logstream_broker::{
    BrokerEndpoint, EndpointError, TlsError, TlsMaterial,
    tls::{CA_KEY, CERT_KEY, KEY_KEY},
};

use crate::{
    delivery::dedup_store::{self, DedupStoreError},
    secrets::{self, SecretError},
};

/// Why the worker cannot start. The broker URI is never repeated: it holds a password.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The configuration file could not be read.
    #[error("failed to read configuration file {path}: {source}")]
    ReadConfig {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration file is not a valid worker configuration.
    #[error("failed to load configuration file {path}: {source}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        source: WorkerConfigError,
    },
    /// The environment has no broker URI.
    #[error(
        "failed to find the broker: environment variable {AMQP_URI_ENV} is not set (expected amqp://user:password@host:5672/vhost)"
    )]
    MissingUri,
    /// The broker URI does not parse, or TLS material was given for a broker without TLS.
    #[error("failed to read environment variable {AMQP_URI_ENV}: {0}")]
    Uri(#[from] EndpointError),
    /// A Secret the worker reads (the broker's CA or client certificate, the dedup store's
    /// URL) could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The broker's CA or client certificate is not PEM.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address does not parse.
    #[error("failed to use listen address {0:?}: expected ip:port, e.g. 0.0.0.0:9090")]
    Listen(String),
    /// The dedup store's URL is not usable (it is never shown: it may hold a password).
    #[error(transparent)]
    DedupStore(#[from] DedupStoreError),
}

/// The worker's settings, ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration file's content.
    pub config: WorkerConfig,
    /// Where the broker is, on the configuration's vhost.
    pub broker: BrokerEndpoint,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// The shared dedup store's client (from the `url` of the Secret the configuration names
    /// for [`SecretUse::DedupRedis`]), when the output has one. Not connected yet.
    pub dedup_store: Option<redis::Client>,
}

impl Settings {
    /// Reads the configuration at `config_path`, the broker URI `amqp_uri` (the value of
    /// [`AMQP_URI_ENV`]), and `listen_override` (`--listen`) or else the configuration's
    /// `listen`. The configuration's vhost replaces the URI's.
    pub fn load(
        config_path: &Path,
        listen_override: Option<&str>,
        amqp_uri: Option<&str>,
    ) -> Result<Self, SettingsError> {
        let path = config_path.display().to_string();
        let text =
            std::fs::read_to_string(config_path).map_err(|source| SettingsError::ReadConfig {
                path: path.clone(),
                source,
            })?;
        let config = WorkerConfig::from_yaml(&text)
            .map_err(|source| SettingsError::Config { path, source })?;
        let raw = amqp_uri
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(SettingsError::MissingUri)?;
        let broker = BrokerEndpoint::from_uri(raw, None)?
            .with_vhost(&config.vhost)
            .with_tls(broker_tls(&config)?)?;
        let listen = parse_listen(listen_override.unwrap_or(&config.listen))?;
        let dedup_store = match config.secrets.get(&SecretUse::DedupRedis) {
            Some(files) => {
                let url = secrets::read_text(files, "url")?;
                Some(dedup_store::client(&url, &files.secret)?)
            }
            None => None,
        };
        Ok(Self {
            config,
            broker,
            listen,
            dedup_store,
        })
    }
}

impl Settings {
    /// The same settings, logged in as `username` with `password` when both are given (the
    /// values of `LOGSTREAM_AMQP_USERNAME` and `LOGSTREAM_AMQP_PASSWORD`): the operator hands a
    /// Secret's `username` and `password` keys over separately, and the URI then names only
    /// where the broker is.
    #[must_use]
    pub fn with_broker_user(mut self, username: Option<&str>, password: Option<&str>) -> Self {
        if let (Some(username), Some(password)) = (username, password) {
            self.broker = self.broker.with_credentials(username, password);
        }
        self
    }
}

/// The broker's CA and client certificate, from the Secrets the configuration names
/// ([`SecretUse::BrokerCa`], [`SecretUse::BrokerClientCert`]).
fn broker_tls(config: &WorkerConfig) -> Result<TlsMaterial, SettingsError> {
    let from = |files: &SecretFiles, key: &str| format!("key {key} of Secret {}", files.secret);
    let mut tls = TlsMaterial::default();
    if let Some(files) = config.secrets.get(&SecretUse::BrokerCa) {
        tls = tls.with_ca(secrets::read_bytes(files, CA_KEY)?, &from(files, CA_KEY))?;
    }
    if let Some(files) = config.secrets.get(&SecretUse::BrokerClientCert) {
        tls = tls.with_client_cert(
            secrets::read_bytes(files, CERT_KEY)?,
            secrets::read_bytes(files, KEY_KEY)?,
            &format!("Secret {}", files.secret),
        )?;
    }
    Ok(tls)
}

/// Reads `ip:port`, or `:port` for every interface.
fn parse_listen(raw: &str) -> Result<SocketAddr, SettingsError> {
    let raw = raw.trim();
    let full = match raw.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => raw.to_owned(),
    };
    full.parse()
        .map_err(|_| SettingsError::Listen(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logstream_api::manifest::parse_pipeline;

    fn config_file(listen: &str) -> std::path::PathBuf {
        let spec = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app}\nspec:\n  broker: {secretRef: {name: r}, vhost: logs}\n  outputs:\n    - name: out\n      sink: {stdout: {}}\n",
        )
        .unwrap()
        .spec;
        let mut config = WorkerConfig::for_output("games", "app", &spec, "out").unwrap();
        config.listen = listen.into();
        let path = std::env::temp_dir().join(format!(
            "logstream-settings-{}-{}.yaml",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::write(&path, config.to_yaml()).unwrap();
        path
    }

    #[test]
    fn a_separate_user_and_password_replace_the_uris() {
        let path = config_file("0.0.0.0:9090");
        let s = Settings::load(&path, None, Some("amqps://rabbit.example:5671/"))
            .unwrap()
            .with_broker_user(Some("worker"), Some("p@ss:/w"));
        let uri = s.broker.amqp();
        assert_eq!(uri.authority.userinfo.username, "worker");
        assert_eq!(uri.authority.userinfo.password, "p@ss:/w");
        assert_eq!(uri.authority.port, 5671);
        assert_eq!(s.broker.vhost(), "logs");
        assert!(s.broker.is_tls());
        let kept = Settings::load(&path, None, Some("amqp://u:p@h/"))
            .unwrap()
            .with_broker_user(Some("only-a-name"), None);
        assert_eq!(kept.broker.amqp().authority.userinfo.username, "u");
    }

    #[test]
    fn the_configs_vhost_replaces_the_uris_and_listen_can_be_overridden() {
        let path = config_file("0.0.0.0:9090");
        let s = Settings::load(&path, None, Some("amqp://u:p%40ss@10.0.0.5:5673/%2f")).unwrap();
        assert_eq!(s.broker.vhost(), "logs");
        assert_eq!(s.listen, "0.0.0.0:9090".parse().unwrap());
        let uri = s.broker.amqp();
        assert_eq!(uri.authority.host, "10.0.0.5");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.authority.userinfo.password, "p@ss");
        assert_eq!(uri.vhost, "logs");
        let s = Settings::load(&path, Some("127.0.0.1:0"), Some("amqp://h")).unwrap();
        assert_eq!(s.listen, "127.0.0.1:0".parse().unwrap());
        let s = Settings::load(&path, Some(":9191"), Some("amqp://h")).unwrap();
        assert_eq!(s.listen, "0.0.0.0:9191".parse().unwrap());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_brokers_ca_comes_from_its_secret_files_and_needs_amqps() {
        let path = config_file("0.0.0.0:9090");
        let mut config = WorkerConfig::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let dir = path.with_extension("broker-ca");
        std::fs::create_dir_all(&dir).unwrap();
        config.secrets.insert(
            SecretUse::BrokerCa,
            SecretFiles {
                secret: "rabbit-ca".into(),
                dir: dir.display().to_string(),
            },
        );
        std::fs::write(&path, config.to_yaml()).unwrap();
        let err = Settings::load(&path, None, Some("amqps://u:s3cret@r0,r1/%2f"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("failed to read key ca.crt of Secret rabbit-ca from "),
            "{err}"
        );
        std::fs::write(dir.join("ca.crt"), "no certificate").unwrap();
        let err = Settings::load(&path, None, Some("amqps://u:s3cret@r0,r1/%2f"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "failed to read the broker's CA from key ca.crt of Secret rabbit-ca: it holds no PEM certificate"
        );
        let certs = logstream_testkit::tls::TestCerts::new();
        std::fs::write(dir.join("ca.crt"), certs.read("ca.crt")).unwrap();
        let s = Settings::load(&path, None, Some("amqps://u:s3cret@r0,r1/%2f")).unwrap();
        assert!(s.broker.tls().has_ca());
        assert_eq!(s.broker.hosts().len(), 2);
        let err = Settings::load(&path, None, Some("amqp://u:s3cret@r0/%2f"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("use an amqps:// URI") && !err.contains("s3cret"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn missing_or_bad_inputs_say_what_is_wrong_without_the_password() {
        let path = config_file("0.0.0.0:9090");
        let err = Settings::load(&path, None, None).unwrap_err().to_string();
        assert!(err.contains("LOGSTREAM_AMQP_URI is not set"), "{err}");
        let err = Settings::load(&path, None, Some("http://u:s3cret@h"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LOGSTREAM_AMQP_URI") && !err.contains("s3cret"),
            "{err}"
        );
        let err = Settings::load(&path, Some("nowhere"), Some("amqp://h"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nowhere\""), "{err}");
        let err = Settings::load(Path::new("/nonexistent.yaml"), None, Some("amqp://h"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("failed to read configuration file /nonexistent.yaml"),
            "{err}"
        );
        std::fs::write(&path, "queue: [").unwrap();
        let err = Settings::load(&path, None, Some("amqp://h"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("failed to load configuration file"),
            "{err}"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_dedup_stores_url_comes_from_its_secret_and_is_never_shown() {
        let dir = std::env::temp_dir().join(format!(
            "logstream-settings-redis-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = parse_pipeline(
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: out\n      sink: {stdout: {}}\n      worker: {dedup: {redis: {secretRef: {name: dedup}}}}\n",
        )
        .unwrap()
        .spec;
        let mut config = WorkerConfig::for_output("games", "app", &spec, "out").unwrap();
        config.secrets.get_mut(&SecretUse::DedupRedis).unwrap().dir = dir.display().to_string();
        let path = dir.join("worker.yaml");
        std::fs::write(&path, config.to_yaml()).unwrap();

        let err = Settings::load(&path, None, Some("amqp://h"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("failed to read key url of Secret dedup"),
            "{err}"
        );
        std::fs::write(dir.join("url"), "http://u:s3cret@redis:6379/0\n").unwrap();
        let err = Settings::load(&path, None, Some("amqp://h"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Secret dedup") && !err.contains("s3cret"),
            "{err}"
        );
        std::fs::write(dir.join("url"), "redis://u:s3cret@redis:6379/0\n").unwrap();
        let s = Settings::load(&path, None, Some("amqp://h")).unwrap();
        assert!(s.dedup_store.is_some());
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
