//! What a person sees when something is wrong: one clear line on stderr, no stack trace, no
//! password, exit 1 for usage mistakes and 2 for runtime failures.

mod support;

use support::{PipelineVhost, Run, run_logstream};

/// Asserts the run failed with `code` and one line on stderr containing `text`, without the
/// secret or any sign of a panic.
fn assert_fails(run: &Run, code: i32, text: &str) {
    assert_eq!(run.code, code, "{run:?}");
    let stderr = run.stderr.trim_end();
    assert!(stderr.contains(text), "expected {text:?} in {stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    for bad in ["panicked", "backtrace", "s3cret-pw"] {
        assert!(!stderr.contains(bad), "{bad} in {stderr:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_with_exit_2_without_showing_it() {
    let vhost = PipelineVhost::new("password").await;
    let under_test = support::endpoint();
    let wrong = under_test
        .with_credentials(under_test.username(), "s3cret-pw")
        .with_vhost("/")
        .amqp_uri_with_password();
    for args in [
        vec!["dlq", "list", "app", "out"],
        vec!["produce", "app", "-m", "hi"],
    ] {
        let mut full = vec![
            "--amqp",
            wrong.as_str(),
            "--vhost",
            &vhost.name,
            "-n",
            "test",
        ];
        full.extend(args);
        let run = run_logstream(&full, None).await;
        assert_fails(
            &run,
            2,
            &format!(
                "refused the credentials of user {:?}",
                under_test.username()
            ),
        );
        assert!(run.stderr.contains(":***@"), "{}", run.stderr);
    }
    // The management API (status) says the same.
    let run = run_logstream(
        &[
            "--amqp",
            &wrong,
            "--vhost",
            &vhost.name,
            "-n",
            "test",
            "status",
            "app",
        ],
        None,
    )
    .await;
    assert_fails(&run, 2, "refused the credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_pipeline_or_output_fails_with_exit_2_naming_what_is_missing() {
    let vhost = PipelineVhost::new("unknown").await;
    let run = vhost.logstream(&["dlq", "list", "nope", "out"]).await;
    assert_fails(
        &run,
        2,
        &format!(
            "queue logstream.test.nope.out.dlq does not exist on vhost {:?}: is pipeline test/nope deployed",
            vhost.name
        ),
    );
    let run = vhost.logstream(&["dlq", "replay", "app", "other"]).await;
    assert_fails(&run, 2, "queue logstream.test.app.other.dlq does not exist");
    let run = vhost.logstream(&["produce", "nope", "-m", "hi"]).await;
    assert_fails(&run, 2, "exchange logstream.test.nope does not exist");
    let run = vhost.logstream(&["status", "nope"]).await;
    assert_fails(&run, 2, "pipeline test/nope does not exist");
    let run = run_logstream(
        &[
            "--vhost",
            "no-such-vhost-for-logstream",
            "dlq",
            "list",
            "a",
            "b",
        ],
        None,
    )
    .await;
    assert_fails(
        &run,
        2,
        "virtual host \"no-such-vhost-for-logstream\" does not exist",
    );

    let manifest = std::env::temp_dir().join(format!("{}.yaml", support::unique("manifest")));
    std::fs::write(
        &manifest,
        "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app, namespace: test}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs: [{name: out, sink: {stdout: {}}}]\n",
    )
    .unwrap();
    let path = manifest.to_string_lossy().into_owned();
    let run = vhost
        .logstream(&["-f", &path, "dlq", "list", "app", "audit"])
        .await;
    let _ = std::fs::remove_file(&manifest);
    assert_fails(
        &run,
        2,
        "pipeline test/app has no output \"audit\" (its outputs: out)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_with_exit_2() {
    let run = run_logstream(
        &[
            "--amqp",
            "amqp://guest:s3cret-pw@127.0.0.1:1/%2f",
            "dlq",
            "list",
            "app",
            "out",
        ],
        None,
    )
    .await;
    assert_fails(
        &run,
        2,
        "broker amqp://guest:***@127.0.0.1:1/%2F is unreachable",
    );
    let run = run_logstream(
        &[
            "--amqp",
            "amqp://guest:s3cret-pw@127.0.0.1:1/%2f",
            "--management",
            "http://127.0.0.1:1",
            "status",
        ],
        None,
    )
    .await;
    assert_fails(
        &run,
        2,
        "management API at http://127.0.0.1:1/api/queues/%2F is unreachable",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_mistakes_exit_1() {
    for (args, text) in [
        (
            vec!["produce", "app", "--bogus"],
            "unexpected argument '--bogus'",
        ),
        (
            vec!["dlq", "list", "app"],
            "required arguments were not provided",
        ),
        (
            vec!["produce", "app", "--count", "5", "--levels", "loud=1"],
            "unknown log level",
        ),
        (
            vec!["produce", "app", "-m", "x", "--count", "5"],
            "cannot be used with",
        ),
        (
            vec!["dlq", "replay", "app", "out", "--class", "sometimes"],
            "unknown error class",
        ),
        (
            vec!["produce", "app", "--burst", "5", "--count", "1"],
            "--rate",
        ),
        (
            vec!["dev"],
            "logstream dev needs a manifest: -f pipeline.yaml",
        ),
        (vec![], "Usage: logstream"),
    ] {
        let run = run_logstream(&args, None).await;
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(run.stderr.contains(text), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    // Mistakes found after parsing read like clap's: one line, exit 1.
    let run = run_logstream(&["--amqp", "http://user:s3cret-pw@host", "status"], None).await;
    assert_fails(&run, 1, "invalid AMQP URI: scheme must be amqp or amqps");
    let run = run_logstream(&["produce", "-m", "hi"], None).await;
    assert_fails(&run, 1, "name the pipeline (or give its manifest with -f)");
    let run = run_logstream(
        &["dlq", "list", "app", "out", "-f", "/nonexistent.yaml"],
        None,
    )
    .await;
    assert_fails(&run, 2, "failed to read manifest /nonexistent.yaml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_version_exit_0() {
    for args in [
        vec!["--help"],
        vec!["dlq", "replay", "--help"],
        vec!["--version"],
    ] {
        let run = run_logstream(&args, None).await;
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(!run.stdout.is_empty());
    }
}
