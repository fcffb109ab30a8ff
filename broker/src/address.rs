//! Reading `amqp://` and `amqps://` URIs: the AMQP half of a
//! [`BrokerEndpoint`](crate::BrokerEndpoint).
//!
//! User and password are percent-decoded (so `#`, `@`, `%`, `/` work when encoded), IP hosts
//! are kept as they are, an empty path means the default vhost `/`, and errors never repeat
//! the input, which may hold a password.
//!
//! The nodes of a cluster are listed in one URI, comma-separated, each with an optional port:
//! `amqp://user:password@rabbit-0:5672,rabbit-1,[fd00::2]:5673/vhost`. Credentials, vhost and
//! query belong to every host; connections try the hosts in the order given.

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
    "invalid AMQP URI: {0} (expected amqp://user:password@host:5672/vhost, or several hosts as host1:5672,host2:5672, with special characters in user and password percent-encoded)"
)]
pub struct AmqpUriError(String);

impl AmqpUriError {
    pub(crate) fn new(reason: &str) -> Self {
        Self(reason.to_owned())
    }
}

/// One node: a host name or IP address (IPv6 without brackets) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl HostPort {
    /// The host as it appears in a URI (IPv6 in brackets).
    pub fn host_for_uri(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for HostPort {
    /// `host:port` (IPv6 in brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host_for_uri(), self.port)
    }
}

/// The parts of an AMQP URI, decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpAddress {
    /// `amqps` (TLS) or `amqp`.
    pub tls: bool,
    /// The nodes, in the order connections try them; never empty.
    pub hosts: Vec<HostPort>,
    /// User name, decoded. Empty when the URI has none.
    pub username: String,
    /// Password, decoded. Empty when the URI has none.
    pub password: String,
    /// Virtual host, decoded.
    pub vhost: String,
    /// `heartbeat` query parameter, seconds.
    pub heartbeat: Option<u16>,
    /// `connection_timeout` query parameter, milliseconds: how long one host may take to
    /// answer before the next is tried.
    pub connection_timeout_ms: Option<u64>,
}

/// `raw` with its comma-separated host list expanded: one URI per host, each with the same
/// scheme, user information, path and query (`amqp://u:p@a,b:1/v` gives `amqp://u:p@a/v` and
/// `amqp://u:p@b:1/v`). A URI of one host comes back as it is. The results hold the password:
/// never show them. Errors never repeat `raw`.
pub(crate) fn expand_hosts(raw: &str) -> Result<Vec<String>, String> {
    let raw = raw.trim();
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err("it does not start with a scheme such as amqp://".into());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // User information ends at the last `@` of the authority: a password may hold a comma.
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    hosts
        .split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, host)| {
            if host.is_empty() {
                Err(format!("host {} of the host list is empty", i + 1))
            } else {
                Ok(format!("{scheme}://{userinfo}{host}{tail}"))
            }
        })
        .collect()
}

impl AmqpAddress {
    /// The coordinates of each host, in order, as lapin takes them
    /// (`lapin::uri::AMQPUri`); lapin's own URI parser would turn an IP host into `localhost`.
    pub fn lapin_uris(&self) -> Vec<AMQPUri> {
        self.hosts.iter().map(|h| self.lapin_uri_of(h)).collect()
    }

