//! Node identity (a key pair and self-signed certificate kept in the data
//! folder), peer identity (SHA-256 of a certificate's public key) and the
//! rustls verifiers that attribute every connection to one.
//!
//! Certificates here are not checked against a CA: a node's name is its key.
//! A peer proves it holds the key in the TLS handshake (the verifiers check the
//! handshake signature with the certificate's key); whether that key is
//! *trusted* is decided by [`PeerTrust`]: pinned fingerprints, or the
//! development mode that accepts any key and only identifies it.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use mxp_protocol::Fingerprint;

use crate::TransportError;

/// A peer's identity: SHA-256 of its certificate's SubjectPublicKeyInfo.
///
/// Printed and parsed as 64 lower-case hex digits (an optional `sha256:`
/// prefix is accepted when parsing).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; 32]);

impl PeerId {
    /// The id of a DER-encoded SubjectPublicKeyInfo.
    pub fn from_spki(spki_der: &[u8]) -> PeerId {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        PeerId(id)
    }

    /// The id of a DER certificate's public key.
    ///
    /// # Errors
    /// [`rustls::Error`] if the certificate cannot be parsed.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Result<PeerId, rustls::Error> {
        let ee = webpki::EndEntityCert::try_from(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        Ok(PeerId::from_spki(ee.subject_public_key_info().as_ref()))
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        hex::encode(self.0.get(..4).unwrap_or_default())
    }

    /// The same 32 bytes as the protocol's [`Fingerprint`].
    pub const fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.0)
    }
}

