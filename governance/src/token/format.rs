//! The binary format: writing claims and blocks, and a zero-copy parse of
//! untrusted bytes through [`Cur`], a cursor that cannot over-read.
//!
//! The layout is specified in docs/TOKENS.md; in short:
//!
//! ```text
//! MAC:     header root_body block_body*              tag[32]
//! Ed25519: header root_body sig[64] (block_body sig[64])* proof[32]
//! ```

use mxp_protocol::{AgentId, DecodeError, EncodeError, Fingerprint, PrincipalId, SessionId};

use super::args::ArgsDigest;
use super::{Grant, Nonce, TokenForm};

/// The first six bytes of every token.
pub(crate) const MAGIC: &[u8; 6] = b"MXPTOK";
/// The format version this crate writes and reads.
pub(crate) const VERSION: u8 = 1;
/// The byte that opens every attenuation block.
pub(crate) const BLOCK_MARKER: u8 = 0x42;

/// The largest encoded token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The largest base64url text of a token, in characters.
pub const MAX_TOKEN_TEXT: usize = MAX_TOKEN_BYTES.div_ceil(3) * 4;
/// The most attenuation blocks a token may carry.
pub const MAX_BLOCKS: usize = 8;
/// The most grants (tool, arguments digest) a token or block may list.
pub const MAX_GRANTS: usize = 16;
/// The longest tool name, in bytes.
pub const MAX_TOOL_LEN: usize = 128;

/// Bytes of a MAC tag, an Ed25519 signature, an Ed25519 proof.
pub(crate) const TAG_LEN: usize = 32;
pub(crate) const SIG_LEN: usize = 64;
pub(crate) const PROOF_LEN: usize = 32;

const WHAT: &str = "capability token";

/// A forward-only cursor over untrusted bytes that cannot read past them:
/// `mxp_protocol::cursor::Reader`'s contract, specialised for the token's
/// hot path (one bounds check per read, through `split_first_chunk` and
/// `split_at_checked`; errors built only on the cold path).
#[derive(Clone, Copy)]
pub(crate) struct Cur<'a> {
    buf: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Cur<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Cur<'a> {
        Cur { buf, rest: buf }
    }

    /// Bytes read so far.
    #[inline]
    pub(crate) const fn position(&self) -> usize {
        self.buf.len() - self.rest.len()
    }

    /// The `back` bytes before the cursor and the `ahead` bytes after it,
    /// as one slice (empty if out of range).
    pub(crate) fn back(&self, back: usize, ahead: usize) -> &'a [u8] {
        let at = self.position();
        at.checked_sub(back)
            .and_then(|from| self.buf.get(from..at.saturating_add(ahead)))
            .unwrap_or_default()
    }

    /// Bytes not yet read.
    #[inline]
    pub(crate) const fn remaining(&self) -> usize {
        self.rest.len()
    }

    #[cold]
    fn short(&self, n: usize) -> DecodeError {
        DecodeError::PayloadTruncated {
            what: WHAT,
            needed: self.position().saturating_add(n),
            available: self.buf.len(),
        }
    }

    /// The next `n` bytes; on error the cursor does not move.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.rest.split_at_checked(n) {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(head)
            }
            None => Err(self.short(n)),
        }
    }

    /// The next `N` bytes as an array reference.
    #[inline]
    pub(crate) fn chunk<const N: usize>(&mut self) -> Result<&'a [u8; N], DecodeError> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(head)
            }
            None => Err(self.short(N)),
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = *self.chunk::<1>()?;
        Ok(b)
    }

    #[inline]
    pub(crate) fn u16_le(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(*self.chunk()?))
    }

    #[inline]
    pub(crate) fn u64_le(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(*self.chunk()?))
    }

    /// A `u16`-length-prefixed byte string of at most `limit` bytes; the
    /// length is checked against the limit before anything is read.
    #[inline]
    pub(crate) fn bytes_u16(
        &mut self,
        field: &'static str,
        limit: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16_le()?);
        if len > limit {
            return Err(DecodeError::LimitExceeded { field, len, limit });
        }
        self.take(len)
    }

    /// Ends decoding, refusing trailing bytes.
    pub(crate) const fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            extra => Err(DecodeError::PayloadTrailingBytes { what: WHAT, extra }),
        }
    }
}

