//! Where a broker is and how to log in, from a Secret's `uri` or `host`/`username`/`password`,
//! and the TLS material of its connections.
//!
//! Passwords never leave this type in text: `Display` and `Debug` print the redacted form
//! `amqp://user:***@host:5672/vhost` (every host of a cluster's list), which is what logs,
//! events and status may show.

use std::fmt;

use lapin::uri::AMQPUri;
use url::Url;

use crate::{
    address::{AMQP_PORT, AMQPS_PORT, AmqpAddress, AmqpUriError, HostPort, expand_hosts},
    tls::TlsMaterial,
};

/// Port of the management API when the Secret does not name a management URI.
pub const DEFAULT_MANAGEMENT_PORT: u16 = 15672;
/// Port of the management API over `https` (for an `amqps` broker) when the Secret does not
/// name a management URI: RabbitMQ's `management.ssl.port` convention.
pub const DEFAULT_MANAGEMENT_TLS_PORT: u16 = 15671;

/// Why broker coordinates could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The AMQP URI does not parse. The URI is not repeated: it may hold a password.
    #[error(transparent)]
    AmqpUri(#[from] AmqpUriError),
    /// The management URI does not parse.
    #[error(
        "invalid management URI: {0} (expected http://host:15672 or https://host:15671, or several hosts as https://host1:15671,host2:15671)"
    )]
    ManagementUri(String),
    /// A CA or client certificate for a broker reached without TLS.
    #[error(
        "a CA or client certificate was given for broker {0}, which is not reached over TLS: use an amqps:// URI (port 5671)"
    )]
    TlsWithoutAmqps(String),
}

/// Credentials and addresses of the management HTTP API.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagementEndpoint {
    /// Base URL without credentials, e.g. `http://rabbitmq:15672/`: the first (or only) node.
    pub base: Url,
    /// Base URLs of further nodes, tried in turn when the ones before do not answer.
    pub others: Vec<Url>,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// The CA and client certificate of `https` requests.
    pub tls: TlsMaterial,
}

impl ManagementEndpoint {
    /// Every base URL, in the order requests try them.
    pub fn bases(&self) -> impl Iterator<Item = &Url> {
        std::iter::once(&self.base).chain(&self.others)
    }
}

/// A broker's AMQP and management coordinates with credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    address: AmqpAddress,
    management: ManagementEndpoint,
}

impl BrokerEndpoint {
    /// Reads an `amqp://` or `amqps://` URI (user and password percent-decoded; several hosts
    /// comma-separated) and an optional management URI; without one, the management API is
    /// assumed on each AMQP host, port 15672 (`https` and port 15671 when the AMQP URI is
    /// `amqps`). Credentials in the management URI win over the AMQP ones.
    pub fn from_uri(amqp_uri: &str, management_uri: Option<&str>) -> Result<Self, EndpointError> {
        let address = AmqpAddress::parse(amqp_uri)?;
        Self::with_management(address, management_uri)
    }

