//! Test harness of the operator's tests: the broker under test (a vhost per test, from
//! `logstream-testkit`), the mock API server ([`api`]), captured logs ([`logs`]), and checks
//! against the operator's RBAC rules.

#![allow(dead_code)]

pub mod api;
pub mod logs;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use logstream_testkit::{
    TestUser, TestVhost, encode, endpoint, eventually, fake_api, finish_in_drop, publish,
    publish_with, unique,
};

/// Calls to `fake` that the operator's ClusterRole (`rbac::PERMISSIONS`) does not allow.
pub fn unlisted_calls(fake: &fake_api::FakeApi) -> Vec<String> {
    fake.calls()
        .into_iter()
        .filter(|(method, uri)| {
            !logstream_operator::rbac::classify(method, uri)
                .is_some_and(|c| logstream_operator::rbac::allows(&c.verb, &c.group, &c.resource))
        })
        .map(|(method, uri)| format!("{method} {uri}"))
        .collect()
}

/// Sends SIGTERM to process `pid` (one this test started).
pub fn terminate(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid fits in i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
}

/// Asserts that a binary exited with `code` and said why in one stderr line starting with
/// `error: {start}`.
pub fn assert_failed(output: &std::process::Output, code: u8, start: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(i32::from(code)), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.starts_with(&format!("error: {start}")), "{stderr}");
}
