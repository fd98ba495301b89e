//! Capability tokens: proof that the policy actor allowed one exact intent.
//!
//! An agent touches the outside world only through a tool Call that carries
//! a token, minted by the policy actor when (and only when) it decides
//! `allow`, and verified by the enforcing component before the tool runs.
//! A token binds:
//!
//! * the issuer node ([`Fingerprint`](mxp_protocol::Fingerprint)), the principal ([`PrincipalId`]), the
//!   agent ([`AgentId`]) and the session ([`SessionId`]);
//! * one or more [`Grant`]s: a tool name and the [`ArgsDigest`] of the exact
//!   canonical arguments (the policy actor mints one grant: the Call it
//!   allowed);
//! * an expiry (`not_after_unix_ms`) and a single-use [`Nonce`].
//!
//! Two forms share one format (docs/TOKENS.md):
//!
//! * [`TokenForm::Mac`]: a BLAKE3 keyed MAC under the node's [`MacKey`],
//!   verified by the node that issued it: the fast path of every Call.
//!   Attenuation chains the MAC as macaroons do: block `i`'s tag is the key
//!   that MACs block `i + 1`; the token carries only the last tag.
//! * [`TokenForm::Ed25519`]: signed with the issuer's [`SigningIdentity`], to
//!   travel to another node of the mesh, which verifies it with the
//!   issuer's public key. Attenuation is biscuit-style: each block names the
//!   public key that must sign the next block, and a commitment to its
//!   secret seed; the token carries the last seed as its proof.
//!
//! A holder narrows a token with [`Token::attenuate_mac`] or
//! [`Token::attenuate_ed25519`]: an [`Attenuation`] may only shorten the
//! expiry and keep a subset of the grants. The verifier checks each block
//! narrows what came before ([`TokenError::Widening`] otherwise).
//!
//! [`Verifier::verify`] returns a [`VerifiedToken`], which only it can
//! construct: a tool's execute path takes `&VerifiedToken` as proof.
//! Replay protection is the [`NonceLedger`] passed to it.
//!
//! Nothing here reads a clock or draws randomness: times are
//! `now_unix_ms` inputs, nonces and seeds are caller-supplied bytes.
//!
//! ```
//! use mxp_governance::token::{
//!     args::args_digest, CallIntent, Claims, Grant, MacKey, Nonce, NonceLedger, Verifier,
//! };
//! use mxp_protocol::{AgentId, Fingerprint, PrincipalId, SessionId};
//!
//! let node = Fingerprint([1; 32]);
//! let key = MacKey::new(node, [7; 32]);
//! let args = serde_json::json!({"path": "/tmp/report.txt"});
//! let claims = Claims {
//!     principal: PrincipalId::Peer(Fingerprint([2; 32])),
//!     agent: AgentId::from_bytes([3; 16]),
//!     session: "s-1".parse()?,
//!     grants: vec![Grant::new("fs.read", args_digest(&args))],
//!     not_after_unix_ms: 60_000,
//!     nonce: Nonce([9; 16]),
//! };
//! let token = key.mint(&claims)?;
//!
//! let verifier = Verifier::new().with_mac_key(key);
//! let mut ledger = NonceLedger::new(1024);
//! let digest = args_digest(&args);
//! let call = CallIntent {
//!     principal: &claims.principal,
//!     agent: &claims.agent,
//!     session: &claims.session,
//!     tool: "fs.read",
//!     args_digest: &digest,
//! };
//! let proof = verifier.verify(token.as_bytes(), &call, 1_000, &mut ledger)?;
//! assert_eq!(proof.tool(), "fs.read");
//! // Single use:
//! assert!(verifier.verify(token.as_bytes(), &call, 1_001, &mut ledger).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use base64::Engine as _;
use mxp_protocol::{AgentId, DecodeError, PrincipalId, SessionId};

pub mod args;
mod error;
mod format;
mod keys;
mod ledger;
mod mint;
mod verify;

#[cfg(test)]
mod tests;

pub use args::ArgsDigest;
pub use error::TokenError;
pub use format::{MAX_BLOCKS, MAX_GRANTS, MAX_TOKEN_BYTES, MAX_TOKEN_TEXT, MAX_TOOL_LEN};
pub use keys::{MAC_KEY_CONTEXT, MacKey, SigningIdentity};
pub use ledger::NonceLedger;
pub use mint::PROOF_CONTEXT;
pub use verify::{CallIntent, VerifiedToken, Verifier};

