//! The three-node RabbitMQ 4 cluster of `make test-cluster` (`scripts/test-cluster.sh`): its
//! nodes as `$LOGSTREAM_CLUSTER_DIR/nodes` lists them, the broker URIs that name every node,
//! and what node-loss tests do to it (kill, restart, ask which node leads a quorum queue)
//! through `scripts/rabbitmq-cluster.sh`. A [`Cluster`] restarts every node it killed when it
//! is dropped, pass or fail.

use std::{
    path::PathBuf,
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use logstream_broker::BrokerEndpoint;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-cluster.sh")
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// 1, 2 or 3.
    pub number: u32,
    /// AMQP port.
    pub amqp: u16,
    /// Management API port.
    pub management: u16,
}

/// The running cluster.
pub struct Cluster {
    dir: PathBuf,
    /// The nodes, node1 first.
    pub nodes: Vec<ClusterNode>,
    killed: Mutex<Vec<u32>>,
}

impl Cluster {
    /// The cluster `make test-cluster` started (`$LOGSTREAM_CLUSTER_DIR/nodes`); panics with
    /// how to run the test when there is none.
    pub fn from_env() -> Self {
        let dir = PathBuf::from(std::env::var("LOGSTREAM_CLUSTER_DIR").expect(
            "LOGSTREAM_CLUSTER_DIR is not set: run the cluster tests with `make test-cluster`",
        ));
        let text = std::fs::read_to_string(dir.join("nodes"))
            .expect("read $LOGSTREAM_CLUSTER_DIR/nodes (is the cluster running?)");
        let nodes = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let number = fields.next()?.strip_prefix("node")?.parse().ok()?;
                let mut node = ClusterNode {
                    number,
                    amqp: 0,
                    management: 0,
                };
                for field in fields {
                    match field.split_once('=') {
                        Some(("amqp", port)) => node.amqp = port.parse().ok()?,
                        Some(("management", port)) => node.management = port.parse().ok()?,
                        _ => {}
                    }
                }
                Some(node)
            })
            .collect::<Vec<_>>();
        assert_eq!(nodes.len(), 3, "three nodes in {}", dir.display());
        Self {
            dir,
            nodes,
            killed: Mutex::default(),
        }
    }

    /// The AMQP URI naming every node, node1 first (guest/guest, vhost `vhost`, encoded).
    pub fn amqp_uri(&self, vhost: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.amqp))
            .collect();
        format!(
            "amqp://guest:guest@{}/{}",
            hosts.join(","),
            crate::encode(vhost)
        )
    }

    /// The management URI naming every node (without credentials).
    pub fn management_uri(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.management))
            .collect();
        format!("http://{}", hosts.join(","))
    }

    /// The broker: every node, on `vhost`.
    pub fn endpoint(&self, vhost: &str) -> BrokerEndpoint {
        BrokerEndpoint::from_uri(&self.amqp_uri(vhost), Some(&self.management_uri()))
            .expect("the cluster's URIs parse")
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(script())
            .args(args)
            .output()
            .expect("run rabbitmq-cluster.sh")
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rabbitmq-cluster.sh {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn dir(&self) -> &str {
        self.dir.to_str().expect("the cluster directory is UTF-8")
    }

    /// `kill -9` of node `n`; it is restarted on drop unless [`restart`](Self::restart) does
    /// it first.
    pub fn kill(&self, n: u32) {
        self.killed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(n);
        self.run_ok(&["kill", self.dir(), &n.to_string()]);
    }

    /// Starts node `n` again; returns once it runs in the cluster.
    pub fn restart(&self, n: u32) {
        self.run_ok(&["restart", self.dir(), &n.to_string()]);
        self.killed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k| *k != n);
    }

    /// Stops node `n` cleanly (`rabbitmqctl stop`, as a rolling restart does).
    pub fn stop(&self, n: u32) {
        self.killed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(n);
        self.run_ok(&["ctl", self.dir(), &n.to_string(), "stop"]);
    }

    /// Waits up to `timeout` until stopping node `n` leaves every quorum queue with a
    /// majority of its members (`rabbitmq-queues check_if_node_is_quorum_critical`), as a
    /// rolling restart does before it stops a node.
    pub fn wait_until_not_quorum_critical(&self, n: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.run(&[
                "queues",
                self.dir(),
                &n.to_string(),
                "check_if_node_is_quorum_critical",
            ]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node{n} still quorum-critical after {timeout:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The node leading quorum queue `queue` of `vhost`, waiting up to `timeout` for an
    /// election to end.
    pub fn leader(&self, vhost: &str, queue: &str, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.run(&["leader", self.dir(), vhost, queue]);
            if out.status.success()
                && let Ok(n) = String::from_utf8_lossy(&out.stdout).trim().parse()
            {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "no leader of {queue} within {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let killed = std::mem::take(
            self.killed
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for n in killed {
            let _ = self.run(&["restart", self.dir(), &n.to_string()]);
        }
    }
}
