//! Reading `amqp://` and `amqps://` URIs: the AMQP half of a
//! [`BrokerEndpoint`](crate::BrokerEndpoint).
//!
//! User and password are percent-decoded (so `#`, `@`, `%`, `/` work when encoded), IP hosts
//! are kept as they are, an empty path means the default vhost `/`, and errors never repeat
//! the input, which may hold a password.

use std::fmt;

use amq_protocol_uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use url::Url;

/// AMQP port without TLS.
pub const AMQP_PORT: u16 = 5672;
/// AMQP port with TLS.
pub const AMQPS_PORT: u16 = 5671;

/// Why an AMQP URI was refused. The message never contains the URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid AMQP URI: {0} (expected amqp://user:password@host:5672/vhost, with special characters in user and password percent-encoded)"
)]
pub struct AmqpUriError(String);

/// The parts of an AMQP URI, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpAddress {
    /// `amqps` (TLS) or `amqp`.
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name, decoded. Empty when the URI has none.
    pub username: String,
    /// Password, decoded. Empty when the URI has none.
    pub password: String,
    /// Virtual host, decoded.
    pub vhost: String,
    /// `heartbeat` query parameter, seconds.
    pub heartbeat: Option<u16>,
    /// `connection_timeout` query parameter, milliseconds.
    pub connection_timeout_ms: Option<u64>,
}

impl AmqpAddress {
    /// These coordinates as lapin takes them (`lapin::uri::AMQPUri`); lapin's own URI parser
    /// would turn an IP host into `localhost`.
    pub fn lapin_uri(&self) -> AMQPUri {
        AMQPUri {
            scheme: if self.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.username.clone(),
                    password: self.password.clone(),
                },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: self.heartbeat,
                connection_timeout: self.connection_timeout_ms,
                ..AMQPQueryString::default()
            },
        }
    }

    /// Parses `raw`.
    pub fn parse(raw: &str) -> Result<Self, AmqpUriError> {
        let url = Url::parse(raw.trim()).map_err(|e| AmqpUriError(e.to_string()))?;
        let tls = match url.scheme() {
            "amqp" => false,
            "amqps" => true,
            other => {
                return Err(AmqpUriError(format!(
                    "scheme must be amqp or amqps, got {other}"
                )));
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(AmqpUriError("the URI names no host".into())),
        };
        let vhost = match url.path().strip_prefix('/').unwrap_or_default() {
            "" => "/".to_owned(),
            path => decode(path),
        };
        let mut address = Self {
            tls,
            port: url
                .port()
                .unwrap_or(if tls { AMQPS_PORT } else { AMQP_PORT }),
            host,
            username: decode(url.username()),
            password: url.password().map(decode).unwrap_or_default(),
            vhost,
            heartbeat: None,
            connection_timeout_ms: None,
        };
        for (key, value) in url.query_pairs() {
            let bad = || AmqpUriError(format!("query parameter {key} must be a number"));
            match key.as_ref() {
                "heartbeat" => address.heartbeat = Some(value.parse().map_err(|_| bad())?),
                "connection_timeout" => {
                    address.connection_timeout_ms = Some(value.parse().map_err(|_| bad())?);
                }
                _ => {}
            }
        }
        Ok(address)
    }

    /// The URI with the password percent-encoded: for handing to a worker through a Secret or
    /// an environment variable, never for display.
    pub fn to_uri_with_password(&self) -> String {
        format!(
            "{}://{}:{}@{}:{}/{}",
            if self.tls { "amqps" } else { "amqp" },
            encode(&self.username),
            encode(&self.password),
            self.host_for_uri(),
            self.port,
            encode(&self.vhost)
        )
    }

    /// The host as it appears in a URI (IPv6 in brackets).
    pub fn host_for_uri(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for AmqpAddress {
    /// The redacted URI, `amqp://user:***@host:5672/vhost`: safe for logs, events and status.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:***@{}:{}/{}",
            if self.tls { "amqps" } else { "amqp" },
            self.username,
            self.host_for_uri(),
            self.port,
            encode(&self.vhost)
        )
    }
}

impl fmt::Debug for AmqpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpAddress({self})")
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_in_credentials_are_percent_decoded() {
        let a =
            AmqpAddress::parse("amqp://us%23er%40x:p%40ss%23w%25rd%2F@rabbit:5673/%2f").unwrap();
        assert_eq!(a.username, "us#er@x");
        assert_eq!(a.password, "p@ss#w%rd/");
        assert_eq!(
            (a.host.as_str(), a.port, a.vhost.as_str()),
            ("rabbit", 5673, "/")
        );
        let again = AmqpAddress::parse(&a.to_uri_with_password()).unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn ip_hosts_default_ports_and_vhosts() {
        let a = AmqpAddress::parse("amqp://guest:guest@10.1.2.3").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.vhost.as_str()),
            ("10.1.2.3", 5672, "/")
        );
        assert_eq!(AmqpAddress::parse("amqps://h/").unwrap().port, 5671);
        assert_eq!(
            AmqpAddress::parse("amqp://h/logs%2Fprod").unwrap().vhost,
            "logs/prod"
        );
        let v6 = AmqpAddress::parse("amqp://u:p@[::1]:5672/%2f?heartbeat=10").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.heartbeat, Some(10));
        assert_eq!(v6.to_string(), "amqp://u:***@[::1]:5672/%2F");
    }

    #[test]
    fn the_lapin_uri_keeps_ip_hosts_credentials_and_query() {
        let a = AmqpAddress::parse(
            "amqps://us%23er:p%40ss@10.1.2.3:5999/logs%2Fprod?heartbeat=10&connection_timeout=250",
        )
        .unwrap();
        let uri = a.lapin_uri();
        assert_eq!(uri.scheme, amq_protocol_uri::AMQPScheme::AMQPS);
        assert_eq!(
            (
                uri.authority.host.as_str(),
                uri.authority.port,
                uri.authority.userinfo.username.as_str(),
                uri.authority.userinfo.password.as_str(),
                uri.vhost.as_str(),
            ),
            ("10.1.2.3", 5999, "us#er", "p@ss", "logs/prod")
        );
        assert_eq!(uri.query.heartbeat, Some(10));
        assert_eq!(uri.query.connection_timeout, Some(250));
    }

    #[test]
    fn errors_and_display_never_show_the_password() {
        let a = AmqpAddress::parse("amqp://user:s3cret@rabbit/prod").unwrap();
        assert_eq!(a.to_string(), "amqp://user:***@rabbit:5672/prod");
        assert!(!format!("{a:?}").contains("s3cret"));
        let e = AmqpAddress::parse("http://user:s3cret@host")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("scheme must be amqp") && !e.contains("s3cret"),
            "{e}"
        );
        assert!(AmqpAddress::parse("amqp://h?heartbeat=soon").is_err());
        assert!(AmqpAddress::parse("not a uri").is_err());
    }
}
