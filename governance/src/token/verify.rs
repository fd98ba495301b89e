//! Verification, and the proof it yields.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId, SessionId};

use super::args::ArgsDigest;
use super::error::cut_tool;
use super::format::{self, Parsed};
use super::mint::{commitment, effective};
use super::{MacKey, Nonce, NonceLedger, TokenError, TokenForm};

/// The Call a token must authorise: what the enforcing component knows
/// independently of the token (the authenticated principal, the agent
/// addressed, the session, the tool and the digest of its arguments).
#[derive(Debug, Clone, Copy)]
pub struct CallIntent<'a> {
    /// The authenticated caller.
    pub principal: &'a PrincipalId,
    /// The agent the Call runs on.
    pub agent: &'a AgentId,
    /// The Call's session.
    pub session: &'a SessionId,
    /// The tool the Call names.
    pub tool: &'a str,
    /// [`args_digest`](super::args::args_digest) of the Call's arguments.
    pub args_digest: &'a ArgsDigest,
}

/// Proof that a token was verified for one Call: only [`Verifier::verify`]
/// constructs it (its fields are private, it has no public constructor, it
/// is neither `Deserialize` nor `Clone`). A tool's execute path takes
/// `&VerifiedToken`.
///
/// Its accessors read the intent the token bound, which is the intent of
/// the Call it was verified against. It borrows the session and tool from
/// that [`CallIntent`], so it cannot outlive the Call it authorises (and
/// verification allocates nothing).
#[derive(Debug)]
pub struct VerifiedToken<'a> {
    form: TokenForm,
    issuer: Fingerprint,
    principal: PrincipalId,
    agent: AgentId,
    session: &'a SessionId,
    tool: &'a str,
    args_digest: ArgsDigest,
    not_after_unix_ms: u64,
    nonce: Nonce,
    blocks: usize,
}

impl<'a> VerifiedToken<'a> {
    /// MAC or Ed25519.
    pub const fn form(&self) -> TokenForm {
        self.form
    }
    /// The node that minted the token.
    pub const fn issuer(&self) -> &Fingerprint {
        &self.issuer
    }
    /// The principal it was issued to.
    pub const fn principal(&self) -> &PrincipalId {
        &self.principal
    }
    /// The agent it was issued for.
    pub const fn agent(&self) -> &AgentId {
        &self.agent
    }
    /// The session it was issued for.
    pub const fn session(&self) -> &'a SessionId {
        self.session
    }
    /// The tool it authorises (the Call's).
    pub const fn tool(&self) -> &'a str {
        self.tool
    }
    /// The digest of the arguments it authorises (the Call's).
    pub const fn args_digest(&self) -> &ArgsDigest {
        &self.args_digest
    }
    /// Its effective expiry (after attenuation).
    pub const fn not_after_unix_ms(&self) -> u64 {
        self.not_after_unix_ms
    }
    /// Its nonce, now spent.
    pub const fn nonce(&self) -> &Nonce {
        &self.nonce
    }
    /// How many attenuation blocks it carried.
    pub const fn blocks(&self) -> usize {
        self.blocks
    }
}

/// Verifies tokens: MAC tokens under this node's [`MacKey`], Ed25519 tokens
/// under the issuers' public keys.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    mac: Option<MacKey>,
    issuers: BTreeMap<Fingerprint, VerifyingKey>,
}

impl Verifier {
    /// A verifier that knows no key: it refuses every token as
    /// [`TokenError::UnknownIssuer`] until given some.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// With this node's MAC key: MAC tokens naming its issuer verify.
    #[must_use]
    pub fn with_mac_key(mut self, key: MacKey) -> Verifier {
        self.mac = Some(key);
        self
    }

    /// Trusts `key` for Ed25519 tokens naming `issuer` (replacing any key
    /// it had for that issuer).
    ///
    /// # Errors
    /// [`TokenError::WeakIssuerKey`] for a key of small order.
    pub fn add_issuer(&mut self, issuer: Fingerprint, key: VerifyingKey) -> Result<(), TokenError> {
        if key.is_weak() {
            return Err(TokenError::WeakIssuerKey { issuer });
        }
        self.issuers.insert(issuer, key);
        Ok(())
    }

    /// Forgets the key of `issuer`; its tokens are refused from now on.
    pub fn remove_issuer(&mut self, issuer: &Fingerprint) {
        self.issuers.remove(issuer);
    }

