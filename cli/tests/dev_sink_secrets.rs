//! `logstream dev` with an HTTPS sink whose credentials, headers and CA come from `kind: Secret`
//! documents of the manifest: the sink (a real HTTPS server with a CA and a certificate the
//! test makes) receives the logs with basic auth and `X-Scope-OrgID`, or with a bearer token; a
//! wrong password is refused by the sink, dead-letters nothing (the sink is down) and shows
//! nowhere (not in dev's output, the workers' logs or the rendered worker configurations); a
//! wrong CA is one clear line in the worker's log and dead-letters nothing either.

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use support::{PipelineVhost, eventually, run_logstream};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        crypto::aws_lc_rs,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

const BASIC_PASSWORD: &str = "pw-basic-3f9c2e";
const WRONG_PASSWORD: &str = "pw-wrong-81d0aa";
const TOKEN: &str = "tok-bearer-5b7e41";
const SECRET_HEADER: &str = "hdr-secret-c4a9f0";
const SECRETS: [&str; 4] = [BASIC_PASSWORD, WRONG_PASSWORD, TOKEN, SECRET_HEADER];

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated CA.
struct Pki {
    ca: String,
    other_ca: String,
    server_cert: String,
    server_key: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let ca = ca("LogStream test CA");
    let other = ca_other();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca: ca.pem(),
        other_ca: other.pem(),
        server_cert: server.pem(),
        server_key: key.serialize_pem(),
    }
}

fn ca_other() -> CertifiedIssuer<'static, KeyPair> {
    ca("Somebody else's CA")
}

/// One request the HTTPS sink received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
    org: Option<String>,
    secret_header: Option<String>,
    status: u16,
    logs: usize,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// What each path wants: basic auth with the right password, or the bearer token, and its
/// tenant header.
async fn receive(
    State(seen): State<Log>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let authorization = header("authorization");
    let org = header("x-scope-orgid");
    let ok = match path.as_str() {
        "basic" | "wrong" => {
            authorization.as_deref() == Some(basic("alice", BASIC_PASSWORD).as_str())
                && org.as_deref() == Some("tenant-a")
                && header("x-tenant-key").as_deref() == Some(SECRET_HEADER)
        }
        "bearer" => {
            authorization.as_deref() == Some(format!("Bearer {TOKEN}").as_str())
                && org.as_deref() == Some("tenant-b")
        }
        _ => false,
    };
    let logs = serde_json::from_slice::<Vec<Value>>(&body).map_or(0, |l| l.len());
    let status = if ok { 200 } else { 401 };
    seen.lock().unwrap().push(Seen {
        path,
        authorization,
        org,
        secret_header: header("x-tenant-key"),
        status,
        logs,
    });
    (
        StatusCode::from_u16(status).unwrap(),
        if ok { "ok" } else { "unauthorized" },
    )
}

/// A TLS listener for axum: the handshake happens in `accept`, a failed one is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The HTTPS sink on 127.0.0.1 with the server certificate of `pki`.
async fn https_sink(pki: &Pki) -> (u16, Log, tokio::task::JoinHandle<()>) {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.server_cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let seen: Log = Arc::default();
    let app = Router::new()
        .route("/{path}", post(receive))
        .with_state(Arc::clone(&seen));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen, task)
}

fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})
}

fn output(name: &str, url: String, http: Value) -> Value {
    let mut sink = json!({"url": url, "timeout": "5s"});
    for (k, v) in http.as_object().unwrap() {
        sink[k] = v.clone();
    }
    json!({
        "name": name,
        "bindings": [format!("{name}.*")],
        "retry": {"maxAttempts": 2, "backoff": ["1s"]},
        "sink": {"http": sink},
        "worker": {"batch": {"linger": "10ms"}},
        "scaling": {"minReplicas": 1, "maxReplicas": 1, "pollInterval": "1s"},
    })
}

/// The manifest: the Secrets, and a pipeline with one output per case.
fn manifest(pki: &Pki, port: u16) -> String {
    let ca = json!({"caSecretRef": {"name": "loki-ca"}});
    let basic_auth = json!({
        "auth": {"secretRef": {"name": "loki-auth"}},
        "headers": {"X-Scope-OrgID": "tenant-a"},
        "headersFrom": {"secretRef": {"name": "tenant-headers"}},
        "tls": ca,
    });
    let mut wrong = basic_auth.clone();
    wrong["auth"]["secretRef"]["name"] = "loki-wrong".into();
    let mut bad_ca = basic_auth.clone();
    bad_ca["tls"]["caSecretRef"]["name"] = "other-ca".into();
    let pipeline = json!({
        "apiVersion": "logstream.io/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {"name": "secure"},
        "spec": {
            "broker": {"secretRef": {"name": "rabbitmq"}},
            "outputs": [
                output("basic", format!("https://127.0.0.1:{port}/basic"), basic_auth),
                output("bearer", format!("https://localhost:{port}/bearer"), json!({
                    "auth": {"secretRef": {"name": "loki-token"}},
                    "headers": {"X-Scope-OrgID": "tenant-b"},
                    "tls": ca,
                })),
                output("wrong", format!("https://127.0.0.1:{port}/wrong"), wrong),
                output("badca", format!("https://127.0.0.1:{port}/basic"), bad_ca),
            ],
        },
    });
    [
        secret(
            "loki-auth",
            json!({"username": "alice", "password": BASIC_PASSWORD}),
        ),
        secret(
            "loki-wrong",
            json!({"username": "alice", "password": WRONG_PASSWORD}),
        ),
        secret("loki-token", json!({"token": TOKEN})),
        secret("tenant-headers", json!({"X-Tenant-Key": SECRET_HEADER})),
        secret("loki-ca", json!({"ca.crt": pki.ca})),
        secret("other-ca", json!({"ca.crt": pki.other_ca})),
        pipeline,
    ]
    .iter()
    .map(|doc| serde_yaml::to_string(doc).unwrap())
    .collect::<Vec<_>>()
    .join("---\n")
}

