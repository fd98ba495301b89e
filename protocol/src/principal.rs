//! Who asked, and in which session: the keys that policy, tokens, budgets,
//! audit and replay use.
//!
//! These are *descriptions*: plain values that can be written to an audit
//! record and read back for replay. That a description is true of the peer
//! on the other end of a connection is proved by a different value,
//! `mxp_transport::Principal`, which only the TLS handshake path (and the
//! node, for its own actors) can construct; see docs/GUARANTEES.md.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::AgentId;

/// The SHA-256 of a certificate's SubjectPublicKeyInfo: how MXP names a
/// node or a client. Printed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 bytes in hex, for logs.
    pub fn short(&self) -> String {
        self.0
            .get(..8)
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Display for Fingerprint {
    /// 64 lowercase hex digits, written at once (policy requests format
    /// principals on every decision).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            if let [hi, lo] = pair {
                *hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                *lo = HEX.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0');
            }
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

/// Why a text is not a [`Fingerprint`], [`PrincipalId`] or [`SessionId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityParseError {
    /// A fingerprint is not 64 hex digits.
    #[error(
        "a fingerprint is 64 hex digits (the SHA-256 of the certificate's public key), got {0:?}"
    )]
    Fingerprint(String),
    /// A principal's text does not start with a known kind.
    #[error(
        "a principal is peer:<fingerprint>, operator:<fingerprint>, node:<fingerprint> or agent:<uuid>@<fingerprint>, got {0:?}"
    )]
    Principal(String),
    /// A session id has the wrong length or characters.
    #[error("a session id is 1 to {max} characters of A-Z a-z 0-9 . _ : -, got {got:?}", max = SessionId::MAX_LEN)]
    Session {
        /// The text (cut to 80 characters).
        got: String,
    },
}

impl FromStr for Fingerprint {
    type Err = IdentityParseError;

    fn from_str(s: &str) -> Result<Fingerprint, IdentityParseError> {
        let err = || IdentityParseError::Fingerprint(s.chars().take(80).collect());
        let t = s.trim();
        if t.len() != 64 || !t.is_ascii() {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = t.get(2 * i..2 * i + 2).ok_or_else(err)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        Ok(Fingerprint(out))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The kinds of principal, for policy entity types and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A remote peer, known by its certificate.
    Peer,
    /// A peer this node's configuration names as an operator.
    Operator,
    /// A node itself (its own actors, or a mesh node by its certificate).
    Node,
    /// An agent hosted by a node.
    Agent,
    /// A caller relayed by a trusted forwarding node: the forwarder vouches
    /// for the caller's identity. Never an operator.
    Relayed,
}

impl PrincipalKind {
    /// The lower-case name: `peer`, `operator`, `node`, `agent`.
    pub const fn name(self) -> &'static str {
        match self {
            PrincipalKind::Peer => "peer",
            PrincipalKind::Operator => "operator",
            PrincipalKind::Node => "node",
            PrincipalKind::Agent => "agent",
            PrincipalKind::Relayed => "relayed",
        }
    }
}

/// Who asked: the description of an authenticated identity.
///
/// Text forms: `peer:<fp>`, `operator:<fp>`, `node:<fp>`, `agent:<uuid>@<fp>`
/// where `<fp>` is a 64-hex-digit [`Fingerprint`] (for an agent, of the node
/// hosting it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PrincipalId {
    /// A remote peer.
    Peer(Fingerprint),
    /// A peer configured as an operator of this node.
    Operator(Fingerprint),
    /// A node.
    Node(Fingerprint),
    /// An agent, and the node that hosts it.
    Agent {
        /// The agent.
        agent: AgentId,
        /// Its node.
        node: Fingerprint,
    },
    /// A caller whose Call a trusted mesh node forwarded: `via` is the
    /// forwarder (authenticated by TLS), `caller` the identity it vouches for.
    Relayed {
        /// The original caller, as the forwarder names it.
        caller: Fingerprint,
        /// The forwarding node.
        via: Fingerprint,
    },
}

impl PrincipalId {
    /// Its kind.
    pub const fn kind(&self) -> PrincipalKind {
        match self {
            PrincipalId::Peer(_) => PrincipalKind::Peer,
            PrincipalId::Operator(_) => PrincipalKind::Operator,
            PrincipalId::Node(_) => PrincipalKind::Node,
            PrincipalId::Agent { .. } => PrincipalKind::Agent,
            PrincipalId::Relayed { .. } => PrincipalKind::Relayed,
        }
    }

    /// The certificate fingerprint behind it (for an agent, its node's; for
    /// a relayed caller, the caller's as its forwarder names it).
    pub const fn fingerprint(&self) -> &Fingerprint {
        match self {
            PrincipalId::Peer(f) | PrincipalId::Operator(f) | PrincipalId::Node(f) => f,
            PrincipalId::Agent { node, .. } => node,
            PrincipalId::Relayed { caller, .. } => caller,
        }
    }

