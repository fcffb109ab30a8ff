//! Leader election through a coordination.k8s.io/v1 Lease, against a mock API server: each
//! call is checked (method, URI, body) and answered as the API server would. Time is paused
//! and advanced by hand, so expiry is tested without waiting.

mod support;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::Api;
use logstream_operator::leader::{LeaderElector, LeaderError, LeaseSettings};
use serde_json::{Value, json};
use support::api::{Calls, Expect, MockApi, status_error};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
const NOW: &str = "2026-01-02T03:04:05Z";
const MICRO_NOW: &str = "2026-01-02T03:04:05.000000Z";

fn lease_uri() -> String {
    format!("{LEASES}/logstream-operator")
}

fn elector(api: &MockApi, identity: &str) -> LeaderElector {
    LeaderElector::new(
        Api::<Lease>::namespaced(api.client.clone(), "ops"),
        LeaseSettings::new(identity),
        Arc::new(|| NOW.parse::<Timestamp>().unwrap()),
    )
}

/// The Lease as the API server stores it.
fn lease(holder: Option<&str>, version: &str, transitions: i32) -> Value {
    let mut spec = json!({
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-01-02T02:00:00.000000Z",
        "renewTime": "2026-01-02T03:00:00.000000Z",
        "leaseTransitions": transitions
    });
    if let Some(holder) = holder {
        spec["holderIdentity"] = json!(holder);
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "logstream-operator", "namespace": "ops", "resourceVersion": version},
        "spec": spec
    })
}

fn read(answer: Value) -> Expect {
    Expect::new("GET", lease_uri()).respond(200, answer)
}

fn held_by(identity: &str, version: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "logstream-operator", "namespace": "ops", "resourceVersion": version},
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": 15,
            "acquireTime": MICRO_NOW,
            "renewTime": MICRO_NOW,
            "leaseTransitions": transitions
        }
    })
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_then_renews_it_with_its_version() {
    let api = MockApi::serve(
        vec![
            Expect::new("GET", lease_uri()).respond(
                404,
                status_error(404, "NotFound", "leases \"logstream-operator\" not found"),
            ),
            Expect::new("POST", format!("{LEASES}?"))
                .body(json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": "logstream-operator"},
                    "spec": {
                        "holderIdentity": "operator-a",
                        "leaseDurationSeconds": 15,
                        "acquireTime": MICRO_NOW,
                        "renewTime": MICRO_NOW,
                        "leaseTransitions": 0
                    }
                }))
                .respond(201, held_by("operator-a", "1", 0)),
            read(lease(Some("operator-a"), "1", 0)),
            Expect::new("PUT", format!("{}?", lease_uri()))
                .body({
                    let mut renewed = lease(Some("operator-a"), "1", 0);
                    renewed["spec"]["renewTime"] = json!(MICRO_NOW);
                    renewed
                })
                .respond(200, held_by("operator-a", "2", 0)),
        ],
        Calls::default(),
    );
    let mut a = elector(&api, "operator-a");
    assert!(a.try_acquire_or_renew().await.unwrap(), "created");
    assert!(a.try_acquire_or_renew().await.unwrap(), "renewed");
    api.done().await;
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_over_only_after_the_lease_stopped_changing_for_its_duration() {
    let api = MockApi::serve(
        vec![
            read(lease(Some("operator-a"), "5", 2)),
            read(lease(Some("operator-a"), "6", 2)),
            read(lease(Some("operator-a"), "6", 2)),
            read(lease(Some("operator-a"), "6", 2)),
            Expect::new("PUT", format!("{}?", lease_uri()))
                .body({
                    let mut taken = held_by("operator-b", "6", 3);
                    taken["metadata"]["resourceVersion"] = json!("6");
                    taken
                })
                .respond(200, held_by("operator-b", "7", 3)),
        ],
        Calls::default(),
    );
    let mut b = elector(&api, "operator-b");
    assert!(!b.try_acquire_or_renew().await.unwrap(), "held by a");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "a renewed (version 6)"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "unchanged for 10 s of 15: still a's"
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "unchanged for 16 s: taken over with the version read"
    );
    api.done().await;
}

#[tokio::test(start_paused = true)]
async fn two_standbys_racing_for_an_expired_lease_cannot_both_win() {
    let api = MockApi::serve(
        vec![
            read(lease(None, "9", 4)),
            Expect::new("PUT", format!("{}?", lease_uri()))
                .body({
                    let mut taken = held_by("operator-c", "9", 5);
                    taken["metadata"]["resourceVersion"] = json!("9");
                    taken
                })
                .respond(
                    409,
                    status_error(409, "Conflict", "the object has been modified"),
                ),
        ],
        Calls::default(),
    );
    let mut c = elector(&api, "operator-c");
    assert!(
        !c.try_acquire_or_renew().await.unwrap(),
        "a released Lease is free at once, but the other standby wrote first"
    );
    api.done().await;
}

#[tokio::test(start_paused = true)]
async fn the_leader_runs_its_work_releases_on_shutdown_and_stops_when_it_loses_the_lease() {
    // Leads, renews once, then sees another holder: leading fails while the work still runs.
    let api = MockApi::serve(
        vec![
            read(lease(Some("operator-a"), "1", 0)),
            Expect::new("PUT", format!("{}?", lease_uri()))
                .any_body()
                .respond(200, held_by("operator-a", "2", 0)),
            read(held_by("operator-a", "2", 0)),
            Expect::new("PUT", format!("{}?", lease_uri()))
                .any_body()
                .respond(200, held_by("operator-a", "3", 0)),
            read(held_by("operator-z", "4", 1)),
        ],
        Calls::default(),
    );
    let mut a = elector(&api, "operator-a");
    let mut led = false;
    let outcome = a
        .lead(std::future::pending::<()>(), std::future::pending(), || {
            led = true;
        })
        .await;
    assert!(led);
    assert!(
        matches!(&outcome, Err(LeaderError::Lost { reason, .. }) if reason == "another replica holds it"),
        "{outcome:?}"
    );
    api.done().await;

    // Work that ends (graceful shutdown) releases the Lease for a standby.
    let api = MockApi::serve(
        vec![
            read(lease(Some("operator-a"), "1", 0)),
            Expect::new("PUT", format!("{}?", lease_uri()))
                .any_body()
                .respond(200, held_by("operator-a", "2", 0)),
            read(held_by("operator-a", "2", 0)),
            Expect::new("PUT", format!("{}?", lease_uri()))
                .body({
                    let mut released = held_by("operator-a", "2", 0);
                    released["spec"]
                        .as_object_mut()
                        .unwrap()
                        .remove("holderIdentity");
                    released["spec"]["leaseDurationSeconds"] = json!(1);
                    released
                })
                .respond(200, lease(None, "3", 0)),
        ],
        Calls::default(),
    );
    let mut a = elector(&api, "operator-a");
    let outcome = a.lead(async {}, std::future::pending(), || {}).await;
    assert!(outcome.is_ok(), "{outcome:?}");
    api.done().await;
}

#[tokio::test(start_paused = true)]
async fn a_standby_waiting_for_the_lease_stops_waiting_on_shutdown() {
    let api = MockApi::serve(
        vec![read(lease(Some("operator-a"), "1", 0))],
        Calls::default(),
    );
    let mut b = elector(&api, "operator-b");
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    stop.send(()).unwrap();
    let mut ran = false;
    let outcome = b
        .lead(
            async {
                ran = true;
            },
            async {
                let _ = stopping.await;
            },
            || {},
        )
        .await;
    assert!(outcome.is_ok());
    assert!(!ran, "a standby never runs the controller");
    api.done().await;
}
