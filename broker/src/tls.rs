//! TLS to the broker beyond the system's trusted CAs: the CA the broker's certificate is
//! checked against and the client certificate shown to it (PEM, with the keys cert-manager
//! writes: `ca.crt`, `tls.crt`, `tls.key`). One [`TlsMaterial`] serves the AMQP connection
//! (rustls, through lapin) and the management API (rustls, through reqwest), so both trust the
//! same CA and show the same certificate.
//!
//! Naming a CA means the broker's certificate must come from it: the system's CAs are not
//! trusted then, as for an HTTP sink's `tls.caSecretRef`. The private key never leaves this
//! type in text: `Debug` says only what is there.

use std::fmt;

use lapin::tcp::{RustlsConnector, RustlsConnectorConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Key of the CA certificates (PEM) in a Secret, as cert-manager writes it.
pub const CA_KEY: &str = "ca.crt";
/// Key of the client certificate (PEM) in a Secret (`kubernetes.io/tls`).
pub const CERT_KEY: &str = "tls.crt";
/// Key of the client certificate's private key (PEM).
pub const KEY_KEY: &str = "tls.key";

/// Why TLS material was refused. Names where it came from, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to read the broker's {what} from {from}: {reason}")]
pub struct TlsError {
    /// `CA` or `client certificate`.
    what: &'static str,
    /// Where it came from, e.g. `key ca.crt of Secret rabbit-ca` or `file ca.pem`.
    from: String,
    /// What is wrong with it.
    reason: String,
}

/// A client certificate and its key, PEM.
#[derive(Clone, PartialEq, Eq)]
struct ClientCert {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// The CA and client certificate of connections to one broker; empty means the system's
/// trusted CAs and no client certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    ca: Option<Vec<u8>>,
    client: Option<ClientCert>,
}

impl TlsMaterial {
    /// Trusts only the CA certificates in `pem` (from `from`, for messages).
    pub fn with_ca(mut self, pem: Vec<u8>, from: &str) -> Result<Self, TlsError> {
        let refuse = |reason: &str| TlsError {
            what: "CA",
            from: from.to_owned(),
            reason: reason.to_owned(),
        };
        let certs = certificates(&pem).map_err(|_| refuse("it is not PEM"))?;
        if certs.is_empty() {
            return Err(refuse("it holds no PEM certificate"));
        }
        self.ca = Some(pem);
        Ok(self)
    }

    /// Shows the certificate `cert` with its private key `key` (PEM; from `from`, for
    /// messages).
    pub fn with_client_cert(
        mut self,
        cert: Vec<u8>,
        key: Vec<u8>,
        from: &str,
    ) -> Result<Self, TlsError> {
        let refuse = |reason: &str| TlsError {
            what: "client certificate",
            from: from.to_owned(),
            reason: reason.to_owned(),
        };
        match certificates(&cert) {
            Ok(certs) if !certs.is_empty() => {}
            _ => return Err(refuse(&format!("{CERT_KEY} holds no PEM certificate"))),
        }
        if PrivateKeyDer::from_pem_slice(&key).is_err() {
            return Err(refuse(&format!("{KEY_KEY} holds no PEM private key")));
        }
        self.client = Some(ClientCert { cert, key });
        Ok(self)
    }

    /// True when neither a CA nor a client certificate is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// A digest of the CA and the client certificate and key (FNV-1a; 0 when empty), so that
    /// connections kept by broker can tell two TLS settings of one URI apart without holding
    /// the key material in their map.
    pub fn fingerprint(&self) -> u64 {
        let mut bytes = Vec::new();
        for part in [
            self.ca.as_deref(),
            self.client.as_ref().map(|c| c.cert.as_slice()),
            self.client.as_ref().map(|c| c.key.as_slice()),
        ] {
            bytes.extend_from_slice(&part.map_or(0, <[u8]>::len).to_le_bytes());
            bytes.extend_from_slice(part.unwrap_or_default());
        }
        if self.is_empty() {
            0
        } else {
            logstream_api::digest::fnv1a(&bytes)
        }
    }

    /// True when a CA is set.
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// True when a client certificate is set.
    pub fn has_client_cert(&self) -> bool {
        self.client.is_some()
    }

    /// The connector of AMQP connections: only the CA when one is set, else the platform's
    /// verifier (as lapin's default), and the client certificate when one is set.
    pub(crate) fn amqp_connector(&self) -> std::io::Result<RustlsConnector> {
        let config = match &self.ca {
            Some(pem) => {
                let mut config = RustlsConnectorConfig::default();
                config.add_parsable_certificates(certificates(pem)?);
                config
            }
            None => RustlsConnectorConfig::new_with_platform_verifier(),
        };
        match &self.client {
            Some(client) => {
                let key = PrivateKeyDer::from_pem_slice(&client.key)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                config.connector_with_single_cert(certificates(&client.cert)?, key)
            }
            None => config.connector_with_no_client_auth(),
        }
    }

    /// `builder` trusting only the CA when one is set, and showing the client certificate.
    pub(crate) fn apply_to(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, reqwest::Error> {
        if let Some(pem) = &self.ca {
            builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        if let Some(client) = &self.client {
            let mut pem = client.cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(&client.key);
            builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
        }
        Ok(builder)
    }
}

fn certificates(pem: &[u8]) -> std::io::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ca = if self.ca.is_some() {
            "CA given"
        } else {
            "system CAs"
        };
        let client = if self.client.is_some() {
            ", client certificate"
        } else {
            ""
        };
        write!(f, "TlsMaterial({ca}{client})")
    }
}

/// A self-signed certificate (CN logstream-test, EC P-256, valid 100 years), made with
/// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes`; its key was
/// thrown away.
#[cfg(test)]
pub(crate) const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUJChmTkwaSE0Qr9hskkjhXWwGDLUwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwObG9nc3RyZWFtLXRlc3QwIBcNMjYxMjAzMTQ0OTE1WhgPMjEy
NjExMDkxNDQ5MTVaMBkxFzAVBgNVBAMMDmxvZ3N0cmVhbS10ZXN0MFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAE6VRS9CERuNTiy1nizix4rb7ivVqA4ANXjoY2dBK8
GsCE/VLrHl8AbGtB4yfjMmc06gIiJWBG+CvAq0nuUHCh+KNTMFEwHQYDVR0OBBYE
FHU5FPQjawuZEmuPeAdeXR8pKbzPMB8GA1UdIwQYMBaAFHU5FPQjawuZEmuPeAde
XR8pKbzPMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgZIVFDYTm
iKDr0XKnm1D5PYEU9wURncaRYkxH4jyu5mkCIQC1cMr0fgOI99WWsgEtQXytMnp8
0YFXoWuDZBCi4No/vw==
-----END CERTIFICATE-----
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_checked_when_given_and_errors_name_its_source_only() {
        let err = TlsMaterial::default()
            .with_ca(
                b"not a certificate".to_vec(),
                "key ca.crt of Secret rabbit-ca",
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "failed to read the broker's CA from key ca.crt of Secret rabbit-ca: it holds no PEM certificate"
        );
        let err = TlsMaterial::default()
            .with_client_cert(
                TEST_CERT.into(),
                b"s3cret-key".to_vec(),
                "Secret rabbit-client",
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "failed to read the broker's client certificate from Secret rabbit-client: tls.key holds no PEM private key"
        );
        let tls = TlsMaterial::default()
            .with_ca(TEST_CERT.into(), "file ca.pem")
            .unwrap();
        assert!(tls.has_ca() && !tls.has_client_cert() && !tls.is_empty());
        assert_eq!(format!("{tls:?}"), "TlsMaterial(CA given)");
        assert!(tls.amqp_connector().is_ok());
    }

    #[test]
    fn the_fingerprint_tells_tls_settings_apart() {
        let none = TlsMaterial::default();
        let ca = none.clone().with_ca(TEST_CERT.into(), "a").unwrap();
        let same = none.clone().with_ca(TEST_CERT.into(), "b").unwrap();
        let other = none
            .clone()
            .with_ca(format!("{TEST_CERT}{TEST_CERT}").into_bytes(), "c")
            .unwrap();
        assert_eq!(none.fingerprint(), 0);
        assert_ne!(ca.fingerprint(), 0);
        assert_eq!(ca.fingerprint(), same.fingerprint());
        assert_ne!(ca.fingerprint(), other.fingerprint());
    }
}
