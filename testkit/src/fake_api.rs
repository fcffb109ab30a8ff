//! A small stateful stand-in for the Kubernetes API server, over real HTTP on loopback: enough
//! for the whole operator (its watches, reconciles, status, events and Lease) to run against
//! it, in-process or as the `logstream-operator` binary (through a kubeconfig).
//!
//! LogPipelines and Secrets are what the test gives; applied children are stored and echoed
//! (a Deployment reports its replicas ready); watches stay open and quiet, so triggers come
//! from the initial list and the operator's own requeues.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{Method, StatusCode, Uri},
    response::Response,
};
use serde_json::{Value, json};

type Key = (String, String);

#[derive(Default)]
struct Inner {
    crd_missing: bool,
    pipelines: Mutex<BTreeMap<Key, Value>>,
    secrets: Mutex<BTreeMap<Key, Value>>,
    children: Mutex<BTreeMap<String, Value>>,
    lease: Mutex<Option<Value>>,
    version: AtomicU64,
    status_patches: AtomicU64,
    events: AtomicU64,
    requests: AtomicU64,
    /// Every call: method and URI.
    calls: Mutex<Vec<(String, String)>>,
}

impl Inner {
    fn next_version(&self) -> String {
        (self.version.fetch_add(1, Ordering::Relaxed) + 1000).to_string()
    }
}

/// A running fake API server.
#[derive(Clone)]
pub struct FakeApi {
    pub address: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeApi {
    /// Serves `pipelines` and `secrets` (full objects with namespace and name).
    pub async fn start(pipelines: Vec<Value>, secrets: Vec<Value>) -> Self {
        Self::start_with(pipelines, secrets, false).await
    }

    /// An API server without the LogPipeline CRD.
    pub async fn without_crd() -> Self {
        Self::start_with(Vec::new(), Vec::new(), true).await
    }

    async fn start_with(pipelines: Vec<Value>, secrets: Vec<Value>, crd_missing: bool) -> Self {
        let key = |v: &Value| {
            (
                v["metadata"]["namespace"].as_str().unwrap().to_owned(),
                v["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        };
        let inner = Arc::new(Inner {
            crd_missing,
            pipelines: Mutex::new(pipelines.into_iter().map(|p| (key(&p), p)).collect()),
            secrets: Mutex::new(secrets.into_iter().map(|s| (key(&s), s)).collect()),
            ..Inner::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, inner }
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.address).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Writes a kubeconfig for this server into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{}\"}}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: default}}\ncurrent-context: fake\n",
                self.address
            ),
        )
        .unwrap();
        path
    }

    /// The stored pipeline `namespace/name` (with the status the operator applied).
    pub fn pipeline(&self, namespace: &str, name: &str) -> Option<Value> {
        self.inner
            .pipelines
            .lock()
            .unwrap()
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Pipelines whose status has a `Ready` condition with status `True`.
    pub fn ready_pipelines(&self) -> usize {
        self.inner
            .pipelines
            .lock()
            .unwrap()
            .values()
            .filter(|p| is_ready(p))
            .count()
    }

    /// Pipelines that have any status.
    pub fn pipelines_with_status(&self) -> usize {
        self.inner
            .pipelines
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.get("status").is_some())
            .count()
    }

    /// Status applies received so far.
    pub fn status_patches(&self) -> u64 {
        self.inner.status_patches.load(Ordering::Relaxed)
    }

    /// Events received so far.
    pub fn events(&self) -> u64 {
        self.inner.events.load(Ordering::Relaxed)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Every call so far: method and URI (path and query), e.g. to check each against the
    /// operator's RBAC rules.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// The stored child at `path` (e.g. `/apis/apps/v1/namespaces/ns/deployments/x`).
    pub fn child(&self, path: &str) -> Option<Value> {
        self.inner.children.lock().unwrap().get(path).cloned()
    }
}

fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// True when `object`'s labels match the query's `labelSelector` (`k=v,k=v` only).
fn selects(query: &str, object: &Value) -> bool {
    let Some(selector) = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("labelSelector="))
    else {
        return true;
    };
    let selector = percent_encoding::percent_decode_str(selector).decode_utf8_lossy();
    selector.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => object["metadata"]["labels"][k] == v,
        None => false,
    })
}

fn answer(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// A server-side apply of a status, roughly: fields replaced, except the list-maps
/// `outputs` (by `name`) and `conditions` (by `type`), whose entries are merged so the
/// operator's and the autoscaler's applies keep each other's entries and fields.
fn merge_status(stored: &mut Value, applied: &Value) {
    let Some(applied) = applied.as_object() else {
        return;
    };
    if !stored.is_object() {
        *stored = json!({});
    }
    for (field, value) in applied {
        let key = match field.as_str() {
            "outputs" => "name",
            "conditions" => "type",
            _ => {
                stored[field] = value.clone();
                continue;
            }
        };
        let mut entries = stored[field].as_array().cloned().unwrap_or_default();
        for entry in value.as_array().into_iter().flatten() {
            match entries.iter_mut().find(|e| e[key] == entry[key]) {
                Some(existing) => {
                    for (k, v) in entry.as_object().into_iter().flatten() {
                        existing[k] = v.clone();
                    }
                }
                None => entries.push(entry.clone()),
            }
        }
        stored[field] = Value::Array(entries);
    }
}

fn not_found(what: &str) -> Response {
    answer(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "NotFound", "code": 404, "message": format!("{what} not found")}),
    )
}

/// A watch that stays open and says nothing.
fn quiet_watch() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::pending::<
            Result<Bytes, Infallible>,
        >()))
        .unwrap()
}

