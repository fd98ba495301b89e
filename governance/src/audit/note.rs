//! C2SP signed notes (`c2sp.org/signed-note`), with Ed25519 signatures
//! (type `0x01`) and timestamped Ed25519 checkpoint cosignatures (type
//! `0x04`, `c2sp.org/tlog-cosignature`).
//!
//! ```text
//! <text, ending in a newline>
//! <blank line>
//! — <key name> <base64(key ID (4 bytes, big-endian) ‖ signature)>
//! …one line per signature
//! ```
//!
//! * key ID `= SHA-256(name ‖ "\n" ‖ type byte ‖ 32-byte public key)[:4]`
//! * verifier key text: `<name>+<hex key ID>+<base64(type byte ‖ public key)>`
//! * type `0x01` signs the note text; type `0x04` signs
//!   `"cosignature/v1\ntime <t>\n" ‖ text` and its signature is
//!   `timestamp (u64 big-endian) ‖ Ed25519 signature`.
//!
//! Parsing is strict: at most [`MAX_NOTE_BYTES`] bytes, UTF-8, no control
//! characters but newline, the text separated from the signatures by the
//! last blank line, at most [`MAX_SIGNATURES`] signature lines of the exact
//! form above, canonical padded base64. Verification ignores signatures by
//! keys it does not know (same name and key ID), refuses the note if a known
//! key's signature fails, and requires at least one known signature.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// The most signature lines accepted in one note (the spec requires at least 16).
pub const MAX_SIGNATURES: usize = 64;

/// The most lines the text of a note may have.
pub const MAX_TEXT_LINES: usize = 1024;

/// The largest cosignature timestamp: 2^63 − 1.
pub const MAX_COSIGNATURE_TIME: u64 = i64::MAX as u64;

const SIG_PREFIX: &str = "\u{2014} ";

/// A signature type byte this module implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureType {
    /// `0x01`: Ed25519 over the note text.
    Ed25519,
    /// `0x04`: timestamped Ed25519 checkpoint cosignature.
    Cosignature,
}

impl SignatureType {
    /// The type byte.
    pub const fn byte(self) -> u8 {
        match self {
            SignatureType::Ed25519 => 0x01,
            SignatureType::Cosignature => 0x04,
        }
    }

    /// The type of a byte, if implemented.
    pub const fn from_byte(byte: u8) -> Option<SignatureType> {
        match byte {
            0x01 => Some(SignatureType::Ed25519),
            0x04 => Some(SignatureType::Cosignature),
            _ => None,
        }
    }
}

/// Why a note, a key or a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is above [`MAX_NOTE_BYTES`].
    #[error("the note is {len} bytes, above the limit of {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The note is not UTF-8.
    #[error("the note is not valid UTF-8")]
    InvalidUtf8,
    /// The note holds a control character other than newline.
    #[error("control character {byte:#04x} at byte {offset} (only newline is allowed)")]
    ControlCharacter {
        /// The character.
        byte: u8,
        /// Its byte offset.
        offset: usize,
    },
    /// No blank line separates a newline-terminated text from the signatures,
    /// or the signature block is empty or does not end in a newline.
    #[error(
        "a note is a text ending in newline, a blank line, then signature lines each ending in newline"
    )]
    NoSignatureBlock,
    /// The text has more than [`MAX_TEXT_LINES`] lines.
    #[error("the note text has more than {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// More signature lines than [`MAX_SIGNATURES`].
    #[error("{count} signature lines, above the limit of {limit}")]
    TooManySignatures {
        /// Lines found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A signature line is not `— <name> <base64>`.
    #[error("signature line {line}: {reason}")]
    MalformedSignatureLine {
        /// Its position among the signature lines, from 0.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key name is empty, or holds a Unicode space or a `+`.
    #[error("a key name is non-empty with no spaces and no '+'")]
    InvalidName,
    /// A text to sign does not end in a newline or holds a control character.
    #[error("a note text ends in newline and holds no control character but newline")]
    InvalidText,
    /// A verifier or signer key text is malformed.
    #[error("malformed key: {reason}")]
    MalformedKey {
        /// What is wrong.
        reason: &'static str,
    },
    /// A key's stated key ID is not the one its name and public key give.
    #[error("key ID {stated:08x} does not match the computed {computed:08x}")]
    KeyIdMismatch {
        /// The key ID in the text.
        stated: u32,
        /// `SHA-256(name ‖ "\n" ‖ type ‖ key)[:4]`.
        computed: u32,
    },
    /// A key of a signature type not implemented here.
    #[error("signature type {0:#04x} is not supported (0x01 Ed25519, 0x04 cosignature)")]
    UnsupportedType(u8),
    /// Two known verifiers share a name and key ID.
    #[error("two known keys share the name {name} and key ID {key_id:08x}")]
    AmbiguousKey {
        /// The name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// A known key's signature does not verify.
    #[error("the signature by {name} ({key_id:08x}) does not verify")]
    BadSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// A known key signed twice.
    #[error("{name} ({key_id:08x}) signed the note more than once")]
    DuplicateSignature {
        /// The key name.
        name: String,
        /// The key ID.
        key_id: u32,
    },
    /// No signature from a known key.
    #[error("no signature from a known key")]
    NoKnownSignature,
    /// A cosignature time above 2^63 − 1.
    #[error("cosignature time {0} is above 2^63 - 1")]
    TimeTooLarge(u64),
}

/// Whether `name` is a valid key name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+')
}

/// `SHA-256(name ‖ "\n" ‖ type ‖ public key)[:4]`, big-endian.
pub fn key_id(name: &str, signature_type: SignatureType, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([signature_type.byte()]);
    h.update(public_key);
    let d = h.finalize();
    let mut id = [0u8; 4];
    for (dst, src) in id.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    u32::from_be_bytes(id)
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') || text.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::InvalidText);
    }
    Ok(())
}

