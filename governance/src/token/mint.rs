//! Minting (by the policy actor) and attenuation (by a holder).

use ed25519_dalek::{Signer, SigningKey};

use super::format::{self, Parsed, RootFields};
use super::{Attenuation, Claims, MacKey, SigningIdentity, Token, TokenError, TokenForm};

/// The BLAKE3 key-derivation context of an Ed25519 token's proof
/// commitment: a block commits to `BLAKE3-derive_key(PROOF_CONTEXT, seed)`.
pub const PROOF_CONTEXT: &str =
    "mxp-runtime 2026-12-01 governance capability token v1 Ed25519 proof commitment";

/// The public key and commitment a block carries for the next seed.
fn next_of(seed: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let key = SigningKey::from_bytes(seed).verifying_key().to_bytes();
    (key, blake3::derive_key(PROOF_CONTEXT, seed))
}

pub(crate) fn commitment(seed: &[u8; 32]) -> blake3::Hash {
    blake3::Hash::from_bytes(blake3::derive_key(PROOF_CONTEXT, seed))
}

impl MacKey {
    /// Mints a MAC token for `claims`, issued by this key's node.
    ///
    /// Only the policy actor holds the key and calls this, on `allow`.
    ///
    /// # Errors
    /// [`TokenError::Unencodable`] if the grants are empty or over a limit.
    pub fn mint(&self, claims: &Claims) -> Result<Token, TokenError> {
        let grants = format::canonical_grants(&claims.grants, false)?;
        let mut bytes = format::encode_root(&RootFields {
            form: TokenForm::Mac,
            issuer: self.issuer(),
            principal: &claims.principal,
            agent: &claims.agent,
            session: &claims.session,
            not_after_unix_ms: claims.not_after_unix_ms,
            nonce: &claims.nonce,
            grants: &grants,
            next: None,
        })?;
        let tag = blake3::keyed_hash(self.key(), &bytes);
        bytes.extend_from_slice(tag.as_bytes());
        Ok(Token {
            bytes,
            form: TokenForm::Mac,
        })
    }
}

impl SigningIdentity {
    /// Mints an Ed25519 token for `claims`, signed by this node's identity.
    ///
    /// `proof_seed` is 32 fresh random bytes: the secret that lets the
    /// holder attenuate the token (it travels inside the token).
    ///
    /// # Errors
    /// [`TokenError::Unencodable`] if the grants are empty or over a limit.
    pub fn mint(&self, claims: &Claims, proof_seed: [u8; 32]) -> Result<Token, TokenError> {
        let grants = format::canonical_grants(&claims.grants, false)?;
        let (next_key, next_commit) = next_of(&proof_seed);
        let mut bytes = format::encode_root(&RootFields {
            form: TokenForm::Ed25519,
            issuer: self.issuer(),
            principal: &claims.principal,
            agent: &claims.agent,
            session: &claims.session,
            not_after_unix_ms: claims.not_after_unix_ms,
            nonce: &claims.nonce,
            grants: &grants,
            next: Some((&next_key, &next_commit)),
        })?;
        let signature = self.signing_key().sign(&bytes);
        bytes.extend_from_slice(&signature.to_bytes());
        bytes.extend_from_slice(&proof_seed);
        Ok(Token {
            bytes,
            form: TokenForm::Ed25519,
        })
    }
}

/// The token's effective expiry and grants after its blocks, checking that
/// each narrows (the same check the verifier makes).
pub(crate) fn effective<'a>(p: &Parsed<'a>) -> Result<(u64, format::GrantsRef<'a>), TokenError> {
    let mut not_after = p.root.not_after_unix_ms;
    let mut grants = p.root.grants;
    for (i, b) in p.blocks().enumerate() {
        let b = b?;
        if b.not_after_unix_ms > not_after {
            return Err(TokenError::Widening {
                block: i + 1,
                what: "expiry",
            });
        }
        not_after = b.not_after_unix_ms;
        if b.grants.len() > 0 {
            if !b.grants.is_subset_of(&grants) {
                return Err(TokenError::Widening {
                    block: i + 1,
                    what: "grants",
                });
            }
            grants = b.grants;
        }
    }
    Ok((not_after, grants))
}

/// The new block's expiry and canonical grants (empty: unchanged), refused
/// if it would widen.
fn narrowed(p: &Parsed<'_>, a: &Attenuation) -> Result<(u64, Vec<super::Grant>), TokenError> {
    let (not_after, grants) = effective(p)?;
    let block = p.block_count + 1;
    if block > format::MAX_BLOCKS {
        return Err(mxp_protocol::EncodeError::LimitExceeded {
            field: "blocks",
            len: block,
            limit: format::MAX_BLOCKS,
        }
        .into());
    }
    let new_not_after = a.not_after_unix_ms.unwrap_or(not_after);
    if new_not_after > not_after {
        return Err(TokenError::Widening {
            block,
            what: "expiry",
        });
    }
    let new_grants = match &a.grants {
        None => Vec::new(),
        Some(g) => {
            let g = format::canonical_grants(g, false)?;
            let current = grants.to_owned_grants();
            if !g.iter().all(|x| current.contains(x)) {
                return Err(TokenError::Widening {
                    block,
                    what: "grants",
                });
            }
            g
        }
    };
    Ok((new_not_after, new_grants))
}