pub(crate) const fn form_byte(form: TokenForm) -> u8 {
    match form {
        TokenForm::Mac => 1,
        TokenForm::Ed25519 => 2,
    }
}

/// The raw bytes of one grant inside a token: a tool name and a digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GrantRef<'a> {
    /// UTF-8, checked by the parse.
    pub(crate) tool: &'a [u8],
    pub(crate) digest: &'a [u8; 32],
}

/// The grants of a root or block, as the bytes hold them (already checked:
/// count in range, each tool 1..=MAX_TOOL_LEN bytes of UTF-8, strictly
/// ascending).
#[derive(Clone, Copy)]
pub(crate) struct GrantsRef<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> GrantsRef<'a> {
    pub(crate) const fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn iter(&self) -> GrantIter<'a> {
        GrantIter {
            r: Cur::new(self.bytes),
            left: self.count,
        }
    }

    /// Whether every grant of `self` is one of `outer` (both ascending).
    pub(crate) fn is_subset_of(&self, outer: &GrantsRef<'_>) -> bool {
        let mut outer = outer.iter();
        'inner: for g in self.iter() {
            for o in outer.by_ref() {
                match o.cmp(&g) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => continue 'inner,
                    std::cmp::Ordering::Greater => return false,
                }
            }
            return false;
        }
        true
    }

    pub(crate) fn to_owned_grants(self) -> Vec<Grant> {
        self.iter()
            .map(|g| Grant {
                tool: String::from_utf8_lossy(g.tool).into_owned(),
                args_digest: ArgsDigest(*g.digest),
            })
            .collect()
    }
}

/// Iterates grants already validated by [`read_grants`].
pub(crate) struct GrantIter<'a> {
    r: Cur<'a>,
    left: usize,
}

impl<'a> Iterator for GrantIter<'a> {
    type Item = GrantRef<'a>;

    fn next(&mut self) -> Option<GrantRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let tool = self.r.bytes_u16("tool", MAX_TOOL_LEN).ok()?;
        let digest = self.r.chunk::<32>().ok()?;
        Some(GrantRef { tool, digest })
    }
}

/// The root body's fields, borrowed from the token bytes.
#[derive(Clone, Copy)]
pub(crate) struct RootRef<'a> {
    pub(crate) issuer: Fingerprint,
    pub(crate) principal: PrincipalId,
    pub(crate) agent: AgentId,
    /// ASCII, checked by the parse.
    pub(crate) session: &'a [u8],
    pub(crate) not_after_unix_ms: u64,
    pub(crate) nonce: Nonce,
    pub(crate) grants: GrantsRef<'a>,
    /// Ed25519 form: the public key that signs block 1 and the commitment
    /// the proof opens when there is no block.
    pub(crate) next_key: &'a [u8; 32],
    pub(crate) next_commit: &'a [u8; 32],
}

/// One attenuation block, borrowed from the token bytes.
#[derive(Clone, Copy)]
pub(crate) struct BlockRef<'a> {
    /// The block body: what the MAC chain hashes.
    pub(crate) body: &'a [u8],
    /// Ed25519: the previous signature followed by the body, contiguous in
    /// the token: what this block's signature signs.
    pub(crate) signed: &'a [u8],
    pub(crate) signature: &'a [u8; 64],
    pub(crate) not_after_unix_ms: u64,
    /// Empty: the grants are unchanged.
    pub(crate) grants: GrantsRef<'a>,
    pub(crate) next_key: &'a [u8; 32],
    pub(crate) next_commit: &'a [u8; 32],
}

const NO_KEY: &[u8; 32] = &[0; 32];
const NO_SIG: &[u8; 64] = &[0; 64];

/// A whole token, parsed without allocating.
pub(crate) struct Parsed<'a> {
    pub(crate) form: TokenForm,
    /// Header and root body: what the root MAC or signature covers.
    pub(crate) root_signed: &'a [u8],
    pub(crate) root: RootRef<'a>,
    /// Ed25519: the issuer's signature of `root_signed`.
    pub(crate) root_signature: &'a [u8; 64],
    /// At the first block (already checked once, read again on demand).
    blocks_at: Cur<'a>,
    pub(crate) block_count: usize,
    /// MAC: the tag; Ed25519: the proof.
    pub(crate) trailer: &'a [u8; 32],
}

