//! Every manifest in `examples/` is one a user can apply as it is: it parses, passes
//! LogStream's validation, plans a topology, and passes the committed CRD's schema and CEL rules.

mod common;

use logstream_api::{manifest::parse_pipelines, plan, topology::QueueRole};

#[test]
fn the_documented_examples_exist() {
    let names: Vec<_> = common::examples()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for required in ["quickstart.yaml", "priority-dlq.yaml", "fanout.yaml"] {
        assert!(
            names.iter().any(|n| n == required),
            "examples/{required} is missing: {names:?}"
        );
    }
}

#[test]
fn every_example_parses_validates_and_plans() {
    for (file, text) in common::examples() {
        let pipelines = parse_pipelines(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for p in pipelines {
            p.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
            let name = p.metadata.name.as_deref().unwrap();
            let plan = plan("default", name, &p.spec).unwrap_or_else(|e| panic!("{file}: {e}"));
            for output in &p.spec.outputs {
                assert!(
                    plan.queue(&output.name, QueueRole::Main).is_some(),
                    "{file}: {}",
                    output.name
                );
                assert!(plan.queue(&output.name, QueueRole::DeadLetter).is_some());
                assert_eq!(
                    plan.queues_of(&output.name).count(),
                    output.backoff().len() + 2
                );
            }
        }
    }
}

#[test]
fn every_example_passes_the_crd_schema_and_cel_rules() {
    for (file, text) in common::examples() {
        let docs = common::pipeline_documents(&text);
        assert!(!docs.is_empty(), "{file} holds no LogPipeline");
        for doc in docs {
            let rejections = common::api_server_rejections(&doc);
            assert!(
                rejections.is_empty(),
                "{file} would be refused by the API server: {rejections:#?}"
            );
        }
    }
}

#[test]
fn priority_example_is_critical_first_with_a_retry_ladder() {
    let (_, text) = common::examples()
        .into_iter()
        .find(|(n, _)| n == "priority-dlq.yaml")
        .unwrap();
    let p = &parse_pipelines(&text).unwrap()[0];
    let plan = plan("games", "security-logs", &p.spec).unwrap();
    let main = plan.queue("security", QueueRole::Main).unwrap();
    assert_eq!(
        main.arguments["x-max-priority"],
        logstream_api::topology::ArgValue::Int(3)
    );
    assert!(plan.queue("security", QueueRole::Retry(2)).is_some());
}

#[test]
fn fanout_example_binds_each_output_differently() {
    let (_, text) = common::examples()
        .into_iter()
        .find(|(n, _)| n == "fanout.yaml")
        .unwrap();
    let p = &parse_pipelines(&text).unwrap()[0];
    let plan = plan("default", "app-logs", &p.spec).unwrap();
    let keys = |queue: &str| -> Vec<&str> {
        plan.bindings
            .iter()
            .filter(|b| b.queue == queue && b.exchange == "app-logs")
            .map(|b| b.routing_key.as_str())
            .collect()
    };
    assert_eq!(keys("logstream.default.app-logs.archive"), ["#"]);
    assert_eq!(
        keys("logstream.default.app-logs.errors"),
        ["#.error", "#.critical"]
    );
    assert_eq!(keys("logstream.default.app-logs.billing"), ["billing.#"]);
}