fn check_size(len: usize) -> Result<(), TokenError> {
    if len > format::MAX_TOKEN_BYTES {
        return Err(mxp_protocol::EncodeError::LimitExceeded {
            field: "token",
            len,
            limit: format::MAX_TOKEN_BYTES,
        }
        .into());
    }
    Ok(())
}

impl Token {
    /// Appends a block to a MAC token that narrows it as `attenuation`
    /// says. Anyone holding the token can do this; nobody can undo it.
    ///
    /// # Errors
    /// [`TokenError::WrongForm`] for an Ed25519 token;
    /// [`TokenError::Widening`] if the block would widen;
    /// [`TokenError::Unencodable`] past [`MAX_BLOCKS`](super::MAX_BLOCKS) or
    /// [`MAX_TOKEN_BYTES`](super::MAX_TOKEN_BYTES);
    /// [`TokenError::Malformed`] if the token is (it was checked when built).
    pub fn attenuate_mac(&self, attenuation: &Attenuation) -> Result<Token, TokenError> {
        let p = format::parse(&self.bytes)?;
        if p.form != TokenForm::Mac {
            return Err(TokenError::WrongForm {
                expected: TokenForm::Mac,
                found: p.form,
            });
        }
        let (not_after, grants) = narrowed(&p, attenuation)?;
        let body = format::encode_block(not_after, &grants, None);
        let tag = blake3::keyed_hash(p.trailer, &body);
        let keep = self.bytes.len() - format::TAG_LEN;
        let mut bytes = Vec::with_capacity(keep + body.len() + format::TAG_LEN);
        bytes.extend_from_slice(self.bytes.get(..keep).unwrap_or_default());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(tag.as_bytes());
        check_size(bytes.len())?;
        Ok(Token {
            bytes,
            form: TokenForm::Mac,
        })
    }

    /// Appends a block to an Ed25519 token that narrows it as `attenuation`
    /// says, signed with the token's proof seed. `next_seed` is 32 fresh
    /// random bytes: the new proof, which the new holder may use to narrow
    /// further.
    ///
    /// # Errors
    /// [`TokenError::WrongForm`] for a MAC token;
    /// [`TokenError::BadProof`] if the token's proof does not open its last
    /// block's commitment; [`TokenError::Widening`],
    /// [`TokenError::Unencodable`], [`TokenError::Malformed`] as for
    /// [`Token::attenuate_mac`].
    pub fn attenuate_ed25519(
        &self,
        attenuation: &Attenuation,
        next_seed: [u8; 32],
    ) -> Result<Token, TokenError> {
        let p = format::parse(&self.bytes)?;
        if p.form != TokenForm::Ed25519 {
            return Err(TokenError::WrongForm {
                expected: TokenForm::Ed25519,
                found: p.form,
            });
        }
        let (last_key, last_commit, last_sig) = match p.last_block()? {
            Some(b) => (b.next_key, b.next_commit, b.signature),
            None => (p.root.next_key, p.root.next_commit, p.root_signature),
        };
        let signer = SigningKey::from_bytes(p.trailer);
        if commitment(p.trailer) != blake3::Hash::from_bytes(*last_commit)
            || signer.verifying_key().as_bytes() != last_key
        {
            return Err(TokenError::BadProof);
        }
        let (not_after, grants) = narrowed(&p, attenuation)?;
        let (next_key, next_commit) = next_of(&next_seed);
        let body = format::encode_block(not_after, &grants, Some((&next_key, &next_commit)));
        let mut signed = Vec::with_capacity(format::SIG_LEN + body.len());
        signed.extend_from_slice(last_sig);
        signed.extend_from_slice(&body);
        let signature = signer.sign(&signed);
        let keep = self.bytes.len() - format::PROOF_LEN;
        let mut bytes = Vec::with_capacity(keep + body.len() + format::SIG_LEN + format::PROOF_LEN);
        bytes.extend_from_slice(self.bytes.get(..keep).unwrap_or_default());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&signature.to_bytes());
        bytes.extend_from_slice(&next_seed);
        check_size(bytes.len())?;
        Ok(Token {
            bytes,
            form: TokenForm::Ed25519,
        })
    }
}

/// For tests: append a block without the narrowing check, as a dishonest
/// holder could.
#[cfg(test)]
pub(crate) fn append_unchecked(
    token: &Token,
    not_after: u64,
    grants: &[super::Grant],
    next_seed: [u8; 32],
) -> Token {
    let p = format::parse(&token.bytes).unwrap();
    let mut bytes = token.bytes[..token.bytes.len() - 32].to_vec();
    match p.form {
        TokenForm::Mac => {
            let body = format::encode_block(not_after, grants, None);
            let tag = blake3::keyed_hash(p.trailer, &body);
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(tag.as_bytes());
        }
        TokenForm::Ed25519 => {
            let last_sig = p
                .last_block()
                .unwrap()
                .map_or(p.root_signature, |b| b.signature);
            let (k, c) = next_of(&next_seed);
            let body = format::encode_block(not_after, grants, Some((&k, &c)));
            let mut signed = last_sig.to_vec();
            signed.extend_from_slice(&body);
            let sig = SigningKey::from_bytes(p.trailer).sign(&signed);
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(&sig.to_bytes());
            bytes.extend_from_slice(&next_seed);
        }
    }
    Token {
        bytes,
        form: p.form,
    }
}
