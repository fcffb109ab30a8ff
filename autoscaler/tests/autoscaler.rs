//! The autoscaler loop against the real broker: readings become decisions that reach the
//! scale target.

mod support;

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use logstream_autoscaler::{OutputScaling, PipelineAutoscaler};
use support::{ReplicaCounter, TestVhost, publish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_the_broker_scales_the_target_in_one_poll_and_a_gap_holds_it() {
    let vhost = TestVhost::new("autoscaler").await;
    let (pipeline, p, admin) = vhost
        .apply_manifest(
            "test",
            "apiVersion: logstream.io/v1alpha1\nkind: LogPipeline\nmetadata: {name: app}\nspec:\n  broker: {secretRef: {name: r}}\n  outputs:\n    - name: o\n      sink: {stdout: {}}\n      scaling: {minReplicas: 1, maxReplicas: 8, targetBacklogPerReplica: 100}\n",
        )
        .await;

    let (_conn, channel) = vhost.confirm_channel().await;
    for _ in 0..450 {
        assert!(
            publish(
                &channel,
                &p.exchange().name,
                "api.info",
                b"{\"message\":\"hi\"}"
            )
            .await
            .is_ack()
        );
    }
    let replicas = Arc::new(AtomicU32::new(1));
    let output = &pipeline.spec.outputs[0];
    let mut autoscaler = PipelineAutoscaler::new(
        "test/app",
        vhost.name.clone(),
        vec![
            OutputScaling::for_output(
                &p,
                "o",
                output.scaling_settings(),
                Box::new(ReplicaCounter(replicas.clone())),
            )
            .unwrap(),
        ],
    );

    // The depth comes from a passive declare: no waiting for the broker's statistics.
    let records = autoscaler.poll(&admin).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert!(r.scaled(), "{r:?}");
    assert_eq!(r.decision.reason, "backlog 450 at 100/replica: 1 → 5");
    assert_eq!(replicas.load(Ordering::SeqCst), 5);
    assert_eq!(r.reading.unwrap().ready, Some(450));

    // The broker goes away (here: the vhost is deleted under the connection): hold, flagged.
    vhost.management.delete_vhost(&vhost.name).await.unwrap();
    let records = autoscaler.poll(&admin).await;
    assert_eq!(replicas.load(Ordering::SeqCst), 5, "{:?}", records[0]);
    assert!(records[0].decision.metrics_missing);
    assert!(!records[0].decision.is_change());
}