impl From<Fingerprint> for PeerId {
    fn from(f: Fingerprint) -> PeerId {
        PeerId(f.0)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<PeerId, TransportError> {
        let t = s.trim();
        let t = t.strip_prefix("sha256:").unwrap_or(t);
        let mut id = [0u8; 32];
        hex::decode_to_slice(t, &mut id)
            .map_err(|_| TransportError::InvalidFingerprint { text: s.to_owned() })?;
        Ok(PeerId(id))
    }
}

impl serde::Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PeerId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// This node's key pair and self-signed certificate.
pub struct NodeIdentity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    peer_id: PeerId,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("NodeIdentity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

const CERT_FILE: &str = "cert.der";
const KEY_FILE: &str = "key.der";

impl NodeIdentity {
    /// A fresh identity held only in memory.
    ///
    /// # Errors
    /// [`TransportError::Identity`] if key generation fails.
    pub fn generate() -> Result<NodeIdentity, TransportError> {
        let ck = rcgen::generate_simple_self_signed(vec!["mxp-node".to_owned()]).map_err(|e| {
            TransportError::Identity {
                path: "(memory)".into(),
                reason: format!("cannot generate a key pair: {e}"),
            }
        })?;
        let cert = ck.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
        NodeIdentity::from_parts(cert, key, Path::new("(memory)"))
    }

    fn from_parts(
        cert: CertificateDer<'static>,
        key: PrivatePkcs8KeyDer<'static>,
        path: &Path,
    ) -> Result<NodeIdentity, TransportError> {
        let peer_id = PeerId::from_cert(&cert).map_err(|e| TransportError::Identity {
            path: path.display().to_string(),
            reason: format!("certificate does not parse: {e}"),
        })?;
        Ok(NodeIdentity { cert, key, peer_id })
    }

    /// Loads the identity kept in `dir` (`cert.der`, `key.der`), or creates
    /// it there on first use: the folder (and missing parents) mode 0700, the
    /// key file 0600 and the certificate 0644, whatever the umask. Warnings
    /// about loose folder modes (see [`NodeIdentity::load_or_create_checked`])
    /// are logged.
    ///
    /// # Errors
    /// [`TransportError::Identity`] naming the file if it cannot be read,
    /// written, does not hold a certificate and its PKCS#8 key, or is open
    /// to other users (a key file with group or other permission bits, a
    /// folder or certificate others may write).
    pub fn load_or_create(dir: &Path) -> Result<NodeIdentity, TransportError> {
        let (id, warnings) = NodeIdentity::load_or_create_checked(dir)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(id)
    }

    /// [`NodeIdentity::load_or_create`], returning its warnings for the caller
    /// to show instead of logging them.
    ///
    /// On Unix an existing identity is checked before it is read: a key file
    /// with any group or other permission bit (e.g. 0644), a folder or
    /// certificate that group or others may write, is refused with the mode
    /// and the `chmod` that fixes it; a folder that group or others may only
    /// read or list is a warning.
    ///
    /// # Errors
    /// As [`NodeIdentity::load_or_create`].
    pub fn load_or_create_checked(
        dir: &Path,
    ) -> Result<(NodeIdentity, Vec<String>), TransportError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let io_err = |path: &Path, e: std::io::Error| TransportError::Identity {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut warnings = Vec::new();
        if dir.exists() {
            if let Some(w) = check_private_dir(dir, "identity folder")? {
                warnings.push(w);
            }
        } else {
            create_private_dir(dir).map_err(|e| io_err(dir, e))?;
        }
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                check_key_file(&key_path)?;
                check_cert_file(&cert_path)?;
                let cert = std::fs::read(&cert_path).map_err(|e| io_err(&cert_path, e))?;
                let key = std::fs::read(&key_path).map_err(|e| io_err(&key_path, e))?;
                let id = NodeIdentity::from_parts(
                    CertificateDer::from(cert),
                    PrivatePkcs8KeyDer::from(key),
                    &cert_path,
                )?;
                // Check the key parses and belongs to the certificate.
                let pair =
                    rcgen::KeyPair::try_from(&id.key).map_err(|e| TransportError::Identity {
                        path: key_path.display().to_string(),
                        reason: format!("not a PKCS#8 key: {e}"),
                    })?;
                if PeerId::from_spki(&rcgen::PublicKeyData::subject_public_key_info(&pair))
                    != id.peer_id
                {
                    return Err(TransportError::Identity {
                        path: key_path.display().to_string(),
                        reason: format!(
                            "key does not match the certificate {}",
                            cert_path.display()
                        ),
                    });
                }
                Ok((id, warnings))
            }
            (false, false) => {
                let id = NodeIdentity::generate()?;
                write_new(&key_path, id.key.secret_pkcs8_der(), 0o600)
                    .map_err(|e| io_err(&key_path, e))?;
                write_new(&cert_path, id.cert.as_ref(), 0o644)
                    .map_err(|e| io_err(&cert_path, e))?;
                Ok((id, warnings))
            }
            (true, false) | (false, true) => Err(TransportError::Identity {
                path: dir.display().to_string(),
                reason: format!(
                    "holds one of {CERT_FILE} and {KEY_FILE} but not the other; restore it, or remove both to make a new identity"
                ),
            }),
        }
    }