impl<'a> Parsed<'a> {
    /// The attenuation blocks, in order. `parse` has read them all once, so
    /// no error is expected; should one occur, it is reported, never skipped.
    pub(crate) const fn blocks(&self) -> Blocks<'a> {
        Blocks {
            r: self.blocks_at,
            form: self.form,
            left: self.block_count,
        }
    }

    /// The last block, if any.
    pub(crate) fn last_block(&self) -> Result<Option<BlockRef<'a>>, DecodeError> {
        let mut last = None;
        for b in self.blocks() {
            last = Some(b?);
        }
        Ok(last)
    }
}

/// Iterates a token's blocks.
pub(crate) struct Blocks<'a> {
    r: Cur<'a>,
    form: TokenForm,
    left: usize,
}

impl<'a> Iterator for Blocks<'a> {
    type Item = Result<BlockRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = read_block(&mut self.r, self.form);
        if b.is_err() {
            self.left = 0;
        }
        Some(b)
    }
}

/// Reads one block at `r`. For Ed25519, `r` is positioned at the previous
/// signature's end; the signed bytes start 64 bytes before the body.
fn read_block<'a>(r: &mut Cur<'a>, form: TokenForm) -> Result<BlockRef<'a>, DecodeError> {
    let start = *r;
    if r.u8()? != BLOCK_MARKER {
        return Err(invalid("block", "an attenuation block starts with 0x42"));
    }
    let not_after_unix_ms = r.u64_le()?;
    let grants = read_grants(r, true)?;
    let (next_key, next_commit) = match form {
        TokenForm::Mac => (NO_KEY, NO_KEY),
        TokenForm::Ed25519 => (arr::<32>(r)?, arr::<32>(r)?),
    };
    let body_len = r.position() - start.position();
    let body = start.rest.get(..body_len).unwrap_or_default();
    let (signed, signature) = match form {
        TokenForm::Mac => (&[][..], NO_SIG),
        TokenForm::Ed25519 => {
            // The previous signature precedes the body in the token.
            let signed = start.back(SIG_LEN, body_len);
            (signed, arr::<SIG_LEN>(r)?)
        }
    };
    Ok(BlockRef {
        body,
        signed,
        signature,
        not_after_unix_ms,
        grants,
        next_key,
        next_commit,
    })
}

fn invalid(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::InvalidValue { field, reason }
}

#[inline]
fn arr<'a, const N: usize>(r: &mut Cur<'a>) -> Result<&'a [u8; N], DecodeError> {
    r.chunk::<N>()
}

/// Reads the session id: 1 to 64 bytes. Its syntax is checked by
/// [`session_syntax_ok`] (from `Token::decode`), not here: the verifier
/// compares it byte for byte with the Call's `SessionId`, which is valid by
/// construction, so a session that passes is valid too.
fn read_session<'a>(r: &mut Cur<'a>) -> Result<&'a [u8], DecodeError> {
    let s = r.bytes_u16("session", SessionId::MAX_LEN)?;
    if s.is_empty() {
        return Err(invalid("session", "empty session id"));
    }
    Ok(s)
}