    /// Verifies `token` for `call` at `now_unix_ms`, and spends its nonce in
    /// `ledger`.
    ///
    /// Checks, in this order: the encoding; the issuer is known; the MAC
    /// chain, or every signature and the proof; each attenuation block
    /// narrows; expiry; principal, agent, session; tool, then arguments;
    /// finally the nonce is spent. No field is trusted before the MAC or
    /// signatures have verified; the nonce is recorded only when every other
    /// check has passed, so refused tokens never fill the ledger.
    ///
    /// # Errors
    /// Every refusal is its own [`TokenError`] variant.
    pub fn verify<'a>(
        &self,
        token: &[u8],
        call: &CallIntent<'a>,
        now_unix_ms: u64,
        ledger: &mut NonceLedger,
    ) -> Result<VerifiedToken<'a>, TokenError> {
        let p = format::parse(token)?;
        match p.form {
            TokenForm::Mac => self.check_mac(&p)?,
            TokenForm::Ed25519 => self.check_signatures(&p)?,
        }
        let (not_after_unix_ms, grants) = effective(&p)?;
        if now_unix_ms >= not_after_unix_ms {
            return Err(TokenError::Expired {
                not_after_unix_ms,
                now_unix_ms,
            });
        }
        let root = &p.root;
        if root.principal != *call.principal {
            return Err(TokenError::WrongPrincipal);
        }
        if root.agent != *call.agent {
            return Err(TokenError::WrongAgent);
        }
        if root.session != call.session.as_str().as_bytes() {
            return Err(TokenError::WrongSession);
        }
        let mut tool_granted = false;
        let mut granted = false;
        for g in grants.iter() {
            if g.tool == call.tool.as_bytes() {
                tool_granted = true;
                if g.digest == call.args_digest.as_bytes() {
                    granted = true;
                    break;
                }
            }
        }
        if !tool_granted {
            return Err(TokenError::WrongTool {
                tool: cut_tool(call.tool),
            });
        }
        if !granted {
            return Err(TokenError::WrongArguments {
                tool: cut_tool(call.tool),
            });
        }
        ledger.spend(
            &root.issuer,
            &root.nonce,
            root.not_after_unix_ms,
            now_unix_ms,
        )?;
        Ok(VerifiedToken {
            form: p.form,
            issuer: root.issuer,
            principal: root.principal,
            agent: root.agent,
            session: call.session,
            tool: call.tool,
            args_digest: *call.args_digest,
            not_after_unix_ms,
            nonce: root.nonce,
            blocks: p.block_count,
        })
    }

    fn check_mac(&self, p: &Parsed<'_>) -> Result<(), TokenError> {
        let key = match &self.mac {
            Some(k) if *k.issuer() == p.root.issuer => k,
            _ => {
                return Err(TokenError::UnknownIssuer {
                    issuer: p.root.issuer,
                });
            }
        };
        let mut tag = blake3::keyed_hash(key.key(), p.root_signed);
        for b in p.blocks() {
            tag = blake3::keyed_hash(tag.as_bytes(), b?.body);
        }
        // blake3::Hash compares in constant time.
        if tag == blake3::Hash::from_bytes(*p.trailer) {
            Ok(())
        } else {
            Err(TokenError::BadMac)
        }
    }

    fn check_signatures(&self, p: &Parsed<'_>) -> Result<(), TokenError> {
        let issuer_key = self
            .issuers
            .get(&p.root.issuer)
            .ok_or(TokenError::UnknownIssuer {
                issuer: p.root.issuer,
            })?;
        // Issuer keys are configured and were checked not weak in
        // `add_issuer`; holder-chosen block keys get `verify_strict`.
        issuer_key
            .verify(p.root_signed, &Signature::from_bytes(p.root_signature))
            .map_err(|_| TokenError::BadSignature { block: 0 })?;
        let mut commit = p.root.next_commit;
        let mut key = p.root.next_key;
        for (i, b) in p.blocks().enumerate() {
            let b = b?;
            let bad = || TokenError::BadSignature { block: i + 1 };
            let vk = VerifyingKey::from_bytes(key).map_err(|_| bad())?;
            vk.verify_strict(b.signed, &Signature::from_bytes(b.signature))
                .map_err(|_| bad())?;
            key = b.next_key;
            commit = b.next_commit;
        }
        if commitment(p.trailer) == blake3::Hash::from_bytes(*commit) {
            Ok(())
        } else {
            Err(TokenError::BadProof)
        }
    }
}