/// The message a cosignature signs: `"cosignature/v1\ntime <t>\n" ‖ text`.
pub fn cosignature_message(text: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{text}")
}

/// One signature line of a note.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: u32,
    /// The signature bytes after the key ID (for a cosignature, timestamp ‖ signature).
    pub signature: Vec<u8>,
}

impl fmt::Debug for NoteSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NoteSignature({} {:08x}, {} bytes)",
            self.name,
            self.key_id,
            self.signature.len()
        )
    }
}

impl NoteSignature {
    /// The line: `— <name> <base64(key ID ‖ signature)>\n`.
    pub fn line(&self) -> String {
        let mut bytes = Vec::with_capacity(4 + self.signature.len());
        bytes.extend_from_slice(&self.key_id.to_be_bytes());
        bytes.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(bytes))
    }

    /// For a cosignature line, its timestamp (the first 8 bytes, big-endian).
    pub fn cosignature_time(&self) -> Option<u64> {
        let ts: [u8; 8] = self.signature.get(..8)?.try_into().ok()?;
        Some(u64::from_be_bytes(ts))
    }
}

/// A parsed, not yet verified, note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a signed note strictly (see the module documentation).
    ///
    /// # Errors
    /// The first [`NoteError`] found.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                len: bytes.len(),
                limit: MAX_NOTE_BYTES,
            });
        }
        let msg = std::str::from_utf8(bytes).map_err(|_| NoteError::InvalidUtf8)?;
        if let Some((offset, &byte)) = bytes
            .iter()
            .enumerate()
            .find(|(_, b)| **b < 0x20 && **b != b'\n')
        {
            return Err(NoteError::ControlCharacter { byte, offset });
        }
        let split = msg.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let text = msg.get(..split + 1).ok_or(NoteError::NoSignatureBlock)?;
        let block = msg.get(split + 2..).ok_or(NoteError::NoSignatureBlock)?;
        if block.is_empty() || !block.ends_with('\n') {
            return Err(NoteError::NoSignatureBlock);
        }
        if text.matches('\n').count() > MAX_TEXT_LINES {
            return Err(NoteError::TooManyLines {
                limit: MAX_TEXT_LINES,
            });
        }
        let count = block.matches('\n').count();
        if count > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count,
                limit: MAX_SIGNATURES,
            });
        }
        let mut signatures = Vec::with_capacity(count);
        for (i, line) in block.split_terminator('\n').enumerate() {
            signatures.push(parse_signature_line(i, line)?);
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The text (with its final newline).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signatures, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// The note in its text form.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + 128 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
        }
        out
    }

    /// Adds a signature line.
    pub fn push_signature(&mut self, signature: NoteSignature) {
        self.signatures.push(signature);
    }

    /// Verifies the note against the `known` keys.
    ///
    /// # Errors
    /// [`NoteError::BadSignature`] if a known key's signature fails,
    /// [`NoteError::DuplicateSignature`], [`NoteError::AmbiguousKey`],
    /// [`NoteError::NoKnownSignature`].
    pub fn verify(&self, known: &[NoteVerifier]) -> Result<VerifiedNote, NoteError> {
        let mut verified: Vec<VerifiedSignature> = Vec::new();
        let mut unverified = Vec::new();
        for sig in &self.signatures {
            let mut matching = known
                .iter()
                .filter(|k| k.name == sig.name && k.key_id == sig.key_id);
            let Some(key) = matching.next() else {
                unverified.push(sig.clone());
                continue;
            };
            if matching.next().is_some() {
                return Err(NoteError::AmbiguousKey {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            if verified
                .iter()
                .any(|v| v.name == sig.name && v.key_id == sig.key_id)
            {
                return Err(NoteError::DuplicateSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            let timestamp =
                key.check(&self.text, &sig.signature)
                    .ok_or_else(|| NoteError::BadSignature {
                        name: sig.name.clone(),
                        key_id: sig.key_id,
                    })?;
            verified.push(VerifiedSignature {
                name: sig.name.clone(),
                key_id: sig.key_id,
                signature_type: key.signature_type,
                timestamp,
            });
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(VerifiedNote {
            text: self.text.clone(),
            verified,
            unverified,
        })
    }
}

fn parse_signature_line(line_no: usize, line: &str) -> Result<NoteSignature, NoteError> {
    let bad = |reason| NoteError::MalformedSignatureLine {
        line: line_no,
        reason,
    };
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(bad("does not start with an em dash and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(bad("no space between key name and signature"))?;
    if !is_valid_name(name) {
        return Err(bad("invalid key name"));
    }
    let raw = B64
        .decode(b64)
        .map_err(|_| bad("signature is not canonical padded base64"))?;
    let (id, signature) = raw
        .split_first_chunk::<4>()
        .ok_or(bad("signature shorter than its 4-byte key ID"))?;
    if signature.is_empty() {
        return Err(bad("signature holds only a key ID"));
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes(*id),
        signature: signature.to_vec(),
    })
}

/// A note whose signatures verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The text.
    pub text: String,
    /// Signatures by known keys, all of which verified.
    pub verified: Vec<VerifiedSignature>,
    /// Signatures by unknown keys, ignored.
    pub unverified: Vec<NoteSignature>,
}

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: u32,
    /// Its type.
    pub signature_type: SignatureType,
    /// For a cosignature, its timestamp.
    pub timestamp: Option<u64>,
}

/// A public key that verifies note signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    signature_type: SignatureType,
    key: VerifyingKey,
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl NoteVerifier {
    /// A verifier from its parts.
    ///
    /// # Errors
    /// [`NoteError::InvalidName`], or [`NoteError::MalformedKey`] if the
    /// bytes are not an Ed25519 public key.
    pub fn new(
        name: &str,
        signature_type: SignatureType,
        public_key: &[u8; 32],
    ) -> Result<NoteVerifier, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName);
        }
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| NoteError::MalformedKey {
            reason: "not an Ed25519 public key",
        })?;
        Ok(NoteVerifier {
            name: name.to_owned(),
            key_id: key_id(name, signature_type, public_key),
            signature_type,
            key,
        })
    }

    /// Parses `<name>+<hex key ID>+<base64(type ‖ public key)>`.
    ///
    /// # Errors
    /// [`NoteError::MalformedKey`], [`NoteError::InvalidName`],
    /// [`NoteError::UnsupportedType`] or [`NoteError::KeyIdMismatch`].
    pub fn parse(vkey: &str) -> Result<NoteVerifier, NoteError> {
        let (name, rest) = vkey.split_once('+').ok_or(NoteError::MalformedKey {
            reason: "a verifier key is <name>+<hex key ID>+<base64 key>",
        })?;
        let (stated, key) = parse_key_parts(name, rest)?;
        let v = NoteVerifier::new(name, key.0, &key.1)?;
        if v.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                stated,
                computed: v.key_id,
            });
        }
        Ok(v)
    }

    /// The text form `<name>+<hex key ID>+<base64(type ‖ public key)>`.
    pub fn to_vkey(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(self.signature_type.byte());
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(key))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature type.
    pub fn signature_type(&self) -> SignatureType {
        self.signature_type
    }

    /// Whether `signature` is this key's valid signature of `text` (same
    /// name and key ID, and it verifies).
    pub fn verifies(&self, text: &str, signature: &NoteSignature) -> bool {
        signature.name == self.name
            && signature.key_id == self.key_id
            && self.check(text, &signature.signature).is_some()
    }

    /// Checks `signature` (the bytes after the key ID) over `text`. `Some`
    /// with the cosignature timestamp (or `None` for type `0x01`) if it verifies.
    fn check(&self, text: &str, signature: &[u8]) -> Option<Option<u64>> {
        match self.signature_type {
            SignatureType::Ed25519 => {
                let sig = ed25519_dalek::Signature::from_slice(signature).ok()?;
                self.key.verify_strict(text.as_bytes(), &sig).ok()?;
                Some(None)
            }
            SignatureType::Cosignature => {
                let (ts, sig) = signature.split_first_chunk::<8>()?;
                let time = u64::from_be_bytes(*ts);
                if time > MAX_COSIGNATURE_TIME {
                    return None;
                }
                let sig = ed25519_dalek::Signature::from_slice(sig).ok()?;
                let msg = cosignature_message(text, time);
                self.key.verify_strict(msg.as_bytes(), &sig).ok()?;
                Some(Some(time))
            }
        }
    }
}