/// The BLAKE3 crate this module hashes and MACs with, re-exported so
/// callers (and benchmarks) use the same version.
pub use blake3;
/// The Ed25519 crate of [`SigningIdentity`] and [`Verifier::add_issuer`]'s
/// `VerifyingKey`, re-exported so callers build keys with the same version.
pub use ed25519_dalek;

/// Which of the two forms a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenForm {
    /// BLAKE3 keyed MAC: verified by the issuing node only.
    Mac,
    /// Ed25519 signature: verified by any node holding the issuer's key.
    Ed25519,
}

impl TokenForm {
    /// `mac` or `ed25519`.
    pub const fn name(self) -> &'static str {
        match self {
            TokenForm::Mac => "mac",
            TokenForm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for TokenForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A token's single-use nonce: 16 bytes the minter draws at random.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce(pub [u8; 16]);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// One thing a token allows: a tool, with exactly these arguments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    /// The tool's name: 1 to [`MAX_TOOL_LEN`] bytes.
    pub tool: String,
    /// The digest of the exact canonical arguments ([`args::args_digest`]).
    pub args_digest: ArgsDigest,
}

impl Grant {
    /// A grant of `tool` with the arguments whose digest is `args_digest`.
    pub fn new(tool: impl Into<String>, args_digest: ArgsDigest) -> Grant {
        Grant {
            tool: tool.into(),
            args_digest,
        }
    }
}

/// What the policy actor binds into a token it mints (the issuer comes from
/// the key that mints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Who asked.
    pub principal: PrincipalId,
    /// The agent that will run the tool.
    pub agent: AgentId,
    /// The session of the Call.
    pub session: SessionId,
    /// What is allowed: 1 to [`MAX_GRANTS`] (tool, arguments) pairs; the
    /// policy actor mints exactly one, the Call it allowed. Order and
    /// duplicates do not matter (the encoding sorts them).
    pub grants: Vec<Grant>,
    /// The token is refused from this time on (`now >= not_after`).
    pub not_after_unix_ms: u64,
    /// Fresh random bytes, unique per issuer.
    pub nonce: Nonce,
}

/// What an attenuation block narrows. `None` keeps what the token already
/// allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attenuation {
    /// An earlier expiry (not later than the token's current one).
    pub not_after_unix_ms: Option<u64>,
    /// A subset of the token's current grants (non-empty).
    pub grants: Option<Vec<Grant>>,
}

/// An encoded token, structurally checked (its MAC or signatures are not:
/// only a [`Verifier`] checks those).
///
/// `Debug` prints the form and length only: the bytes end with the MAC tag
/// or Ed25519 proof seed, which let a holder attenuate the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    bytes: Vec<u8>,
    form: TokenForm,
}

impl Token {
    /// Checks `bytes` against the format and its limits and keeps a copy.
    ///
    /// # Errors
    /// [`TokenError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Token, TokenError> {
        let parsed = format::parse(bytes)?;
        if !format::session_syntax_ok(parsed.root.session) {
            return Err(DecodeError::InvalidValue {
                field: "session",
                reason: "not 1 to 64 characters of A-Z a-z 0-9 . _ : -",
            }
            .into());
        }
        let form = parsed.form;
        Ok(Token {
            bytes: bytes.to_vec(),
            form,
        })
    }

    /// Decodes the base64url text form (RFC 4648 §5, no padding).
    ///
    /// # Errors
    /// [`TokenError::Malformed`], also when the text is longer than
    /// [`MAX_TOKEN_TEXT`] (checked before decoding) or not canonical base64url.
    pub fn from_base64url(text: &str) -> Result<Token, TokenError> {
        if text.len() > MAX_TOKEN_TEXT {
            return Err(DecodeError::LimitExceeded {
                field: "token text",
                len: text.len(),
                limit: MAX_TOKEN_TEXT,
            }
            .into());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| DecodeError::InvalidValue {
                field: "token text",
                reason: "not base64url without padding",
            })?;
        Token::decode(&bytes)
    }

    /// The base64url text form (RFC 4648 §5, no padding).
    pub fn to_base64url(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.bytes)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Its form.
    pub const fn form(&self) -> TokenForm {
        self.form
    }

    /// How many attenuation blocks it carries.
    pub fn blocks(&self) -> usize {
        format::parse(&self.bytes).map_or(0, |p| p.block_count)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("form", &self.form)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}
