//! Reading the Secrets the worker gets as files (a Secret volume in the cluster, a directory
//! `logstream dev` writes): one file per key. Errors name the Secret, the key and the file,
//! never a value.

use std::path::Path;

use logstream_api::worker_config::SecretFiles;

/// Why a Secret's key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file of the key does not exist or cannot be read.
    #[error("failed to read key {key} of Secret {secret} from {path}: {reason}")]
    Unreadable {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The value is not UTF-8 text.
    #[error("key {key} of Secret {secret} is not UTF-8 text")]
    NotText {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
}

/// The value of `key` of the Secret in `files`, as bytes.
pub fn read_bytes(files: &SecretFiles, key: &str) -> Result<Vec<u8>, SecretError> {
    let path = Path::new(&files.dir).join(key);
    std::fs::read(&path).map_err(|e| SecretError::Unreadable {
        secret: files.secret.clone(),
        key: key.to_owned(),
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })
}

/// The value of `key` of the Secret in `files`, as text without surrounding white space (a
/// trailing newline in a Secret is a common accident).
pub fn read_text(files: &SecretFiles, key: &str) -> Result<String, SecretError> {
    let bytes = read_bytes(files, key)?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_owned())
        .map_err(|_| SecretError::NotText {
            secret: files.secret.clone(),
            key: key.to_owned(),
        })
}

/// The value of `key` when the Secret has it: `None` when its file does not exist.
pub fn read_optional(files: &SecretFiles, key: &str) -> Result<Option<String>, SecretError> {
    if Path::new(&files.dir).join(key).exists() {
        read_text(files, key).map(Some)
    } else {
        Ok(None)
    }
}

/// Every key of the Secret in `files` with its text value, sorted by key (Kubernetes' own
/// `..data` links and dot-files are skipped).
pub fn read_all(files: &SecretFiles) -> Result<Vec<(String, String)>, SecretError> {
    let unreadable = |e: std::io::Error| SecretError::Unreadable {
        secret: files.secret.clone(),
        key: "*".into(),
        path: files.dir.clone(),
        reason: e.kind().to_string(),
    };
    let mut keys: Vec<String> = std::fs::read_dir(&files.dir)
        .map_err(unreadable)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    keys.sort();
    keys.into_iter()
        .map(|key| read_text(files, &key).map(|value| (key, value)))
        .collect()
}

/// A directory holding Secret `name` as files, one per key, as the worker reads Secrets.
#[cfg(test)]
pub(crate) fn secret_dir(name: &str, files: &[(&str, &str)]) -> SecretFiles {
    let dir = std::env::temp_dir().join(format!(
        "logstream-secret-{name}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (k, v) in files {
        std::fs::write(dir.join(k), v).unwrap();
    }
    SecretFiles {
        secret: name.into(),
        dir: dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_files_and_errors_never_show_values() {
        let files = secret_dir(
            "loki-auth",
            &[
                ("username", "alice\n"),
                ("password", "s3cret"),
                (".hidden", "x"),
            ],
        );
        assert_eq!(read_text(&files, "username").unwrap(), "alice");
        assert_eq!(read_optional(&files, "token").unwrap(), None);
        assert_eq!(
            read_all(&files).unwrap(),
            [
                ("password".to_owned(), "s3cret".to_owned()),
                ("username".to_owned(), "alice".to_owned())
            ]
        );
        let err = read_text(&files, "token").unwrap_err().to_string();
        assert!(
            err.starts_with("failed to read key token of Secret loki-auth from "),
            "{err}"
        );
        assert!(!err.contains("s3cret"));
        std::fs::remove_dir_all(&files.dir).unwrap();
    }
}