/// Parses `<hex key ID>+<base64(type ‖ key)>` after the name.
fn parse_key_parts(name: &str, rest: &str) -> Result<(u32, (SignatureType, [u8; 32])), NoteError> {
    if !is_valid_name(name) {
        return Err(NoteError::InvalidName);
    }
    let (hex, b64) = rest.split_once('+').ok_or(NoteError::MalformedKey {
        reason: "missing '+' between key ID and key",
    })?;
    if hex.len() != 8
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(NoteError::MalformedKey {
            reason: "a key ID is 8 lowercase hex digits",
        });
    }
    let stated = u32::from_str_radix(hex, 16).map_err(|_| NoteError::MalformedKey {
        reason: "a key ID is 8 lowercase hex digits",
    })?;
    let raw = B64.decode(b64).map_err(|_| NoteError::MalformedKey {
        reason: "key is not canonical padded base64",
    })?;
    let (&ty, key) = raw.split_first().ok_or(NoteError::MalformedKey {
        reason: "empty key",
    })?;
    let ty = SignatureType::from_byte(ty).ok_or(NoteError::UnsupportedType(ty))?;
    let key: [u8; 32] = key.try_into().map_err(|_| NoteError::MalformedKey {
        reason: "an Ed25519 key is 32 bytes",
    })?;
    Ok((stated, (ty, key)))
}