    /// This node's peer id (what other nodes pin).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub(crate) fn chain_and_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}

/// Writes a new file (never an existing one) created with `mode` on Unix,
/// so it is never readable by others, even for an instant or under umask 000.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates `dir` and its missing parents with mode 0700 on Unix (the umask
/// can only remove bits from it).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// The permission bits of `path` (following symlinks); `None` off Unix.
fn mode_of(path: &Path) -> Result<Option<u32>, TransportError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| TransportError::Identity {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some(meta.permissions().mode() & 0o7777))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// An existing folder: refused if group or others may write it (they could
/// replace the key), a warning if they may only read or list it.
fn check_private_dir(dir: &Path, what: &str) -> Result<Option<String>, TransportError> {
    let Some(mode) = mode_of(dir)? else {
        return Ok(None);
    };
    let shown = dir.display();
    if mode & 0o022 != 0 {
        return Err(TransportError::Identity {
            path: shown.to_string(),
            reason: format!(
                "{what} has mode {mode:04o}: group or other users may write it and replace the identity; fix: chmod 700 {shown}"
            ),
        });
    }
    Ok((mode & 0o077 != 0).then(|| {
        format!(
            "{what} {shown} has mode {mode:04o}: group or other users may list it (the key file itself is private); fix: chmod 700 {shown}"
        )
    }))
}

/// The key file: refused if it has any group or other permission bit.
fn check_key_file(path: &Path) -> Result<(), TransportError> {
    let Some(mode) = mode_of(path)? else {
        return Ok(());
    };
    if mode & 0o077 != 0 {
        let shown = path.display();
        return Err(TransportError::Identity {
            path: shown.to_string(),
            reason: format!(
                "private key file has mode {mode:04o}: group or other users may read or change it; fix: chmod 600 {shown} (if others may have read it, remove {CERT_FILE} and {KEY_FILE} to make a new identity)"
            ),
        });
    }
    Ok(())
}

/// The certificate is public, but others must not be able to swap it.
fn check_cert_file(path: &Path) -> Result<(), TransportError> {
    let Some(mode) = mode_of(path)? else {
        return Ok(());
    };
    let shown = path.display();
    if mode & 0o022 != 0 {
        return Err(TransportError::Identity {
            path: shown.to_string(),
            reason: format!(
                "certificate has mode {mode:04o}: group or other users may change it; fix: chmod 644 {shown}"
            ),
        });
    }
    Ok(())
}

/// The default folder of the `mxp` CLI's own identity: `$MXP_CONFIG_DIR/identity`,
/// else `$XDG_CONFIG_HOME/mxp/identity`, else `$HOME/.config/mxp/identity`.
/// Empty variables are ignored.
pub fn default_client_identity_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(d) = var("MXP_CONFIG_DIR") {
        return Some(PathBuf::from(d).join("identity"));
    }
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mxp").join("identity"))
}

/// Which peer identities a node or client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTrust {
    /// Only these fingerprints; every other peer fails the TLS handshake.
    Pinned(HashSet<PeerId>),
    /// Development mode: any certificate is accepted and identified by its
    /// fingerprint, but not trusted. The handshake signature is still checked,
    /// so a peer cannot claim another's fingerprint.
    AnyIdentified,
}

