//! A private RabbitMQ node of the broker's major version (`scripts/rabbitmq-private-node.sh`),
//! for tests that need a broker configured unlike the shared one (a TLS listener) or that
//! disrupt it; stopped and removed on drop, pass or fail.

use std::{path::PathBuf, process::Command};

use logstream_broker::{BrokerEndpoint, ManagementClient};

use crate::{free_port, tls::TestCerts, unique};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-private-node.sh")
}

/// TLS listeners of a private node.
#[derive(Clone, Copy, Debug)]
pub struct TlsListeners<'a> {
    /// The CA (`ca.crt`) and the server's certificate (`server.crt`, `server.key`).
    pub certs: &'a TestCerts,
    /// Refuse AMQPS clients without a certificate signed by the CA.
    pub require_client_cert: bool,
}

/// A running private node on loopback; guest/guest, vhost `/`.
pub struct PrivateNode {
    dir: PathBuf,
    /// AMQP port.
    pub amqp_port: u16,
    /// Management API port (http).
    pub management_port: u16,
    /// AMQPS port, with TLS listeners.
    pub amqps_port: Option<u16>,
    /// Management API port over https, with TLS listeners.
    pub https_port: Option<u16>,
}

impl PrivateNode {
    /// Starts a node on free ports, with TLS listeners when `tls` says; tries again with other
    /// ports when one was taken between picking and binding it.
    pub fn start(tls: Option<TlsListeners<'_>>) -> Self {
        let mut failures = String::new();
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(unique("logstream-node"));
            let node = Self {
                dir,
                amqp_port: free_port(),
                management_port: free_port(),
                amqps_port: tls.map(|_| free_port()),
                https_port: tls.map(|_| free_port()),
            };
            let mut command = Command::new(script());
            command
                .arg("start")
                .arg(&node.dir)
                .arg(node.amqp_port.to_string())
                .arg(node.management_port.to_string())
                .arg(free_port().to_string());
            if let (Some(tls), Some(amqps), Some(https)) = (tls, node.amqps_port, node.https_port) {
                command
                    .arg("--tls")
                    .arg(tls.certs.dir())
                    .arg(amqps.to_string())
                    .arg(https.to_string());
                if tls.require_client_cert {
                    command.arg("--require-client-cert");
                }
            }
            let out = command.output().expect("run rabbitmq-private-node.sh");
            if out.status.success() {
                return node;
            }
            failures.push_str(&String::from_utf8_lossy(&out.stdout));
            failures.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        panic!("the private node did not start:\n{failures}");
    }

    /// The node over plain AMQP and http.
    pub fn endpoint(&self) -> BrokerEndpoint {
        BrokerEndpoint::from_uri(
            &format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port),
            Some(&format!("http://127.0.0.1:{}", self.management_port)),
        )
        .expect("a private node's URI parses")
    }

    /// The AMQPS URI (guest/guest, vhost `/`), for nodes with TLS listeners.
    pub fn amqps_uri(&self) -> String {
        format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f",
            self.amqps_port.expect("a node with TLS listeners")
        )
    }

    /// The management API's https URL, for nodes with TLS listeners.
    pub fn https_management_uri(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.https_port.expect("a node with TLS listeners")
        )
    }

    /// Adds administrator `user` with `password`, with every permission on vhost `/` (tests
    /// that check no output shows a password give it a user of its own, whose password is
    /// not also its name).
    pub async fn add_user(&self, user: &str, password: &str) {
        let management = ManagementClient::new(self.endpoint().management().clone());
        management
            .put_user(user, password, "administrator")
            .await
            .expect("create a user on the private node");
        management
            .grant_all("/", user)
            .await
            .expect("grant the user vhost /");
    }

    /// The AMQPS URI as `user` with `password` (vhost `/`), for nodes with TLS listeners.
    pub fn amqps_uri_as(&self, user: &str, password: &str) -> String {
        self.amqps_uri()
            .replace("guest:guest", &format!("{user}:{password}"))
    }

    /// Runs `rabbitmqctl <args>` against the node; panics when it fails.
    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new(script())
            .arg("ctl")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