/// An Ed25519 note signing key (type `0x01`): a log's checkpoint key.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.key_id)
    }
}

impl NoteSigner {
    /// A signer named `name` with the Ed25519 secret key `seed` (an input:
    /// the caller draws or loads it).
    ///
    /// # Errors
    /// [`NoteError::InvalidName`].
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName);
        }
        let key = SigningKey::from_bytes(seed);
        Ok(NoteSigner {
            name: name.to_owned(),
            key_id: key_id(name, SignatureType::Ed25519, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses the `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ seed)>`
    /// form of golang.org/x/mod/sumdb/note, checking the key ID.
    ///
    /// # Errors
    /// As [`NoteVerifier::parse`].
    pub fn from_private_key_text(skey: &str) -> Result<NoteSigner, NoteError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey {
                reason: "a signer key starts with PRIVATE+KEY+",
            })?;
        let (name, rest) = rest.split_once('+').ok_or(NoteError::MalformedKey {
            reason: "a signer key is PRIVATE+KEY+<name>+<hex key ID>+<base64 key>",
        })?;
        let (stated, (ty, seed)) = parse_key_parts(name, rest)?;
        if ty != SignatureType::Ed25519 {
            return Err(NoteError::UnsupportedType(ty.byte()));
        }
        let signer = NoteSigner::new(name, &seed)?;
        if signer.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                stated,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            signature_type: SignatureType::Ed25519,
            key: self.key.verifying_key(),
        }
    }

    /// A signature of `text`.
    ///
    /// # Errors
    /// [`NoteError::InvalidText`].
    pub fn sign(&self, text: &str) -> Result<NoteSignature, NoteError> {
        check_text(text)?;
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        })
    }

    /// The signed note of `text`: text, blank line, this key's signature line.
    ///
    /// # Errors
    /// [`NoteError::InvalidText`].
    pub fn sign_note(&self, text: &str) -> Result<String, NoteError> {
        let sig = self.sign(text)?;
        Ok(format!("{text}\n{}", sig.line()))
    }
}

/// An Ed25519 cosigner key (type `0x04`): a witness's key.
#[derive(Clone)]
pub struct Cosigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cosigner({}+{:08x})", self.name, self.key_id)
    }
}

impl Cosigner {
    /// A cosigner named `name` with the Ed25519 secret key `seed`.
    ///
    /// # Errors
    /// [`NoteError::InvalidName`].
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<Cosigner, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName);
        }
        let key = SigningKey::from_bytes(seed);
        Ok(Cosigner {
            name: name.to_owned(),
            key_id: key_id(
                name,
                SignatureType::Cosignature,
                key.verifying_key().as_bytes(),
            ),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            signature_type: SignatureType::Cosignature,
            key: self.key.verifying_key(),
        }
    }

    /// A cosignature of the checkpoint `text` at `time` (POSIX seconds, an input).
    ///
    /// # Errors
    /// [`NoteError::InvalidText`] or [`NoteError::TimeTooLarge`].
    pub fn cosign(&self, text: &str, time: u64) -> Result<NoteSignature, NoteError> {
        check_text(text)?;
        if time > MAX_COSIGNATURE_TIME {
            return Err(NoteError::TimeTooLarge(time));
        }
        let msg = cosignature_message(text, time);
        let mut signature = Vec::with_capacity(72);
        signature.extend_from_slice(&time.to_be_bytes());
        signature.extend_from_slice(&self.key.sign(msg.as_bytes()).to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature,
        })
    }
}