/// Whether a parsed session id has `SessionId`'s syntax.
pub(crate) fn session_syntax_ok(s: &[u8]) -> bool {
    s.iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn read_principal(r: &mut Cur<'_>) -> Result<PrincipalId, DecodeError> {
    let kind = r.u8()?;
    let fp = Fingerprint(*r.chunk()?);
    Ok(match kind {
        1 => PrincipalId::Peer(fp),
        2 => PrincipalId::Operator(fp),
        3 => PrincipalId::Node(fp),
        4 => PrincipalId::Agent {
            agent: AgentId::from_bytes(*r.chunk()?),
            node: fp,
        },
        5 => PrincipalId::Relayed {
            caller: fp,
            via: Fingerprint(*r.chunk()?),
        },
        _ => {
            return Err(invalid(
                "principal",
                "kind is not 1 (peer), 2 (operator), 3 (node), 4 (agent) or 5 (relayed)",
            ));
        }
    })
}

/// Reads a grant list; `allow_empty` for blocks (0 = unchanged).
fn read_grants<'a>(r: &mut Cur<'a>, allow_empty: bool) -> Result<GrantsRef<'a>, DecodeError> {
    let count = usize::from(r.u8()?);
    if count > MAX_GRANTS {
        return Err(DecodeError::LimitExceeded {
            field: "grants",
            len: count,
            limit: MAX_GRANTS,
        });
    }
    if count == 0 && !allow_empty {
        return Err(invalid("grants", "a token grants at least one tool"));
    }
    let start = r.position();
    let mut sub = *r;
    let mut prev: Option<GrantRef<'a>> = None;
    for _ in 0..count {
        let tool = sub.bytes_u16("tool", MAX_TOOL_LEN)?;
        if tool.is_empty() {
            return Err(invalid("tool", "empty tool name"));
        }
        if !tool.is_ascii() && std::str::from_utf8(tool).is_err() {
            return Err(DecodeError::InvalidUtf8 { field: "tool" });
        }
        let digest = arr::<32>(&mut sub)?;
        let g = GrantRef { tool, digest };
        if prev.is_some_and(|p| p >= g) {
            return Err(invalid(
                "grants",
                "not in strictly ascending (tool, digest) order",
            ));
        }
        prev = Some(g);
    }
    let bytes = r.take(sub.position() - start)?;
    Ok(GrantsRef { bytes, count })
}

/// Parses a whole token. Checks the size limit before anything else, then
/// the structure; checks nothing cryptographic.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed<'_>, DecodeError> {
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(DecodeError::LimitExceeded {
            field: "token",
            len: bytes.len(),
            limit: MAX_TOKEN_BYTES,
        });
    }
    let mut r = Cur::new(bytes);
    if r.chunk::<6>()? != MAGIC {
        return Err(invalid("magic", "a token starts with MXPTOK"));
    }
    if r.u8()? != VERSION {
        return Err(invalid("version", "this node reads token format version 1"));
    }
    let form = match r.u8()? {
        1 => TokenForm::Mac,
        2 => TokenForm::Ed25519,
        _ => return Err(invalid("form", "is neither 1 (MAC) nor 2 (Ed25519)")),
    };
    let issuer = Fingerprint(*r.chunk()?);
    let principal = read_principal(&mut r)?;
    let agent = AgentId::from_bytes(*r.chunk()?);
    let session = read_session(&mut r)?;
    let not_after_unix_ms = r.u64_le()?;
    let nonce = Nonce(*r.chunk()?);
    let grants = read_grants(&mut r, false)?;
    let (next_key, next_commit) = match form {
        TokenForm::Mac => (NO_KEY, NO_KEY),
        TokenForm::Ed25519 => (arr::<32>(&mut r)?, arr::<32>(&mut r)?),
    };
    let root_signed = bytes.get(..r.position()).unwrap_or_default();
    let root = RootRef {
        issuer,
        principal,
        agent,
        session,
        not_after_unix_ms,
        nonce,
        grants,
        next_key,
        next_commit,
    };
    let mut root_signature = NO_SIG;
    let trailer_len = match form {
        TokenForm::Mac => TAG_LEN,
        TokenForm::Ed25519 => {
            root_signature = arr::<SIG_LEN>(&mut r)?;
            PROOF_LEN
        }
    };
    let blocks_at = r;
    let mut block_count = 0;
    while r.remaining() > trailer_len {
        if block_count == MAX_BLOCKS {
            return Err(DecodeError::LimitExceeded {
                field: "blocks",
                len: block_count + 1,
                limit: MAX_BLOCKS,
            });
        }
        read_block(&mut r, form)?;
        block_count += 1;
    }
    let trailer = arr::<32>(&mut r)?;
    r.finish()?;
    Ok(Parsed {
        form,
        root_signed,
        root,
        root_signature,
        blocks_at,
        block_count,
        trailer,
    })
}

