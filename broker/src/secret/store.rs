//! Where secret values come from: the environment and a secrets file.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

/// Longest secret name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest secrets file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most secrets one store holds.
pub const MAX_SECRETS: usize = 1024;
/// Largest secret value.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Environment variables named `MXP_SECRET_<NAME>` define secret `NAME`.
pub const ENV_PREFIX: &str = "MXP_SECRET_";

/// A valid secret name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

impl SecretName {
    /// Checks `name`.
    ///
    /// # Errors
    /// [`SecretError::BadName`].
    pub fn new(name: &str) -> Result<SecretName, SecretError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(SecretName(name.to_owned()))
        } else {
            Err(SecretError::BadName(
                name.chars().take(MAX_NAME_LEN).collect(),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a secret could not be loaded or resolved. No variant carries a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// A name outside the allowed alphabet or length.
    #[error("{0:?} is not a secret name (1 to 64 of A-Z a-z 0-9 _ . -)")]
    BadName(String),
    /// A reference to a secret no source defines.
    #[error(
        "secret {0:?} is not defined: set {ENV_PREFIX}{0} in the node's environment or add it to the secrets file"
    )]
    Unknown(String),
    /// `{"$secret": ...}` whose value is not a string, or with other keys.
    #[error("a secret reference must be exactly {{\"$secret\": \"NAME\"}}")]
    BadReference,
    /// The secrets file can be read by others than its owner.
    #[error(
        "secrets file {path}: mode {mode:o} lets others read it; run chmod 600 on it (the node refuses group or world bits)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secrets file is not a regular file.
    #[error("secrets file {0}: not a regular file")]
    NotAFile(PathBuf),
    /// Over a size or count limit.
    #[error("secrets file {path}: {what}")]
    Limit {
        /// The file.
        path: PathBuf,
        /// Which limit.
        what: String,
    },
    /// The secrets file is not a TOML table of `NAME = "value"` lines.
    #[error("secrets file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a value).
        reason: String,
    },
    /// The file could not be read.
    #[error("secrets file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Arguments nest deeper than the resolver walks.
    #[error("arguments nest deeper than {0} levels")]
    TooDeep(usize),
}

/// Secret values by name, held in memory that is wiped on drop.
#[derive(Default)]
pub struct SecretStore {
    values: BTreeMap<SecretName, SecretString>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: never a value.
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl SecretStore {
    /// An empty store.
    pub fn new() -> SecretStore {
        SecretStore::default()
    }

    /// Adds (or replaces) a secret.
    ///
    /// # Errors
    /// [`SecretError::BadName`], or [`SecretError::Limit`] for a value over
    /// [`MAX_VALUE_BYTES`] or a store over [`MAX_SECRETS`].
    pub fn insert(&mut self, name: &str, value: SecretString) -> Result<(), SecretError> {
        let name = SecretName::new(name)?;
        if value.expose_secret().len() > MAX_VALUE_BYTES {
            return Err(SecretError::Limit {
                path: PathBuf::new(),
                what: format!("secret {name:?} is over {MAX_VALUE_BYTES} bytes"),
            });
        }
        if self.values.len() >= MAX_SECRETS && !self.values.contains_key(&name) {
            return Err(SecretError::Limit {
                path: PathBuf::new(),
                what: format!("more than {MAX_SECRETS} secrets"),
            });
        }
        self.values.insert(name, value);
        Ok(())
    }

    /// Adds every `MXP_SECRET_<NAME>` variable of `vars` (pass
    /// `std::env::vars_os()`); variables that are not valid UTF-8 or whose
    /// names are not secret names are skipped and their names returned.
    pub fn add_env(
        &mut self,
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Vec<String> {
        let mut skipped = Vec::new();
        for (k, v) in vars {
            let Some(k) = k.to_str() else { continue };
            let Some(name) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            match v.into_string() {
                Ok(v) => {
                    if self.insert(name, SecretString::from(v)).is_err() {
                        skipped.push(k.to_owned());
                    }
                }
                Err(_) => skipped.push(k.to_owned()),
            }
        }
        skipped
    }

    /// Adds the secrets of a TOML file of `NAME = "value"` lines, which must
    /// be a regular file with no group or world permission bits (0600 or
    /// 0400).
    ///
    /// # Errors
    /// [`SecretError`] naming the file and what is wrong (never a value).
    pub fn add_file(&mut self, path: &Path) -> Result<(), SecretError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| SecretError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // Checked on the open file: a swap after the check can't matter.
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(SecretError::NotAFile(path.to_owned()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = zeroize::Zeroizing::new(String::new());
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(SecretError::Limit {
                path: path.to_owned(),
                what: format!("over {MAX_FILE_BYTES} bytes"),
            });
        }
        let table: toml::Table = toml::from_str(&text).map_err(|e| SecretError::Parse {
            path: path.to_owned(),
            // toml's message quotes the offending line: keep only where.
            reason: match e.span() {
                Some(s) => format!("not TOML `NAME = \"value\"` lines (at byte {})", s.start),
                None => "not TOML `NAME = \"value\"` lines".into(),
            },
        })?;
        for (name, value) in table {
            let toml::Value::String(value) = value else {
                return Err(SecretError::Parse {
                    path: path.to_owned(),
                    reason: format!("{name:?} is not a string"),
                });
            };
            self.insert(&name, SecretString::from(value))
                .map_err(|e| match e {
                    SecretError::Limit { what, .. } => SecretError::Limit {
                        path: path.to_owned(),
                        what,
                    },
                    other => other,
                })?;
        }
        Ok(())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        SecretName::new(name).ok().and_then(|n| self.values.get(&n))
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &SecretName> {
        self.values.keys()
    }

    /// How many secrets.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_are_checked() {
        assert!(SecretName::new("API_KEY.v2-x").is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert!(matches!(SecretName::new(bad), Err(SecretError::BadName(_))));
        }
    }

    #[test]
    fn env_variables_with_the_prefix_are_secrets() {
        let mut s = SecretStore::new();
        let skipped = s.add_env([
            ("MXP_SECRET_TOKEN".into(), "t0k".into()),
            ("PATH".into(), "/bin".into()),
            ("MXP_SECRET_bad name".into(), "x".into()),
        ]);
        assert_eq!(s.get("TOKEN").map(|v| v.expose_secret()), Some("t0k"));
        assert_eq!(s.len(), 1);
        assert_eq!(skipped, vec!["MXP_SECRET_bad name".to_owned()]);
    }

    #[test]
    fn the_file_must_be_private_and_errors_never_show_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.toml");
        std::fs::write(&p, "API = \"hunter2-canary\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretStore::new().add_file(&p).unwrap_err();
        assert!(
            matches!(e, SecretError::Permissions { mode: 0o644, .. }),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut s = SecretStore::new();
        s.add_file(&p).unwrap();
        assert_eq!(s.get("API").unwrap().expose_secret(), "hunter2-canary");
        assert!(!format!("{s:?}").contains("hunter2"));

        std::fs::write(&p, "API = \"hunter2-canary\nX = 1\n").unwrap();
        let e = SecretStore::new().add_file(&p).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        std::fs::write(&p, "X = 1\n").unwrap();
        let e = SecretStore::new().add_file(&p).unwrap_err().to_string();
        assert!(e.contains("\"X\" is not a string"), "{e}");
        let e = SecretStore::new().add_file(dir.path()).unwrap_err();
        assert!(matches!(e, SecretError::NotAFile(_)), "{e}");
    }
}
