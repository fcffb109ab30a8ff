//! Where a broker is and how to log in, from a Secret's `uri` or `host`/`username`/`password`.
//!
//! Passwords never leave this type in text: `Display` and `Debug` print the redacted form
//! `amqp://user:***@host:5672/vhost`, which is what logs, events and status may show.

use std::fmt;

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use url::Url;

/// Port of the management API when the Secret does not name a management URI.
pub const DEFAULT_MANAGEMENT_PORT: u16 = 15672;

/// Why broker coordinates could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The AMQP URI does not parse. The URI is not repeated: it may hold a password.
    #[error(
        "invalid AMQP URI: {0} (expected amqp://user:password@host:5672/vhost, with special characters in user and password percent-encoded)"
    )]
    AmqpUri(String),
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
    amqp: AMQPUri,
    management: ManagementEndpoint,
}

impl BrokerEndpoint {
    /// Reads an `amqp://` or `amqps://` URI (user and password percent-decoded) and an
    /// optional management URI; without one, the management API is assumed on the AMQP host,
    /// port 15672 (`https` when the AMQP URI is `amqps`). Credentials in the management URI
    /// win over the AMQP ones.
    pub fn from_uri(amqp_uri: &str, management_uri: Option<&str>) -> Result<Self, EndpointError> {
        let amqp = parse_amqp_uri(amqp_uri.trim())?;
        Self::with_management(amqp, management_uri)
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
        let scheme = if tls {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        };
        let amqp = AMQPUri {
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: username.to_owned(),
                    password: password.to_owned(),
                },
                host: host.to_owned(),
                port: port.unwrap_or_else(|| scheme.default_port()),
            },
            scheme,
            vhost: "/".to_owned(),
            query: AMQPQueryString::default(),
        };
        Self::with_management(amqp, management_uri)
    }

    fn with_management(amqp: AMQPUri, management_uri: Option<&str>) -> Result<Self, EndpointError> {
        let auth = &amqp.authority;
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
                    "" => auth.userinfo.username.clone(),
                    user => decode(user),
                };
                let password = url
                    .password()
                    .map_or_else(|| auth.userinfo.password.clone(), decode);
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
                let scheme = match amqp.scheme {
                    AMQPScheme::AMQP => "http",
                    AMQPScheme::AMQPS => "https",
                };
                let host = if auth.host.contains(':') {
                    format!("[{}]", auth.host)
                } else {
                    auth.host.clone()
                };
                let base = Url::parse(&format!("{scheme}://{host}:{DEFAULT_MANAGEMENT_PORT}/"))
                    .map_err(|e| EndpointError::ManagementUri(e.to_string()))?;
                ManagementEndpoint {
                    base,
                    username: auth.userinfo.username.clone(),
                    password: auth.userinfo.password.clone(),
                }
            }
        };
        Ok(Self { amqp, management })
    }

    /// The same broker, on virtual host `vhost`.
    pub fn with_vhost(&self, vhost: &str) -> Self {
        let mut next = self.clone();
        vhost.clone_into(&mut next.amqp.vhost);
        next
    }

    /// The AMQP coordinates, for `lapin::Connection::connect_uri`.
    pub fn amqp(&self) -> &AMQPUri {
        &self.amqp
    }

    /// The management API coordinates.
    pub fn management(&self) -> &ManagementEndpoint {
        &self.management
    }

    /// The virtual host.
    pub fn vhost(&self) -> &str {
        &self.amqp.vhost
    }

    /// The user name (safe to show).
    pub fn username(&self) -> &str {
        &self.amqp.authority.userinfo.username
    }

    /// The full AMQP URI with the password, percent-encoded; for handing to a worker through
    /// a Secret, never for display.
    pub fn amqp_uri_with_password(&self) -> String {
        self.amqp.to_string()
    }
}