/// Appends `PrincipalId`'s canonical bytes without allocating.
fn put_principal(out: &mut Vec<u8>, p: &PrincipalId) -> Result<(), EncodeError> {
    let (kind, fp, extra) = match p {
        PrincipalId::Peer(f) => (1, f, None),
        PrincipalId::Operator(f) => (2, f, None),
        PrincipalId::Node(f) => (3, f, None),
        PrincipalId::Agent { agent, node } => (4, node, Some(&agent.as_bytes()[..])),
        PrincipalId::Relayed { caller, via } => (5, caller, Some(&via.as_bytes()[..])),
        _ => {
            return Err(EncodeError::InvalidValue {
                field: "principal",
                reason: "a principal kind this token format does not know",
            });
        }
    };
    out.push(kind);
    out.extend_from_slice(fp.as_bytes());
    if let Some(bytes) = extra {
        out.extend_from_slice(bytes);
    }
    Ok(())
}

fn put_str_u16(out: &mut Vec<u8>, s: &str) {
    // Callers check the length against a limit far below u16::MAX first.
    out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Sorts and dedups `grants` and checks each against the limits.
pub(crate) fn canonical_grants(
    grants: &[Grant],
    allow_empty: bool,
) -> Result<Vec<Grant>, EncodeError> {
    if grants.is_empty() && !allow_empty {
        return Err(EncodeError::InvalidValue {
            field: "grants",
            reason: "a token grants at least one tool",
        });
    }
    let mut sorted: Vec<Grant> = grants.to_vec();
    sorted.sort_by(|a, b| {
        (a.tool.as_bytes(), &a.args_digest.0).cmp(&(b.tool.as_bytes(), &b.args_digest.0))
    });
    sorted.dedup();
    if sorted.len() > MAX_GRANTS {
        return Err(EncodeError::LimitExceeded {
            field: "grants",
            len: sorted.len(),
            limit: MAX_GRANTS,
        });
    }
    for g in &sorted {
        if g.tool.is_empty() {
            return Err(EncodeError::InvalidValue {
                field: "tool",
                reason: "empty tool name",
            });
        }
        if g.tool.len() > MAX_TOOL_LEN {
            return Err(EncodeError::LimitExceeded {
                field: "tool",
                len: g.tool.len(),
                limit: MAX_TOOL_LEN,
            });
        }
    }
    Ok(sorted)
}

fn put_grants(out: &mut Vec<u8>, grants: &[Grant]) {
    // canonical_grants bounds the count by MAX_GRANTS.
    out.push(u8::try_from(grants.len()).unwrap_or(u8::MAX));
    for g in grants {
        put_str_u16(out, &g.tool);
        out.extend_from_slice(&g.args_digest.0);
    }
}

/// Everything the root body holds, owned, for encoding.
pub(crate) struct RootFields<'a> {
    pub(crate) form: TokenForm,
    pub(crate) issuer: &'a Fingerprint,
    pub(crate) principal: &'a PrincipalId,
    pub(crate) agent: &'a AgentId,
    pub(crate) session: &'a SessionId,
    pub(crate) not_after_unix_ms: u64,
    pub(crate) nonce: &'a Nonce,
    /// Canonical (from [`canonical_grants`]).
    pub(crate) grants: &'a [Grant],
    /// Ed25519 only.
    pub(crate) next: Option<(&'a [u8; 32], &'a [u8; 32])>,
}

/// Header and root body.
pub(crate) fn encode_root(f: &RootFields<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(form_byte(f.form));
    out.extend_from_slice(f.issuer.as_bytes());
    put_principal(&mut out, f.principal)?;
    out.extend_from_slice(f.agent.as_bytes());
    put_str_u16(&mut out, f.session.as_str());
    out.extend_from_slice(&f.not_after_unix_ms.to_le_bytes());
    out.extend_from_slice(&f.nonce.0);
    put_grants(&mut out, f.grants);
    if let Some((key, commit)) = f.next {
        out.extend_from_slice(key);
        out.extend_from_slice(commit);
    }
    Ok(out)
}

/// An attenuation block body.
pub(crate) fn encode_block(
    not_after_unix_ms: u64,
    grants: &[Grant],
    next: Option<(&[u8; 32], &[u8; 32])>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(BLOCK_MARKER);
    out.extend_from_slice(&not_after_unix_ms.to_le_bytes());
    put_grants(&mut out, grants);
    if let Some((key, commit)) = next {
        out.extend_from_slice(key);
        out.extend_from_slice(commit);
    }
    out
}