/// Every file under `dir`, except the Secrets `logstream dev` writes for its workers.
fn files_outside_secrets(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "secrets") {
                continue;
            }
            files_outside_secrets(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_sends_sink_credentials_headers_and_ca_from_manifest_secrets_and_never_shows_them() {
    let pki = pki();
    let (port, seen, server) = https_sink(&pki).await;
    let vhost = PipelineVhost::new("sink-secrets").await;
    let dir = std::env::temp_dir().join(support::unique("logstream-dev-sink-secrets"));
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let manifest_path = dir.join("pipeline.yaml");
    std::fs::write(&manifest_path, manifest(&pki, port)).unwrap();
    let manifest = manifest_path.to_str().unwrap();
    let stdout = dir.join("dev.stdout");
    let stderr = dir.join("dev.stderr");
    let mut dev = support::dev_command(&vhost, manifest, &work)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start logstream dev");
    eventually(
        Duration::from_secs(60),
        "dev autoscales the outputs",
        || async {
            let text = std::fs::read_to_string(&stdout).unwrap_or_default();
            text.contains("autoscaling 4 output(s)").then_some(())
        },
    )
    .await;

    for service in ["basic", "bearer", "wrong", "badca"] {
        let produced = run_logstream(
            &[
                "--vhost",
                &vhost.name,
                "produce",
                "-f",
                manifest,
                "--service",
                service,
                "--count",
                "5",
            ],
            None,
        )
        .await;
        assert_eq!(produced.code, 0, "{produced:?}");
    }

    let written = |path: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path && s.status == 200)
            .map(|s| s.logs)
            .sum::<usize>()
    };
    eventually(
        Duration::from_secs(60),
        "basic and bearer logs written",
        || async { (written("basic") >= 5 && written("bearer") >= 5).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the wrong password refused",
        || async {
            seen.lock()
                .unwrap()
                .iter()
                .any(|s| s.path == "wrong" && s.status == 401)
                .then_some(())
        },
    )
    .await;
    let tls_line = eventually(Duration::from_secs(60), "the wrong CA reported", || async {
        let mut files = Vec::new();
        files_outside_secrets(&work, &mut files);
        files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .find(|l| l.contains("TLS handshake failed"))
    })
    .await;

    // A wrong password (401) or a CA the sink's certificate does not match is the sink being
    // down, not the logs being bad: with `maxAttempts: 2` and a 1 s backoff the ladder would
    // have dead-lettered them within seconds; instead they are held, charged nothing.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for output in ["wrong", "badca"] {
        let main = format!("logstream.default.secure.{output}");
        let dead = vhost.ready(&format!("{main}.dlq")).await;
        let retrying = vhost.ready(&format!("{main}.retry.0")).await;
        let (ready, held) = eventually(Duration::from_secs(30), "all 5 logs kept", || async {
            let ready = vhost.ready(&main).await;
            let held = vhost.unacked(&main).await?;
            (ready + held == 5).then_some((ready, held))
        })
        .await;
        println!(
            "{output}: {dead} dead-lettered, {retrying} retrying, {held} held by the worker, {ready} ready"
        );
        assert_eq!(
            (dead, retrying),
            (0, 0),
            "{output}: nothing dead-lettered or retried"
        );
    }

    let (basic_written, wrong_written) = (written("basic"), written("wrong"));
    {
        let seen = seen.lock().unwrap();
        let basic = seen
            .iter()
            .find(|s| s.path == "basic" && s.status == 200)
            .unwrap();
        assert_eq!(basic.org.as_deref(), Some("tenant-a"));
        assert_eq!(basic.secret_header.as_deref(), Some(SECRET_HEADER));
        assert!(
            basic
                .authorization
                .as_deref()
                .unwrap()
                .starts_with("Basic ")
        );
        let bearer = seen
            .iter()
            .find(|s| s.path == "bearer" && s.status == 200)
            .unwrap();
        assert_eq!(
            bearer.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(bearer.org.as_deref(), Some("tenant-b"));
        assert_eq!(wrong_written, 0);
        // The wrong CA never got as far as a request: every request on /basic was answered 200.
        assert_eq!(
            seen.iter()
                .filter(|s| s.path == "basic")
                .map(|s| s.logs)
                .sum::<usize>(),
            basic_written
        );
    }
    assert!(
        tls_line.contains(&format!(
            "failed to POST to https://127.0.0.1:{port}/basic: TLS handshake failed: "
        )) && tls_line.contains("invalid peer certificate: UnknownIssuer")
            && tls_line.contains("check tls.caSecretRef"),
        "{tls_line}"
    );
    println!("wrong CA, as the worker logs it: {tls_line}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(dev.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(60), dev.wait()).await;

    // No secret value in anything a binary printed or wrote: dev's output, the workers' logs,
    // the rendered worker configurations.
    let mut files = vec![stdout.clone(), stderr.clone()];
    files_outside_secrets(&work, &mut files);
    let configs: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert_eq!(configs.len(), 4, "{files:?}");
    for config in &configs {
        let text = std::fs::read_to_string(config).unwrap();
        assert!(text.contains("secrets:"), "{text}");
    }
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "log")),
        "{files:?}"
    );
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "{} shows a secret value",
                file.display()
            );
        }
        let encoded = basic("alice", WRONG_PASSWORD);
        assert!(
            !text.contains(&encoded[6..]),
            "{} shows a credential",
            file.display()
        );
    }
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `Authorization` value of basic auth.
fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