    fn lapin_uri_of(&self, host: &HostPort) -> AMQPUri {
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
                host: host.host.clone(),
                port: host.port,
            },
            vhost: self.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: self.heartbeat,
                connection_timeout: self.connection_timeout_ms,
                ..AMQPQueryString::default()
            },
        }
    }

    /// Parses `raw`, one host or a comma-separated list of hosts.
    pub fn parse(raw: &str) -> Result<Self, AmqpUriError> {
        let mut uris = expand_hosts(raw).map_err(AmqpUriError)?.into_iter();
        let first = uris.next().ok_or_else(|| AmqpUriError("no host".into()))?;
        let mut address = Self::parse_one(&first)?;
        for uri in uris {
            let other = Self::parse_one(&uri)?;
            address.hosts.extend(other.hosts);
        }
        Ok(address)
    }

    /// Parses a URI of one host.
    fn parse_one(raw: &str) -> Result<Self, AmqpUriError> {
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
            hosts: vec![HostPort {
                host,
                port: url
                    .port()
                    .unwrap_or(if tls { AMQPS_PORT } else { AMQP_PORT }),
            }],
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
            "{}://{}:{}@{}/{}{}",
            self.scheme(),
            encode(&self.username),
            encode(&self.password),
            self.host_list(),
            encode(&self.vhost),
            self.query()
        )
    }

    /// The URI without user, password and vhost: `amqp://host:5672/` (every host, and the
    /// query).
    pub fn to_location_uri(&self) -> String {
        format!("{}://{}/{}", self.scheme(), self.host_list(), self.query())
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "amqps" } else { "amqp" }
    }

    /// `?heartbeat=…&connection_timeout=…`, or nothing.
    fn query(&self) -> String {
        let query: Vec<String> = [
            self.heartbeat.map(|h| format!("heartbeat={h}")),
            self.connection_timeout_ms
                .map(|t| format!("connection_timeout={t}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        }
    }

    /// The hosts as a URI lists them: `host1:5672,host2:5672`.
    pub fn host_list(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
        hosts.join(",")
    }
}

impl fmt::Display for AmqpAddress {
    /// The redacted URI, `amqp://user:***@host:5672/vhost` (every host of a list): safe for
    /// logs, events and status.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:***@{}/{}",
            self.scheme(),
            self.username,
            self.host_list(),
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

    fn host(a: &AmqpAddress) -> (&str, u16) {
        (a.hosts[0].host.as_str(), a.hosts[0].port)
    }

    #[test]
    fn special_characters_in_credentials_are_percent_decoded() {
        let a =
            AmqpAddress::parse("amqp://us%23er%40x:p%40ss%23w%25rd%2F@rabbit:5673/%2f").unwrap();
        assert_eq!(a.username, "us#er@x");
        assert_eq!(a.password, "p@ss#w%rd/");
        assert_eq!((host(&a), a.vhost.as_str()), (("rabbit", 5673), "/"));
        let again = AmqpAddress::parse(&a.to_uri_with_password()).unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn ip_hosts_default_ports_and_vhosts() {
        let a = AmqpAddress::parse("amqp://guest:guest@10.1.2.3").unwrap();
        assert_eq!((host(&a), a.vhost.as_str()), (("10.1.2.3", 5672), "/"));
        assert_eq!(
            AmqpAddress::parse("amqps://h/").unwrap().hosts[0].port,
            5671
        );
        assert_eq!(
            AmqpAddress::parse("amqp://h/logs%2Fprod").unwrap().vhost,
            "logs/prod"
        );
        let v6 = AmqpAddress::parse("amqp://u:p@[::1]:5672/%2f?heartbeat=10").unwrap();
        assert_eq!(v6.hosts[0].host, "::1");
        assert_eq!(v6.heartbeat, Some(10));
        assert_eq!(v6.to_string(), "amqp://u:***@[::1]:5672/%2F");
    }

    #[test]
    fn a_host_list_shares_credentials_vhost_and_query_and_keeps_its_order() {
        let a = AmqpAddress::parse(
            "amqps://app:p%40ss,w@rabbit-0,rabbit-1:5999, [fd00::2]:5673/logs?connection_timeout=2000",
        )
        .unwrap();
        assert_eq!(
            a.password, "p@ss,w",
            "a comma in the password is not a host"
        );
        let hosts: Vec<String> = a.hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["rabbit-0:5671", "rabbit-1:5999", "[fd00::2]:5673"]);
        assert_eq!(a.connection_timeout_ms, Some(2000));
        assert_eq!(
            a.to_string(),
            "amqps://app:***@rabbit-0:5671,rabbit-1:5999,[fd00::2]:5673/logs"
        );
        let uris = a.lapin_uris();
        assert_eq!(uris.len(), 3);
        assert_eq!(
            (uris[2].authority.host.as_str(), uris[2].authority.port),
            ("fd00::2", 5673)
        );
        assert!(uris.iter().all(|u| u.vhost == "logs"
            && u.authority.userinfo.password == "p@ss,w"
            && u.query.connection_timeout == Some(2000)));
        assert_eq!(AmqpAddress::parse(&a.to_uri_with_password()).unwrap(), a);
    }

    #[test]
    fn an_empty_or_bad_host_in_a_list_is_refused_without_the_password() {
        for raw in [
            "amqp://u:s3cret@a,,b/v",
            "amqp://u:s3cret@a,/v",
            "amqp://u:s3cret@a,b:port/v",
        ] {
            let e = AmqpAddress::parse(raw).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid AMQP URI") && !e.contains("s3cret"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_lapin_uri_keeps_ip_hosts_credentials_and_query() {
        let a = AmqpAddress::parse(
            "amqps://us%23er:p%40ss@10.1.2.3:5999/logs%2Fprod?heartbeat=10&connection_timeout=250",
        )
        .unwrap();
        let uri = &a.lapin_uris()[0];
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
