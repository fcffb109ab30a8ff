//! Test harness of the autoscaler's tests: the broker under test (from `logstream-testkit`)
//! and a replica count in memory as the scale target.

#![allow(dead_code)]

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use futures::future::BoxFuture;
use logstream_autoscaler::{ScaleError, ScaleTarget};
// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use logstream_testkit::{TestVhost, browser, eventually, publish, publish_with, unique};

/// A replica count in memory, shared with the test: what an autoscaler scales when no
/// Deployment is involved.
pub struct ReplicaCounter(pub Arc<AtomicU32>);

impl ScaleTarget for ReplicaCounter {
    fn describe(&self) -> String {
        "test counter".into()
    }
    fn replicas(&self) -> BoxFuture<'_, Result<u32, ScaleError>> {
        Box::pin(async { Ok(self.0.load(Ordering::SeqCst)) })
    }
    fn scale(&self, replicas: u32) -> BoxFuture<'_, Result<(), ScaleError>> {
        self.0.store(replicas, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}