    /// A canonical, unambiguous byte encoding (for digests and MACs):
    /// one kind byte (1 peer, 2 operator, 3 node, 4 agent), then the
    /// fingerprint (32 bytes), then for an agent its id (16 bytes); a relayed
    /// caller is kind 5, the caller's fingerprint, then the forwarder's.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(49);
        let kind = match self {
            PrincipalId::Peer(_) => 1,
            PrincipalId::Operator(_) => 2,
            PrincipalId::Node(_) => 3,
            PrincipalId::Agent { .. } => 4,
            PrincipalId::Relayed { .. } => 5,
        };
        out.push(kind);
        out.extend_from_slice(self.fingerprint().as_bytes());
        match self {
            PrincipalId::Agent { agent, .. } => out.extend_from_slice(agent.as_bytes()),
            PrincipalId::Relayed { via, .. } => out.extend_from_slice(via.as_bytes()),
            _ => {}
        }
        out
    }
}

impl fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalId::Agent { agent, node } => write!(f, "agent:{agent}@{node}"),
            PrincipalId::Relayed { caller, via } => write!(f, "relayed:{caller}@{via}"),
            other => write!(f, "{}:{}", other.kind().name(), other.fingerprint()),
        }
    }
}

impl fmt::Debug for PrincipalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalId::Agent { agent, node } => write!(f, "agent:{agent}@{}", node.short()),
            PrincipalId::Relayed { caller, via } => {
                write!(f, "relayed:{}@{}", caller.short(), via.short())
            }
            other => write!(f, "{}:{}", other.kind().name(), other.fingerprint().short()),
        }
    }
}

impl FromStr for PrincipalId {
    type Err = IdentityParseError;

    fn from_str(s: &str) -> Result<PrincipalId, IdentityParseError> {
        let err = || IdentityParseError::Principal(s.chars().take(80).collect());
        let (kind, rest) = s.split_once(':').ok_or_else(err)?;
        Ok(match kind {
            "peer" => PrincipalId::Peer(rest.parse()?),
            "operator" => PrincipalId::Operator(rest.parse()?),
            "node" => PrincipalId::Node(rest.parse()?),
            "agent" => {
                let (agent, node) = rest.split_once('@').ok_or_else(err)?;
                PrincipalId::Agent {
                    agent: agent.parse().map_err(|_| err())?,
                    node: node.parse()?,
                }
            }
            "relayed" => {
                let (caller, via) = rest.split_once('@').ok_or_else(err)?;
                PrincipalId::Relayed {
                    caller: caller.parse()?,
                    via: via.parse()?,
                }
            }
            _ => return Err(err()),
        })
    }
}

impl Serialize for PrincipalId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PrincipalId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PrincipalId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A session: the unit that policy budgets, tokens, audit and replay group
/// a principal's Calls by. 1 to 64 characters of `A-Z a-z 0-9 . _ : -`.
///
/// A Call names one in its body (`"session": "…"`); without one, the node
/// starts a new session and the Response names it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// The longest session id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// A session id from 16 random bytes, as `s-` and 32 hex digits.
    /// Randomness is an input: the caller draws the bytes.
    pub fn from_random(bytes: [u8; 16]) -> SessionId {
        let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
        let mut s = String::with_capacity(34);
        s.push_str("s-");
        for b in bytes {
            s.push(digit(b >> 4));
            s.push(digit(b & 0x0f));
        }
        SessionId(s)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SessionId {
    type Err = IdentityParseError;

    fn from_str(s: &str) -> Result<SessionId, IdentityParseError> {
        let ok = !s.is_empty()
            && s.len() <= SessionId::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(SessionId(s.to_owned()))
        } else {
            Err(IdentityParseError::Session {
                got: s.chars().take(80).collect(),
            })
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SessionId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_round_trip_as_text_and_json() {
        let fp = Fingerprint([0xab; 32]);
        let agent = AgentId::from_bytes([7; 16]);
        for p in [
            PrincipalId::Peer(fp),
            PrincipalId::Operator(fp),
            PrincipalId::Node(fp),
            PrincipalId::Agent { agent, node: fp },
            PrincipalId::Relayed {
                caller: fp,
                via: Fingerprint([1; 32]),
            },
        ] {
            let text = p.to_string();
            assert_eq!(text.parse::<PrincipalId>().unwrap(), p, "{text}");
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<PrincipalId>(&json).unwrap(), p);
        }
        assert!("peer:abc".parse::<PrincipalId>().is_err());
        assert!("root:".parse::<PrincipalId>().is_err());
        assert!(format!("agent:{agent}").parse::<PrincipalId>().is_err());
    }

    #[test]
    fn canonical_bytes_differ_by_kind() {
        let fp = Fingerprint([1; 32]);
        let a = PrincipalId::Peer(fp).canonical_bytes();
        let b = PrincipalId::Operator(fp).canonical_bytes();
        assert_ne!(a, b);
        assert_eq!(a.len(), 33);
        let agent = PrincipalId::Agent {
            agent: AgentId::from_bytes([2; 16]),
            node: fp,
        };
        assert_eq!(agent.canonical_bytes().len(), 49);
    }

    #[test]
    fn session_ids_are_checked() {
        assert!("abc-1.2_3:x".parse::<SessionId>().is_ok());
        assert!("".parse::<SessionId>().is_err());
        assert!("a b".parse::<SessionId>().is_err());
        assert!("\u{1b}[2J".parse::<SessionId>().is_err());
        assert!("x".repeat(65).parse::<SessionId>().is_err());
        assert!("x".repeat(64).parse::<SessionId>().is_ok());
        let s = SessionId::from_random([0xff; 16]);
        assert_eq!(s.as_str().len(), 34);
        assert_eq!(s.as_str().parse::<SessionId>().unwrap(), s);
    }
}
