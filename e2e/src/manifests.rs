//! The objects the suite creates besides the chart and the examples: the burst pipeline, a
//! counting HTTP sink, and the Jobs that run the `logstream` CLI in the cluster. Pure text
//! builders, so a test can check them without a cluster.

/// The pipeline the burst goes through.
pub const PIPELINE: &str = "e2e-burst";
/// Its only output.
pub const OUTPUT: &str = "sink";
/// Name of the counting sink's Deployment and Service.
pub const SINK: &str = "e2e-sink";
/// Largest body the output accepts; poison logs are padded past it.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Size poison logs are padded to (`logstream produce --size`).
pub const POISON_BYTES: usize = 8192;
const _: () = assert!(
    POISON_BYTES > MAX_MESSAGE_BYTES,
    "poison must be over the limit"
);
/// Service name of the poison logs (their routing key is `<service>.<level>`).
pub const POISON_SERVICE: &str = "e2e-poison";
/// Service name of the good logs.
pub const GOOD_SERVICE: &str = "e2e-burst";
/// The output's minimum replicas, which it must come back to after the burst.
pub const MIN_REPLICAS: u32 = 1;
/// Its maximum.
pub const MAX_REPLICAS: u32 = 4;
/// Image of the counting sink (stock Python: the server is the script below).
pub const SINK_IMAGE: &str = "python:3.12-alpine";

/// The burst pipeline: one output posting NDJSON to the counting sink, small worker
/// parallelism (so a burst builds a backlog that needs more replicas), a quick scale-down.
pub fn pipeline(namespace: &str) -> String {
    format!(
        r#"apiVersion: logstream.io/v1alpha1
kind: LogPipeline
metadata:
  name: {PIPELINE}
  namespace: {namespace}
spec:
  broker:
    secretRef: {{name: rabbitmq}}
  outputs:
    - name: {OUTPUT}
      sink:
        http:
          url: http://{SINK}.{namespace}.svc:8080/ingest
          format: ndjson
          timeout: 10s
      worker:
        prefetch: 40
        concurrency: 2
        batch: {{maxMessages: 20, linger: 20ms}}
        maxMessageBytes: {MAX_MESSAGE_BYTES}
      scaling:
        minReplicas: {MIN_REPLICAS}
        maxReplicas: {MAX_REPLICAS}
        targetBacklogPerReplica: 500
        maxMessageAge: 10s
        scaleDownDelay: 30s
        pollInterval: 2s
"#
    )
}

/// The counting sink: records the `logstream.message_id` of every NDJSON line it receives
/// (taking 2 ms per line, so workers cannot drain a burst alone), and answers `GET /stats`
/// with `{"lines": n, "unique": m}`.
pub const SINK_SCRIPT: &str = r#"import json, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
seen = set()
lines = 0

class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        global lines
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ids = []
        for line in body.splitlines():
            if line.strip():
                ids.append(json.loads(line)["logstream"]["message_id"])
        time.sleep(0.002 * len(ids))
        with lock:
            lines += len(ids)
            seen.update(ids)
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        with lock:
            stats = json.dumps({"lines": lines, "unique": len(seen)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(stats)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", 8080), Sink).serve_forever()
"#;

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// ConfigMap, Deployment and Service of the counting sink.
pub fn sink(namespace: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {SINK}
  namespace: {namespace}
data:
  sink.py: |
{script}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {SINK}
  namespace: {namespace}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {SINK}}}
  template:
    metadata:
      labels: {{app: {SINK}}}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        seccompProfile: {{type: RuntimeDefault}}
      containers:
        - name: sink
          image: {SINK_IMAGE}
          command: ["python3", "-u", "/app/sink.py"]
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe:
            tcpSocket: {{port: http}}
            periodSeconds: 2
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: ["ALL"]}}
          volumeMounts: [{{name: app, mountPath: /app}}]
      volumes:
        - name: app
          configMap: {{name: {SINK}}}
