//! Key material: the node's MAC key and its Ed25519 signing identity.
//!
//! Both are built from 32 bytes the caller supplies (drawn from its own
//! randomness or key store); neither ever appears in `Debug`, `Display` or
//! an error, and both are zeroized when dropped.

use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};
use mxp_protocol::Fingerprint;
use zeroize::Zeroize;

/// The BLAKE3 key-derivation context that turns the caller's 32-byte MAC
/// secret into the key of token MACs.
pub const MAC_KEY_CONTEXT: &str = "mxp-runtime 2026-12-01 governance capability token v1 MAC key";

/// The node's secret for MAC tokens, and the node it names as issuer.
///
/// The key actually used is `BLAKE3-derive_key(MAC_KEY_CONTEXT, secret)`,
/// computed once here, so the same secret used for anything else never
/// yields token MACs. `Debug` prints the issuer only; the key is zeroized on
/// drop (every clone too).
#[derive(Clone)]
pub struct MacKey {
    issuer: Fingerprint,
    key: [u8; 32],
}

impl MacKey {
    /// The MAC key of node `issuer` from a 32-byte `secret` (the caller
    /// draws it from a CSPRNG and keeps it as it keeps other secrets).
    pub fn new(issuer: Fingerprint, secret: [u8; 32]) -> MacKey {
        let mut secret = secret;
        let key = blake3::derive_key(MAC_KEY_CONTEXT, &secret);
        secret.zeroize();
        MacKey { issuer, key }
    }

    /// The node whose tokens this key mints and verifies.
    pub const fn issuer(&self) -> &Fingerprint {
        &self.issuer
    }

    pub(crate) const fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

impl Drop for MacKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MacKey")
            .field("issuer", &self.issuer)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The node's Ed25519 identity key, for tokens that travel to other nodes
/// of the mesh, and the node it names as issuer.
///
/// Built from a 32-byte seed the caller supplies. ed25519-dalek zeroizes the
/// key on drop; `Debug` prints the issuer and public key only.
pub struct SigningIdentity {
    issuer: Fingerprint,
    key: SigningKey,
}

impl SigningIdentity {
    /// The identity of node `issuer` from its 32-byte Ed25519 seed.
    pub fn from_seed(issuer: Fingerprint, seed: [u8; 32]) -> SigningIdentity {
        let mut seed = seed;
        let key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        SigningIdentity { issuer, key }
    }

    /// The node it names as issuer.
    pub const fn issuer(&self) -> &Fingerprint {
        &self.issuer
    }

    /// The public key other nodes verify its tokens with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub(crate) const fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("issuer", &self.issuer)
            .field("verifying_key", &self.key.verifying_key())
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let secret = [0xab; 32];
        let mac = MacKey::new(Fingerprint([1; 32]), secret);
        let text = format!("{mac:?}");
        assert!(text.contains("redacted"));
        let derived: String = mac.key().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&derived[..16]));
        assert!(!text.to_lowercase().contains("abab"));
        assert!(!text.contains("171, 171"));
        let id = SigningIdentity::from_seed(Fingerprint([1; 32]), [0xcd; 32]);
        let text = format!("{id:?}");
        assert!(
            !text.contains("cdcd") && !text.contains("205, 205"),
            "{text}"
        );
    }

    #[test]
    fn mac_key_is_derived_not_raw() {
        let mac = MacKey::new(Fingerprint([1; 32]), [9; 32]);
        assert_ne!(mac.key(), &[9; 32]);
        assert_eq!(mac.key(), MacKey::new(Fingerprint([2; 32]), [9; 32]).key());
    }
}