impl PeerTrust {
    /// Pinning to these fingerprints.
    pub fn pinned(ids: impl IntoIterator<Item = PeerId>) -> PeerTrust {
        PeerTrust::Pinned(ids.into_iter().collect())
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<PeerId, rustls::Error> {
        let id = PeerId::from_cert(cert)?;
        match self {
            PeerTrust::Pinned(set) if !set.contains(&id) => {
                tracing::warn!(peer = %id, "refusing certificate: fingerprint not pinned");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(id),
        }
    }
}

#[derive(Debug)]
struct Verifier {
    trust: PeerTrust,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.trust
            .check(end_entity)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.trust
            .check(end_entity)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// The ALPN protocol id of MXP over QUIC.
pub const ALPN: &[u8] = b"mxp/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration: TLS 1.3, ALPN `mxp/1`, client
/// certificates required and checked against `trust`.
pub(crate) fn server_tls(
    identity: &NodeIdentity,
    trust: PeerTrust,
) -> Result<rustls::ServerConfig, TransportError> {
    let provider = provider();
    let verifier = Arc::new(Verifier {
        trust,
        provider: provider.clone(),
    });
    let (chain, key) = identity.chain_and_key();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TransportError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The rustls client configuration: TLS 1.3, ALPN `mxp/1`, this identity as
/// client certificate, server checked against `trust`.
pub(crate) fn client_tls(
    identity: &NodeIdentity,
    trust: PeerTrust,
) -> Result<rustls::ClientConfig, TransportError> {
    let provider = provider();
    let verifier = Arc::new(Verifier {
        trust,
        provider: provider.clone(),
    });
    let (chain, key) = identity.chain_and_key();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TransportError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The peer identity of an established QUIC connection.
pub(crate) fn peer_of(conn: &quinn::Connection) -> Option<PeerId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    PeerId::from_cert(certs.first()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeIdentity::load_or_create(&dir.path().join("id")).unwrap();
        let b = NodeIdentity::load_or_create(&dir.path().join("id")).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        assert_ne!(a.peer_id(), NodeIdentity::generate().unwrap().peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("id").join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
    }

    #[test]
    fn damaged_identity_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        NodeIdentity::load_or_create(dir.path()).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        let e = NodeIdentity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(KEY_FILE), "{e}");
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let e = NodeIdentity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the other"), "{e}");
        // Another identity's key with this certificate.
        let other = NodeIdentity::generate().unwrap();
        write_new(
            &dir.path().join(KEY_FILE),
            other.key.secret_pkcs8_der(),
            0o600,
        )
        .unwrap();
        let e = NodeIdentity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn new_identity_files_and_folders_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let id_dir = dir.path().join("a").join("identity");
        let (_, warnings) = NodeIdentity::load_or_create_checked(&id_dir).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // The umask may remove bits, never add them.
        assert_eq!(mode(&id_dir) & !0o700, 0, "{:o}", mode(&id_dir));
        assert_eq!(mode(&dir.path().join("a")) & !0o700, 0);
        assert_eq!(mode(&id_dir.join(KEY_FILE)) & !0o600, 0);
        assert_eq!(mode(&id_dir.join(CERT_FILE)) & !0o644, 0);
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_may_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeIdentity::load_or_create(dir.path()).unwrap();
        let key = dir.path().join(KEY_FILE);
        for loose in [0o644, 0o640, 0o604, 0o660] {
            chmod(&key, loose);
            let e = NodeIdentity::load_or_create(dir.path())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&key.display().to_string()), "{e}");
            assert!(e.contains(&format!("{loose:04o}")), "{e}");
            assert!(e.contains(&format!("chmod 600 {}", key.display())), "{e}");
        }
        chmod(&key, 0o400);
        let again = NodeIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(again.peer_id(), first.peer_id());
        chmod(&key, 0o600);
        let cert = dir.path().join(CERT_FILE);
        chmod(&cert, 0o666);
        let e = NodeIdentity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("chmod 644 {}", cert.display())), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_loose_folder_is_a_warning_or_refused_when_others_may_write() {
        let dir = tempfile::tempdir().unwrap();
        let id_dir = dir.path().join("identity");
        NodeIdentity::load_or_create(&id_dir).unwrap();
        chmod(&id_dir, 0o755);
        let (_, warnings) = NodeIdentity::load_or_create_checked(&id_dir).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("0755"), "{warnings:?}");
        assert!(
            warnings[0].contains(&format!("chmod 700 {}", id_dir.display())),
            "{warnings:?}"
        );
        for loose in [0o775, 0o777, 0o702] {
            chmod(&id_dir, loose);
            let e = NodeIdentity::load_or_create(&id_dir)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{loose:04o}")), "{e}");
            assert!(
                e.contains(&format!("chmod 700 {}", id_dir.display())),
                "{e}"
            );
        }
        chmod(&id_dir, 0o700);
        let (_, warnings) = NodeIdentity::load_or_create_checked(&id_dir).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn peer_id_text_round_trip() {
        let id = NodeIdentity::generate().unwrap().peer_id();
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<PeerId>().unwrap(), id);
        assert_eq!(format!("sha256:{s}").parse::<PeerId>().unwrap(), id);
        assert!("abc".parse::<PeerId>().is_err());
        assert!(format!("{s}00").parse::<PeerId>().is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let id = NodeIdentity::generate().unwrap();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains(&hex::encode(id.key.secret_pkcs8_der())));
        assert!(dbg.contains("peer_id"));
    }
}
