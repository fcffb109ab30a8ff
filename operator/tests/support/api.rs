//! A mock Kubernetes API server for controller tests, on `tower_test::mock::pair`.
//!
//! A test lists the calls it expects, in order; [`MockApi`] checks each call's method, URI
//! (with its query: `fieldManager`, `force`, `labelSelector`) and JSON body, answers as the
//! API server would, checks the call against the operator's RBAC list, and records it.
//! A call the scenario does not expect fails the test.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use kube::{Client, client::Body};
use logstream_operator::rbac;
use serde_json::Value;
use tokio::task::JoinHandle;

/// A further check of a call's body.
pub type Check = Box<dyn Fn(&Value) + Send>;
/// Builds an answer from a call's body.
pub type Reply = Box<dyn Fn(&Value) -> Value + Send>;

/// One expected call and its answer.
pub struct Expect {
    pub method: &'static str,
    pub uri: String,
    /// The JSON body the call must send (`None`: no body).
    pub body: Option<Value>,
    /// JSON pointers left out of the comparison (live figures), checked by `check` instead.
    pub ignore: Vec<&'static str>,
    /// Accept any body (the test looks at it through the recorded calls).
    pub any_body: bool,
    /// Further checks on the actual body.
    pub check: Option<Check>,
    pub status: u16,
    pub response: Value,
    /// Builds the answer from the actual body (e.g. echoes an applied object).
    pub reply: Option<Reply>,
}

impl Expect {
    pub fn new(method: &'static str, uri: impl Into<String>) -> Self {
        Self {
            method,
            uri: uri.into(),
            body: None,
            ignore: Vec::new(),
            any_body: false,
            check: None,
            status: 200,
            response: Value::Null,
            reply: None,
        }
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn ignoring(mut self, pointers: &[&'static str]) -> Self {
        self.ignore.extend_from_slice(pointers);
        self
    }

    pub fn any_body(mut self) -> Self {
        self.any_body = true;
        self
    }

    pub fn checking(mut self, check: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }

    pub fn reply_with(mut self, reply: impl Fn(&Value) -> Value + Send + 'static) -> Self {
        self.reply = Some(Box::new(reply));
        self
    }

    pub fn respond(mut self, status: u16, response: Value) -> Self {
        self.status = status;
        self.response = response;
        self
    }
}

/// A call the operator made.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub uri: String,
    /// The body as sent.
    pub text: String,
}

/// The calls made so far, shared with the test (and across scenarios of one test).
pub type Calls = Arc<Mutex<Vec<Call>>>;

/// A running mock API server.
pub struct MockApi {
    pub client: Client,
    verifier: JoinHandle<()>,
}

impl MockApi {
    /// Serves `scenario`, recording every call into `calls`.
    pub fn serve(scenario: Vec<Expect>, calls: Calls) -> Self {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let verifier = tokio::spawn(async move {
            let total = scenario.len();
            for (i, expect) in scenario.into_iter().enumerate() {
                let next = tokio::time::timeout(Duration::from_secs(30), handle.next_request())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "call {i} of {total}: the operator made no further call; expected {} {}",
                            expect.method, expect.uri
                        )
                    });
                let Some((request, respond)) = next else {
                    panic!(
                        "call {i} of {total}: the client went away; expected {} {}",
                        expect.method, expect.uri
                    );
                };
                let method = request.method().to_string();
                let uri = request.uri().to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                calls.lock().unwrap().push(Call {
                    method: method.clone(),
                    uri: uri.clone(),
                    text: text.clone(),
                });

                let call = rbac::classify(&method, &uri).unwrap_or_else(|| {
                    panic!("call {i}: {method} {uri} is not a resource request")
                });
                assert!(
                    rbac::allows(&call.verb, &call.group, &call.resource),
                    "call {i}: {method} {uri} needs {} on {}/{}, which rbac::PERMISSIONS does not list",
                    call.verb,
                    call.group,
                    call.resource
                );
                assert_eq!(
                    (method.as_str(), uri.as_str()),
                    (expect.method, expect.uri.as_str()),
                    "call {i} of {total}: method and URI"
                );
                let actual: Option<Value> = if text.is_empty() {
                    None
                } else {
                    Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                        panic!(
                            "call {i}: {method} {uri} sent a body that is not JSON ({e}): {text}"
                        )
                    }))
                };
                if let (Some(check), Some(actual)) = (&expect.check, &actual) {
                    check(actual);
                }
                let strip = |v: Option<Value>| {
                    v.map(|mut v| {
                        mask_generated(&uri, &mut v);
                        for pointer in &expect.ignore {
                            remove(&mut v, pointer);
                        }
                        v
                    })
                };
                let answer = match &expect.reply {
                    Some(reply) => reply(actual.as_ref().unwrap_or(&Value::Null)),
                    None => expect.response.clone(),
                };
                let (actual, expected) = (strip(actual), strip(expect.body));
                if !expect.any_body && actual != expected {
                    panic!(
                        "call {i} of {total}: {method} {uri}: body differs\n--- expected\n{}\n--- actual\n{}",
                        pretty(&expected),
                        pretty(&actual)
                    );
                }
                let response = Response::builder()
                    .status(expect.status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                respond.send_response(response);
            }
            // Nothing more may come.
            if let Ok(Some((request, _))) =
                tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
            {
                panic!(
                    "unexpected call after the scenario: {} {}",
                    request.method(),
                    request.uri()
                );
            }
        });
        Self { client, verifier }
    }

    /// Waits for the scenario to be played to its end; re-raises its assertion failures.
    pub async fn done(self) {
        match tokio::time::timeout(Duration::from_secs(60), self.verifier).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("scenario task failed: {e}"),
            Err(_) => panic!("scenario did not finish"),
        }
    }
}

/// Event names and times are generated from the clock by kube's recorder: replaced by
/// placeholders so the rest of the body is compared exactly.
fn mask_generated(uri: &str, body: &mut Value) {
    if !uri.starts_with("/apis/events.k8s.io/") {
        return;
    }
    if body.get("eventTime").is_some() {
        body["eventTime"] = Value::from("<eventTime>");
    }
    if body.pointer("/metadata/name").is_some() {
        body["metadata"]["name"] = Value::from("<name>");
    }
}

fn remove(value: &mut Value, pointer: &str) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(key);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

fn pretty(v: &Option<Value>) -> String {
    v.as_ref().map_or("(no body)".into(), |v| {
        serde_json::to_string_pretty(v).unwrap()
    })
}

/// The body of a successful deletion's `Status` answer.
pub fn status_ok() -> Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 200
    })
}

/// The body of a Kubernetes `Status` error answer.
pub fn status_error(code: u16, reason: &str, message: &str) -> Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}
