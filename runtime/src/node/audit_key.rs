//! The node's audit key: the Ed25519 seed it signs audit checkpoints with,
//! in `<data_dir>/identity/audit.key` (32 bytes). Made on first start from
//! the system's random source (ring's `SystemRandom`), in a file created
//! with mode 0600 (never loosened and then tightened); at every start a key
//! file that group or others may read or write is refused, as the node's TLS
//! key is. The seed is wiped from memory when dropped and never logged.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;
use zeroize::Zeroizing;

/// The key file's name inside the identity folder.
pub const AUDIT_KEY_FILE: &str = "audit.key";

/// Why the audit key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditKeyError {
    /// The file cannot be read or created.
    #[error("audit key {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a 32-byte seed.
    #[error(
        "audit key {path}: holds {len} bytes, not a 32-byte Ed25519 seed; move it away to make a new key (witnesses that pinned the old one will refuse the new one)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Group or others may read or write the file.
    #[error(
        "audit key {path} has mode {mode:04o}: group or other users may read or change it; fix: chmod 600 {path}"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Loads the audit key from `identity_dir`, creating it on first use.
/// Returns the seed and whether it was made now.
///
/// # Errors
/// [`AuditKeyError`] naming the file and the fix.
pub fn load_or_create(identity_dir: &Path) -> Result<(Zeroizing<[u8; 32]>, bool), AuditKeyError> {
    let path = identity_dir.join(AUDIT_KEY_FILE);
    let io = |e: std::io::Error| AuditKeyError::Io {
        path: path.clone(),
        reason: e.to_string(),
    };
    match std::fs::OpenOptions::new().read(true).open(&path) {
        Ok(mut file) => {
            let meta = file.metadata().map_err(io)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    return Err(AuditKeyError::Exposed {
                        path: path.clone(),
                        mode,
                    });
                }
            }
            if meta.len() != 32 {
                return Err(AuditKeyError::Malformed {
                    path: path.clone(),
                    len: meta.len(),
                });
            }
            let mut seed = Zeroizing::new([0u8; 32]);
            file.read_exact(seed.as_mut()).map_err(io)?;
            Ok((seed, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = Zeroizing::new([0u8; 32]);
            ring::rand::SystemRandom::new()
                .fill(seed.as_mut())
                .map_err(|_| AuditKeyError::Io {
                    path: path.clone(),
                    reason: "the system random source failed".into(),
                })?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut file = opts.open(&path).map_err(io)?;
            file.write_all(seed.as_ref()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((seed, true))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, made) = load_or_create(dir.path()).unwrap();
        assert!(made);
        let (again, made) = load_or_create(dir.path()).unwrap();
        assert!(!made);
        assert_eq!(*first, *again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(AUDIT_KEY_FILE);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = load_or_create(dir.path()).unwrap_err();
            assert!(e.to_string().contains("chmod 600"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(dir.path().join(AUDIT_KEY_FILE), b"short").unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("5 bytes"), "{e}");
    }
}
