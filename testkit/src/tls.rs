//! Certificates for TLS tests, made by the `openssl` command line in a directory of their own
//! (deleted on drop): a CA, a server certificate for `127.0.0.1` and `localhost` signed by it,
//! a client certificate signed by it, and a second CA that signed nothing of these (the wrong
//! CA). Every key is EC P-256; certificates are valid for two days.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::unique;

/// A CA with a server and a client certificate, as PEM files in one directory.
#[derive(Debug)]
pub struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    /// Makes the certificates (`openssl` must be on `PATH`).
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("logstream-tls"));
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let certs = Self { dir };
        certs.self_signed("ca", "logstream-test-ca");
        certs.self_signed("other-ca", "logstream-test-other-ca");
        certs.signed(
            "server",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        certs.signed(
            "client",
            "logstream-test-client",
            "extendedKeyUsage=clientAuth\n",
        );
        certs
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file of the directory, e.g. `ca.crt`, `server.key`, `client.crt`, `other-ca.crt`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A file's content.
    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).expect("read a test certificate")
    }

    /// A file's content as text.
    pub fn text(&self, file: &str) -> String {
        String::from_utf8(self.read(file)).expect("PEM is text")
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl (is it installed?)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn key_and_request(&self, name: &str, cn: &str, x509: bool) {
        let (key, out) = (format!("{name}.key"), format!("{name}.crt"));
        let csr = format!("{name}.csr");
        let subject = format!("/CN={cn}");
        let mut args = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            &subject,
        ];
        if x509 {
            args.extend(["-x509", "-days", "2", "-out", &out]);
        } else {
            args.extend(["-out", &csr]);
        }
        self.openssl(&args);
    }

    fn self_signed(&self, name: &str, cn: &str) {
        self.key_and_request(name, cn, true);
    }

    fn signed(&self, name: &str, cn: &str, extensions: &str) {
        self.key_and_request(name, cn, false);
        let ext = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext), extensions).expect("write the extensions file");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.crt"),
        ]);
    }
}

impl Default for TestCerts {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
