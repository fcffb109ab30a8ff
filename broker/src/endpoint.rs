//! Where a broker is and how to log in, from a Secret's `uri` or `host`/`username`/`password`.
//!
//! Passwords never leave this type in text: `Display` and `Debug` print the redacted form
//! `amqp://user:***@host:5672/vhost`, which is what logs, events and status may show.

use std::fmt;

use lapin::uri::AMQPUri;
use url::Url;

use crate::address::{AMQP_PORT, AMQPS_PORT, AmqpAddress, AmqpUriError};

/// Port of the management API when the Secret does not name a management URI.
pub const DEFAULT_MANAGEMENT_PORT: u16 = 15672;

/// Why broker coordinates could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The AMQP URI does not parse. The URI is not repeated: it may hold a password.
    #[error(transparent)]
    AmqpUri(#[from] AmqpUriError),
    /// The management URI does not parse.
    #[error("invalid management URI: {0} (expected http://host:15672)")]
    ManagementUri(String),
}

/// Credentials and address of the management HTTP API.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagementEndpoint {
    /// Base URL without credentials, e.g. `http://rabbitmq:15672/`.
    pub base: Url,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A broker's AMQP and management coordinates with credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    address: AmqpAddress,
    management: ManagementEndpoint,
}

impl BrokerEndpoint {
    /// Reads an `amqp://` or `amqps://` URI (user and password percent-decoded) and an
    /// optional management URI; without one, the management API is assumed on the AMQP host,
    /// port 15672 (`https` when the AMQP URI is `amqps`). Credentials in the management URI
    /// win over the AMQP ones.
    pub fn from_uri(amqp_uri: &str, management_uri: Option<&str>) -> Result<Self, EndpointError> {
        let address = AmqpAddress::parse(amqp_uri)?;
        Self::with_management(address, management_uri)
    }

    /// Builds the endpoint from separate fields, as a Secret with `host`, `username` and
    /// `password` keys gives them (no encoding needed).
    pub fn from_parts(
        host: &str,
        port: Option<u16>,
        username: &str,
        password: &str,
        tls: bool,
        management_uri: Option<&str>,
    ) -> Result<Self, EndpointError> {
        let address = AmqpAddress {
            tls,
            host: host.to_owned(),
            port: port.unwrap_or(if tls { AMQPS_PORT } else { AMQP_PORT }),
            username: username.to_owned(),
            password: password.to_owned(),
            vhost: "/".to_owned(),
            heartbeat: None,
            connection_timeout_ms: None,
        };
        Self::with_management(address, management_uri)
    }