    /// Builds the endpoint from separate fields, as a Secret with `host`, `username` and
    /// `password` keys gives them (no encoding needed); `hosts` may list several,
    /// comma-separated, all on `port`.
    pub fn from_parts(
        hosts: &str,
        port: Option<u16>,
        username: &str,
        password: &str,
        tls: bool,
        management_uri: Option<&str>,
    ) -> Result<Self, EndpointError> {
        let port = port.unwrap_or(if tls { AMQPS_PORT } else { AMQP_PORT });
        let hosts = hosts
            .split(',')
            .map(str::trim)
            .map(|host| {
                if host.is_empty() {
                    return Err(AmqpUriError::new("an empty host in the host list"));
                }
                Ok(HostPort {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let address = AmqpAddress {
            tls,
            hosts,
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
                let mut bases = Vec::new();
                let mut credentials = None;
                for one in expand_hosts(raw).map_err(EndpointError::ManagementUri)? {
                    let mut url = Url::parse(&one)
                        .map_err(|e| EndpointError::ManagementUri(e.to_string()))?;
                    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                        return Err(EndpointError::ManagementUri(format!(
                            "scheme must be http or https with a host, got {}",
                            url.scheme()
                        )));
                    }
                    credentials.get_or_insert_with(|| {
                        let username = match url.username() {
                            "" => address.username.clone(),
                            user => decode(user),
                        };
                        let password = url
                            .password()
                            .map_or_else(|| address.password.clone(), decode);
                        (username, password)
                    });
                    // Credentials travel in the Authorization header, never in the URL.
                    let _ = url.set_username("");
                    let _ = url.set_password(None);
                    bases.push(url);
                }
                let (username, password) = credentials.unwrap_or_default();
                let mut bases = bases.into_iter();
                ManagementEndpoint {
                    base: bases
                        .next()
                        .ok_or_else(|| EndpointError::ManagementUri("no host".into()))?,
                    others: bases.collect(),
                    username,
                    password,
                    tls: TlsMaterial::default(),
                }
            }
            None => {
                let (scheme, port) = if address.tls {
                    ("https", DEFAULT_MANAGEMENT_TLS_PORT)
                } else {
                    ("http", DEFAULT_MANAGEMENT_PORT)
                };
                let mut bases = address
                    .hosts
                    .iter()
                    .map(|h| Url::parse(&format!("{scheme}://{}:{port}/", h.host_for_uri())))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| EndpointError::ManagementUri(e.to_string()))?
                    .into_iter();
                ManagementEndpoint {
                    base: bases
                        .next()
                        .ok_or_else(|| EndpointError::ManagementUri("no host".into()))?,
                    others: bases.collect(),
                    username: address.username.clone(),
                    password: address.password.clone(),
                    tls: TlsMaterial::default(),
                }
            }
        };
        Ok(Self {
            address,
            management,
        })
    }

    /// The same broker, reached with `tls` (its CA and client certificate) over AMQP and the
    /// management API. Refused for a broker reached without TLS (`amqp://`): the material
    /// would be silently unused.
    pub fn with_tls(mut self, tls: TlsMaterial) -> Result<Self, EndpointError> {
        if !tls.is_empty() && !self.address.tls {
            return Err(EndpointError::TlsWithoutAmqps(self.to_string()));
        }
        self.management.tls = tls;
        Ok(self)
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

    /// The CA and client certificate of TLS connections (empty: the system's CAs).
    pub fn tls(&self) -> &TlsMaterial {
        &self.management.tls
    }

    /// What tells connections to `vhost` on this endpoint apart from others, for the maps that
    /// keep connections open: the hosts, the user, a digest of the password (new credentials
    /// get a connection of their own) and of the TLS material (a wrong CA must not borrow a
    /// connection made with the right one), the management API and the vhost. Holds no secret.
    pub fn connection_key(&self, vhost: &str) -> String {
        format!(
            "{self:?}|{}|{:016x}|{vhost}",
            logstream_api::digest::hex(&self.amqp_uri_with_password()),
            self.tls().fingerprint(),
        )
    }

    /// The AMQP hosts, in the order connections try them.
    pub fn hosts(&self) -> &[HostPort] {
        &self.address.hosts
    }

    /// The first AMQP host (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.address.hosts[0].host
    }

    /// The first AMQP host's port.
    pub fn port(&self) -> u16 {
        self.address.hosts[0].port
    }

    /// The first host's AMQP coordinates as lapin takes them.
    pub fn amqp(&self) -> AMQPUri {
        self.amqp_uris().swap_remove(0)
    }

    /// Each host's AMQP coordinates as lapin takes them, in the order connections try them.
    pub fn amqp_uris(&self) -> Vec<AMQPUri> {
        self.address.lapin_uris()
    }

    /// How long one host may take to open a connection: the URI's `connection_timeout`, else
    /// `default`.
    pub fn connect_timeout(&self, default: std::time::Duration) -> std::time::Duration {
        self.address
            .connection_timeout_ms
            .map_or(default, std::time::Duration::from_millis)
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

    /// Where the broker is, without credentials or vhost: `amqp://host:5672/` (every host of
    /// a list, and the URI's `heartbeat` and `connection_timeout`); safe to show, and what a
    /// worker gets when its user and password come separately.
    pub fn location_uri(&self) -> String {
        self.address.to_location_uri()
    }

    /// The full AMQP URI with the password, percent-encoded (every host of a list); for
    /// handing to a worker through a Secret, never for display.
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
            "BrokerEndpoint({self}, management {}, {:?})",
            self.management.base, self.management.tls
        )
    }
}