/// Parses an AMQP URI. Unlike amq-protocol's parser this keeps IP-address hosts, reads an
/// empty path as the default vhost `/`, and never echoes the input (it may hold a password).
fn parse_amqp_uri(raw: &str) -> Result<AMQPUri, EndpointError> {
    let url = Url::parse(raw).map_err(|e| EndpointError::AmqpUri(e.to_string()))?;
    let scheme = match url.scheme() {
        "amqp" => AMQPScheme::AMQP,
        "amqps" => AMQPScheme::AMQPS,
        other => {
            return Err(EndpointError::AmqpUri(format!(
                "scheme must be amqp or amqps, got {other}"
            )));
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(EndpointError::AmqpUri("the URI names no host".into())),
    };
    let defaults = AMQPUri::default();
    let username = match url.username() {
        "" => defaults.authority.userinfo.username,
        user => decode(user),
    };
    let password = url
        .password()
        .map_or(defaults.authority.userinfo.password, decode);
    let vhost = match url.path().strip_prefix('/').unwrap_or_default() {
        "" => "/".to_owned(),
        path => decode(path),
    };
    let mut query = AMQPQueryString::default();
    for (key, value) in url.query_pairs() {
        let bad = |_| EndpointError::AmqpUri(format!("query parameter {key} must be a number"));
        match key.as_ref() {
            "heartbeat" => query.heartbeat = Some(value.parse().map_err(bad)?),
            "connection_timeout" => query.connection_timeout = Some(value.parse().map_err(bad)?),
            "frame_max" => query.frame_max = Some(value.parse().map_err(bad)?),
            "channel_max" => query.channel_max = Some(value.parse().map_err(bad)?),
            _ => {}
        }
    }
    Ok(AMQPUri {
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo { username, password },
            host,
            port: url.port().unwrap_or_else(|| scheme.default_port()),
        },
        scheme,
        vhost,
        query,
    })
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl fmt::Display for BrokerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.amqp.authority;
        let host = if a.host.contains(':') {
            format!("[{}]", a.host)
        } else {
            a.host.clone()
        };
        write!(
            f,
            "{}://{}:***@{}:{}/{}",
            self.amqp.scheme,
            a.userinfo.username,
            host,
            a.port,
            percent_encoding::utf8_percent_encode(
                &self.amqp.vhost,
                percent_encoding::NON_ALPHANUMERIC
            )
        )
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
    fn special_characters_in_credentials_are_percent_decoded() {
        let e = BrokerEndpoint::from_uri(
            "amqp://us%23er%40x:p%40ss%23w%25rd%2F@rabbit:5673/%2f",
            None,
        )
        .unwrap();
        assert_eq!(e.username(), "us#er@x");
        assert_eq!(e.amqp().authority.userinfo.password, "p@ss#w%rd/");
        assert_eq!(e.amqp().authority.port, 5673);
        assert_eq!(e.vhost(), "/");
        assert_eq!(e.management().password, "p@ss#w%rd/");
        assert_eq!(e.management().base.as_str(), "http://rabbit:15672/");
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
    fn parts_need_no_encoding_and_round_trip_through_the_uri() {
        let e = BrokerEndpoint::from_parts("rabbit", None, "a@b", "p#%/@", false, None).unwrap();
        let again = BrokerEndpoint::from_uri(&e.amqp_uri_with_password(), None).unwrap();
        assert_eq!(again.amqp().authority.userinfo.password, "p#%/@");
        assert_eq!(again.username(), "a@b");
        assert_eq!(e.with_vhost("logs").vhost(), "logs");
    }

    #[test]
    fn ip_hosts_and_default_vhosts_are_kept() {
        let e = BrokerEndpoint::from_uri("amqp://guest:guest@10.1.2.3", None).unwrap();
        assert_eq!(e.amqp().authority.host, "10.1.2.3");
        assert_eq!(e.vhost(), "/");
        assert_eq!(
            BrokerEndpoint::from_uri("amqp://h/", None).unwrap().vhost(),
            "/"
        );
        assert_eq!(
            BrokerEndpoint::from_uri("amqp://h/logs%2Fprod", None)
                .unwrap()
                .vhost(),
            "logs/prod"
        );
        let v6 = BrokerEndpoint::from_uri("amqp://u:p@[::1]:5672/%2f?heartbeat=10", None).unwrap();
        assert_eq!(v6.amqp().authority.host, "::1");
        assert_eq!(v6.amqp().query.heartbeat, Some(10));
        assert_eq!(v6.management().base.as_str(), "http://[::1]:15672/");
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