---
apiVersion: v1
kind: Service
metadata:
  name: {SINK}
  namespace: {namespace}
spec:
  selector: {{app: {SINK}}}
  ports: [{{name: http, port: 8080, targetPort: http}}]
"#,
        script = indent(SINK_SCRIPT, 4)
    )
}

/// A Job running `logstream <args>` once, with the broker URI from the bundled RabbitMQ's
/// broker Secret.
pub fn cli_job(namespace: &str, name: &str, image: &str, args: &[String]) -> String {
    let args = serde_json::to_string(args).unwrap_or_else(|_| "[]".into());
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: {namespace}
spec:
  backoffLimit: 0
  ttlSecondsAfterFinished: 600
  template:
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {{type: RuntimeDefault}}
      containers:
        - name: logstream
          image: {image}
          imagePullPolicy: Never
          args: {args}
          env:
            - name: LOGSTREAM_AMQP_URI
              valueFrom:
                secretKeyRef: {{name: rabbitmq, key: uri}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: ["ALL"]}}
"#
    )
}

/// `logstream produce` arguments of the good burst.
pub fn burst_args(namespace: &str, count: u64) -> Vec<String> {
    [
        "produce",
        PIPELINE,
        "-n",
        namespace,
        "--service",
        GOOD_SERVICE,
        "--count",
        &count.to_string(),
        "--levels",
        "info=90,warn=7,error=3",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `logstream produce` arguments of the poison logs (bodies over the output's limit).
pub fn poison_args(namespace: &str, count: u64) -> Vec<String> {
    [
        "produce",
        PIPELINE,
        "-n",
        namespace,
        "--service",
        POISON_SERVICE,
        "--count",
        &count.to_string(),
        "--size",
        &POISON_BYTES.to_string(),
        "--levels",
        "error=1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `logstream dlq list` arguments for the output's DLQ, one JSON object per line.
pub fn dlq_list_args(namespace: &str, limit: u64) -> Vec<String> {
    [
        "dlq",
        "list",
        PIPELINE,
        OUTPUT,
        "-n",
        namespace,
        "--json",
        "--limit",
        &limit.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use logstream_api::manifest::parse_pipeline;

    use super::*;

    #[test]
    fn the_burst_pipeline_is_valid_and_poison_is_over_its_limit() {
        let p = parse_pipeline(&pipeline("e2e")).unwrap();
        p.validate().unwrap();
        let output = &p.spec.outputs[0];
        let worker = output.worker_settings();
        assert_eq!(worker.max_message_bytes as usize, MAX_MESSAGE_BYTES);
        let scaling = output.scaling_settings();
        assert_eq!(
            (scaling.min_replicas, scaling.max_replicas),
            (MIN_REPLICAS, MAX_REPLICAS)
        );
    }

    #[test]
    fn sink_and_job_manifests_are_yaml_with_the_script_intact() {
        let sink = sink("e2e");
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&sink)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["ConfigMap", "Deployment", "Service"]);
        assert_eq!(docs[0]["data"]["sink.py"].as_str().unwrap(), SINK_SCRIPT);
        assert!(
            sink.contains("    ThreadingHTTPServer((\"0.0.0.0\", 8080), Sink).serve_forever()")
        );
        assert_eq!(sink.matches("\n---\n").count(), 2);
        let job = cli_job(
            "e2e",
            "produce",
            "logstream-cli:e2e",
            &burst_args("e2e", 10),
        );
        let args_line = job
            .lines()
            .find(|l| l.trim_start().starts_with("args:"))
            .unwrap();
        let args: Vec<String> =
            serde_json::from_str(args_line.trim_start().trim_start_matches("args:").trim())
                .unwrap();
        assert_eq!(args[..4], ["produce", PIPELINE, "-n", "e2e"]);
        assert!(poison_args("e2e", 5).contains(&POISON_BYTES.to_string()));
    }
}