impl fmt::Debug for ManagementEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManagementEndpoint(")?;
        for (i, base) in self.bases().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{base}")?;
        }
        write!(f, " as {})", self.username)
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
        assert_eq!(v6.management().base.as_str(), "https://[::1]:15671/");
    }

    #[test]
    fn every_host_of_a_list_has_its_management_api_unless_one_is_named() {
        let e = BrokerEndpoint::from_uri("amqp://u:p@r0,r1:5673/%2f", None).unwrap();
        let bases: Vec<&str> = e.management().bases().map(Url::as_str).collect();
        assert_eq!(bases, ["http://r0:15672/", "http://r1:15672/"]);
        assert_eq!(e.amqp_uris().len(), 2);
        let named = BrokerEndpoint::from_uri(
            "amqps://u:p@r0,r1/%2f",
            Some("https://admin:s3cret@m0:15671,m1:15671/prefix/"),
        )
        .unwrap();
        let bases: Vec<&str> = named.management().bases().map(Url::as_str).collect();
        assert_eq!(
            bases,
            ["https://m0:15671/prefix/", "https://m1:15671/prefix/"]
        );
        assert_eq!(named.management().password, "s3cret");
        assert!(!format!("{named:?}").contains("s3cret"));
        let parts =
            BrokerEndpoint::from_parts("r0, r1,[fd00::1]", Some(5671), "u", "p", true, None)
                .unwrap();
        assert_eq!(
            parts.to_string(),
            "amqps://u:***@r0:5671,r1:5671,[fd00::1]:5671/%2F"
        );
        assert_eq!(
            parts.management().others[1].as_str(),
            "https://[fd00::1]:15671/"
        );
        assert!(BrokerEndpoint::from_parts("r0,", None, "u", "p", false, None).is_err());
    }

    #[test]
    fn tls_material_needs_an_amqps_broker() {
        let tls = crate::tls::TlsMaterial::default()
            .with_ca(crate::tls::TEST_CERT.into(), "file")
            .unwrap();
        let plain = BrokerEndpoint::from_uri("amqp://u:s3cret@h/%2f", None).unwrap();
        let err = plain.with_tls(tls.clone()).unwrap_err().to_string();
        assert_eq!(
            err,
            "a CA or client certificate was given for broker amqp://u:***@h:5672/%2F, which is not reached over TLS: use an amqps:// URI (port 5671)"
        );
        let e = BrokerEndpoint::from_uri("amqps://u:p@h/%2f", None)
            .unwrap()
            .with_tls(tls)
            .unwrap();
        assert!(e.tls().has_ca() && e.management().tls.has_ca());
        assert!(
            BrokerEndpoint::from_uri("amqp://u:p@h/%2f", None)
                .unwrap()
                .with_tls(crate::tls::TlsMaterial::default())
                .is_ok()
        );
    }

    #[test]
    fn connection_keys_differ_by_password_tls_and_vhost_and_show_no_secret() {
        let plain = BrokerEndpoint::from_uri("amqps://u:s3cret@h/%2f", None).unwrap();
        let with_ca = |pem: String| {
            plain
                .clone()
                .with_tls(
                    crate::tls::TlsMaterial::default()
                        .with_ca(pem.into_bytes(), "file")
                        .unwrap(),
                )
                .unwrap()
        };
        let right = with_ca(crate::tls::TEST_CERT.to_owned());
        let wrong = with_ca(format!("{0}{0}", crate::tls::TEST_CERT));
        let key = |e: &BrokerEndpoint| e.connection_key("/");
        assert_ne!(
            key(&right),
            key(&wrong),
            "a wrong CA gets a connection of its own"
        );
        assert_ne!(key(&plain), key(&right));
        assert_eq!(key(&right), key(&with_ca(crate::tls::TEST_CERT.to_owned())));
        assert_ne!(key(&plain), key(&plain.with_credentials("u", "other")));
        assert_ne!(key(&plain), plain.connection_key("logs"));
        assert!(!key(&right).contains("s3cret"));
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
