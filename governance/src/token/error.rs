//! Why a token is refused, or cannot be minted or attenuated.

use mxp_protocol::{DecodeError, EncodeError, Fingerprint};

use super::TokenForm;

/// Why a capability token is refused (or cannot be minted or attenuated).
///
/// Every refusal is its own variant; none carries key material. Messages
/// name what differed but never echo the token's unverified fields back
/// beyond the tool name and times the caller already knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The bytes (or base64url text) are not a well-formed token: truncated,
    /// over a size limit, trailing bytes, wrong magic or version, a field
    /// out of its range, grants not in canonical order.
    #[error("malformed token: {0}")]
    Malformed(#[from] DecodeError),
    /// A token of one form was given where the other was required (e.g.
    /// attenuating an Ed25519 token as a MAC token).
    #[error("token is of the {found} form, {expected} was required")]
    WrongForm {
        /// The form required.
        expected: TokenForm,
        /// The token's form.
        found: TokenForm,
    },
    /// The token names an issuer this verifier has no key for: for a MAC
    /// token, a node other than this one; for an Ed25519 token, a node
    /// missing from the issuer map.
    #[error("token issued by unknown node {issuer}")]
    UnknownIssuer {
        /// The issuer the token names (unauthenticated).
        issuer: Fingerprint,
    },
    /// The keyed MAC does not match: the token was altered, truncated, or
    /// minted with another key.
    #[error("token MAC does not verify")]
    BadMac,
    /// An Ed25519 signature does not verify: block 0 is the issuer's root
    /// signature, block `i` the signature of attenuation block `i`.
    #[error("token signature of block {block} does not verify")]
    BadSignature {
        /// Which block: 0 for the root, 1.. for attenuation blocks.
        block: usize,
    },
    /// The Ed25519 token's proof does not open the last block's commitment:
    /// blocks were removed, or the proof was replaced.
    #[error("token proof does not match its last block: blocks removed or proof replaced")]
    BadProof,
    /// An attenuation block widens what the token before it allowed.
    #[error("attenuation block {block} widens the token's {what}")]
    Widening {
        /// The block (1 = first attenuation block).
        block: usize,
        /// What it widens: `expiry` or `grants`.
        what: &'static str,
    },
    /// The token has expired: `now_unix_ms >= not_after_unix_ms`.
    #[error("token expired at {not_after_unix_ms} ms, now is {now_unix_ms} ms")]
    Expired {
        /// The token's effective expiry (its narrowest block).
        not_after_unix_ms: u64,
        /// The time the verifier was given.
        now_unix_ms: u64,
    },
    /// The token was issued to another principal.
    #[error("token was issued to another principal")]
    WrongPrincipal,
    /// The token was issued for another agent.
    #[error("token was issued for another agent")]
    WrongAgent,
    /// The token was issued for another session.
    #[error("token was issued for another session")]
    WrongSession,
    /// The token grants no Call of this tool.
    #[error("token does not grant tool {tool:?}")]
    WrongTool {
        /// The tool the Call names (cut to 128 bytes).
        tool: String,
    },
    /// The token grants this tool, but with other arguments.
    #[error("token grants tool {tool:?} with other arguments")]
    WrongArguments {
        /// The tool the Call names (cut to 128 bytes).
        tool: String,
    },
    /// The token's nonce was already spent (by this token or one attenuated
    /// from the same root) and has not yet expired from the ledger.
    #[error("token already used (nonce seen before)")]
    Replayed,
    /// The nonce ledger holds its capacity of unexpired nonces; new tokens
    /// are refused until some expire (fail closed).
    #[error(
        "nonce ledger full ({capacity} unexpired nonces): refusing new tokens until some expire"
    )]
    LedgerFull {
        /// The ledger's capacity.
        capacity: usize,
    },
    /// The claims or attenuation cannot be encoded: a limit exceeded or a
    /// field empty.
    #[error("cannot encode token: {0}")]
    Unencodable(#[from] EncodeError),
    /// An issuer's Ed25519 key is weak (of small order) and is not accepted.
    #[error("weak Ed25519 verifying key for issuer {issuer}")]
    WeakIssuerKey {
        /// The issuer.
        issuer: Fingerprint,
    },
}

impl TokenError {
    /// A stable snake_case name of the refusal, for metrics and audit.
    pub const fn class(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::WrongForm { .. } => "wrong_form",
            TokenError::UnknownIssuer { .. } => "unknown_issuer",
            TokenError::BadMac => "bad_mac",
            TokenError::BadSignature { .. } => "bad_signature",
            TokenError::BadProof => "bad_proof",
            TokenError::Widening { .. } => "widening",
            TokenError::Expired { .. } => "expired",
            TokenError::WrongPrincipal => "wrong_principal",
            TokenError::WrongAgent => "wrong_agent",
            TokenError::WrongSession => "wrong_session",
            TokenError::WrongTool { .. } => "wrong_tool",
            TokenError::WrongArguments { .. } => "wrong_arguments",
            TokenError::Replayed => "replayed",
            TokenError::LedgerFull { .. } => "ledger_full",
            TokenError::Unencodable(_) => "unencodable",
            TokenError::WeakIssuerKey { .. } => "weak_issuer_key",
        }
    }
}

/// `tool` cut to at most 128 bytes at a character boundary, for messages.
pub(crate) fn cut_tool(tool: &str) -> String {
    let mut end = tool.len().min(128);
    while !tool.is_char_boundary(end) {
        end -= 1;
    }
    tool.get(..end).unwrap_or_default().to_owned()
}