    fn with_management(
        address: AmqpAddress,
        management_uri: Option<&str>,
    ) -> Result<Self, EndpointError> {
        let management = match management_uri.map(str::trim).filter(|s| !s.is_empty()) {
            Some(raw) => {
                let mut url =
                    Url::parse(raw).map_err(|e| EndpointError::ManagementUri(e.to_string()))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(EndpointError::ManagementUri(format!(
                        "scheme must be http or https with a host, got {}",
                        url.scheme()
                    )));
                }
                let username = match url.username() {
                    "" => address.username.clone(),
                    user => decode(user),
                };
                let password = url
                    .password()
                    .map_or_else(|| address.password.clone(), decode);
                // Credentials travel in the Authorization header, never in the URL.
                let _ = url.set_username("");
                let _ = url.set_password(None);
                ManagementEndpoint {
                    base: url,
                    username,
                    password,
                }
            }
            None => {
                let scheme = if address.tls { "https" } else { "http" };
                let base = Url::parse(&format!(
                    "{scheme}://{}:{DEFAULT_MANAGEMENT_PORT}/",
                    address.host_for_uri()
                ))
                .map_err(|e| EndpointError::ManagementUri(e.to_string()))?;
                ManagementEndpoint {
                    base,
                    username: address.username.clone(),
                    password: address.password.clone(),
                }
            }
        };
        Ok(Self {
            address,
            management,
        })
    }

    /// The same broker and vhost, logged in as `username` with `password` (AMQP and the
    /// management API alike).
    pub fn with_credentials(&self, username: &str, password: &str) -> Self {
        let mut next = self.clone();
        username.clone_into(&mut next.address.username);
        password.clone_into(&mut next.address.password);
        username.clone_into(&mut next.management.username);
        password.clone_into(&mut next.management.password);
        next
    }

    /// The same broker, on virtual host `vhost`.
    pub fn with_vhost(&self, vhost: &str) -> Self {
        let mut next = self.clone();
        vhost.clone_into(&mut next.address.vhost);
        next
    }

    /// True for `amqps` (TLS).
    pub fn is_tls(&self) -> bool {
        self.address.tls
    }

    /// The AMQP host (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.address.host
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.address.port
    }

    /// The AMQP coordinates as lapin takes them.
    pub fn amqp(&self) -> AMQPUri {
        self.address.lapin_uri()
    }

    /// The management API coordinates.
    pub fn management(&self) -> &ManagementEndpoint {
        &self.management
    }

    /// The virtual host.
    pub fn vhost(&self) -> &str {
        &self.address.vhost
    }

    /// The user name (safe to show).
    pub fn username(&self) -> &str {
        &self.address.username
    }

    /// The full AMQP URI with the password, percent-encoded; for handing to a worker through
    /// a Secret, never for display.
    pub fn amqp_uri_with_password(&self) -> String {
        self.address.to_uri_with_password()
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl fmt::Display for BrokerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.address.fmt(f)
    }
}

impl fmt::Debug for BrokerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BrokerEndpoint({self}, management {})",
            self.management.base
        )
    }
}

impl fmt::Debug for ManagementEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManagementEndpoint({} as {})", self.base, self.username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_defaults_to_the_amqp_host_and_credentials() {
        let e = BrokerEndpoint::from_uri("amqp://us%23er:p%40ss%2F@rabbit:5673/%2f", None).unwrap();
        assert_eq!(e.management().base.as_str(), "http://rabbit:15672/");
        assert_eq!(e.management().username, "us#er");
        assert_eq!(e.management().password, "p@ss/");
        let v6 = BrokerEndpoint::from_uri("amqps://u:p@[::1]/%2f", None).unwrap();
        assert_eq!(v6.management().base.as_str(), "https://[::1]:15672/");
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let e = BrokerEndpoint::from_uri(
            "amqps://user:s3cret@rabbit/prod",
            Some("https://admin:t0p@mgmt:443"),
        )
        .unwrap();
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("t0p"),
                "{shown}"
            );
        }
        assert_eq!(e.to_string(), "amqps://user:***@rabbit:5671/prod");
        assert_eq!(e.management().username, "admin");
        assert_eq!(e.management().password, "t0p");
        assert_eq!(e.management().base.as_str(), "https://mgmt/");
    }

    #[test]
    fn parts_need_no_encoding_and_reach_lapin_decoded() {
        let e = BrokerEndpoint::from_parts("10.0.0.7", None, "a@b", "p#%/@", false, None).unwrap();
        let uri = e.amqp();
        assert_eq!(uri.authority.host, "10.0.0.7");
        assert_eq!(uri.authority.userinfo.password, "p#%/@");
        let again = BrokerEndpoint::from_uri(&e.amqp_uri_with_password(), None).unwrap();
        assert_eq!(again, e);
        assert_eq!(e.with_vhost("logs").amqp().vhost, "logs");
    }

    #[test]
    fn bad_uris_are_refused_without_echoing_them() {
        let err = BrokerEndpoint::from_uri("http://user:secret@host", None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid AMQP URI"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = BrokerEndpoint::from_uri("amqp://h", Some("ftp://x")).unwrap_err();
        assert!(matches!(err, EndpointError::ManagementUri(_)));
    }
}