fn list(inner: &Inner, kind: &str, items: Vec<Value>) -> Response {
    answer(
        StatusCode::OK,
        &json!({
            "apiVersion": "v1",
            "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": inner.version.load(Ordering::Relaxed).to_string()},
            "items": items
        }),
    )
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    inner
        .calls
        .lock()
        .unwrap()
        .push((method.to_string(), uri.to_string()));
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let watch = query.split('&').any(|kv| kv == "watch=true");
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest): (&str, &[&str]) = match parts.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", group, _, rest @ ..] => (group, rest),
        _ => return not_found(&path),
    };
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns), rest),
        other => (None, other),
    };

    match (group, rest, &method) {
        ("logstream.io", ["logpipelines"], &Method::GET) => {
            if inner.crd_missing {
                return Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Body::from("404 page not found"))
                    .unwrap();
            }
            if watch {
                return quiet_watch();
            }
            let items = inner
                .pipelines
                .lock()
                .unwrap()
                .iter()
                .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                .map(|(_, p)| p.clone())
                .collect();
            list(&inner, "LogPipeline", items)
        }
        ("logstream.io", ["logpipelines", name, "status"], &Method::PATCH) => {
            let key = (namespace.unwrap_or_default().to_owned(), (*name).to_owned());
            let mut pipelines = inner.pipelines.lock().unwrap();
            let Some(p) = pipelines.get_mut(&key) else {
                return not_found(name);
            };
            merge_status(&mut p["status"], &body["status"]);
            p["metadata"]["resourceVersion"] = json!(inner.next_version());
            inner.status_patches.fetch_add(1, Ordering::Relaxed);
            answer(StatusCode::OK, p)
        }
        ("logstream.io", ["logpipelines", name], &Method::PATCH) => {
            // The finalizer's JSON patch: add or remove our finalizer.
            let key = (namespace.unwrap_or_default().to_owned(), (*name).to_owned());
            let mut pipelines = inner.pipelines.lock().unwrap();
            let Some(p) = pipelines.get_mut(&key) else {
                return not_found(name);
            };
            let adds = body
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op["op"] == "add"));
            p["metadata"]["finalizers"] = if adds {
                json!(["logstream.io/broker-cleanup"])
            } else {
                json!([])
            };
            answer(StatusCode::OK, p)
        }
        ("", ["secrets", name], &Method::GET) => {
            let key = (namespace.unwrap_or_default().to_owned(), (*name).to_owned());
            match inner.secrets.lock().unwrap().get(&key) {
                Some(secret) => answer(StatusCode::OK, secret),
                None => not_found(name),
            }
        }
        ("" | "apps", [kind], &Method::GET) => {
            if watch {
                return quiet_watch();
            }
            let prefix = format!("/{}", path.trim_start_matches('/'));
            let items = inner
                .children
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, v)| {
                    namespace.is_some()
                        && k.starts_with(&format!("{prefix}/"))
                        && selects(&query, v)
                })
                .map(|(_, v)| v.clone())
                .collect();
            let kind = match *kind {
                "deployments" => "Deployment",
                "configmaps" => "ConfigMap",
                "services" => "Service",
                _ => "Secret",
            };
            list(&inner, kind, items)
        }
        ("apps", ["deployments", name, "scale"], &Method::GET | &Method::PATCH) => {
            let prefix = format!("/{}", path.trim_start_matches('/'));
            let deployment = prefix.trim_end_matches("/scale").to_owned();
            let mut children = inner.children.lock().unwrap();
            let Some(stored) = children.get_mut(&deployment) else {
                return not_found(name);
            };
            if method == Method::PATCH {
                stored["spec"]["replicas"] = body["spec"]["replicas"].clone();
            }
            let replicas = stored["spec"]["replicas"].clone();
            answer(
                StatusCode::OK,
                &json!({
                    "apiVersion": "autoscaling/v1", "kind": "Scale",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"replicas": replicas}, "status": {"replicas": replicas}
                }),
            )
        }
        ("" | "apps", [kind, _name], &Method::PATCH) => {
            let mut applied = body;
            applied["metadata"]["resourceVersion"] = json!(inner.next_version());
            applied["metadata"]["uid"] = json!(format!("uid-{path}"));
            if *kind == "deployments" {
                // The apply leaves replicas out: the stored count (the autoscaler's) stays,
                // and a new Deployment gets the API default of one.
                let kept = inner
                    .children
                    .lock()
                    .unwrap()
                    .get(&path)
                    .map(|d| d["spec"]["replicas"].clone())
                    .filter(|r| !r.is_null());
                applied["spec"]["replicas"] = kept.unwrap_or(json!(1));
                applied["status"] =
                    json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1});
            }
            inner
                .children
                .lock()
                .unwrap()
                .insert(path.clone(), applied.clone());
            answer(StatusCode::OK, &applied)
        }
        ("events.k8s.io", ["events", ..], &Method::POST | &Method::PATCH) => {
            inner.events.fetch_add(1, Ordering::Relaxed);
            answer(StatusCode::CREATED, &body)
        }
        ("coordination.k8s.io", ["leases", ..], _) => {
            let mut lease = inner.lease.lock().unwrap();
            match method {
                Method::GET => match lease.as_ref() {
                    Some(l) => answer(StatusCode::OK, l),
                    None => not_found("lease"),
                },
                Method::POST | Method::PUT => {
                    let mut stored = body;
                    stored["metadata"]["resourceVersion"] = json!(inner.next_version());
                    *lease = Some(stored.clone());
                    answer(StatusCode::OK, &stored)
                }
                _ => not_found(&path),
            }
        }
        _ => not_found(&path),
    }
}
