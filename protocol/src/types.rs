//! Message types and header flags.

use std::fmt;
use std::str::FromStr;

use crate::DecodeError;

/// The message type byte at header offset 4.
///
/// Every MXP v1 type is listed; any other byte (including the extension range
/// `0x80..=0xEF`, which no extension defines yet) is rejected with
/// [`DecodeError::InvalidMessageType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageType {
    /// `0x01`: announce an agent to the mesh (binary payload, see [`crate::AgentRegister`]).
    AgentRegister = 0x01,
    /// `0x02`: find agents by capability (JSON payload, see [`crate::DiscoverRequest`]).
    AgentDiscover = 0x02,
    /// `0x03`: keep-alive for registered agents (JSON payload, see [`crate::Heartbeat`]).
    AgentHeartbeat = 0x03,
    /// `0x10`: a request to an agent (binary prefix + JSON body, see [`crate::Call`]).
    Call = 0x10,
    /// `0x11`: the answer to a Call (binary prefix + JSON body, see [`crate::Response`]).
    Response = 0x11,
    /// `0x12`: fire-and-forget notification (JSON payload, see [`crate::EventBody`]).
    Event = 0x12,
    /// `0x20`: opens an ordered stream (binary payload, see [`crate::StreamOpen`]).
    StreamOpen = 0x20,
    /// `0x21`: one chunk of an open stream (binary prefix + data, see [`crate::StreamChunk`]).
    StreamChunk = 0x21,
    /// `0x22`: ends a stream (binary prefix + optional JSON, see [`crate::StreamClose`]).
    StreamClose = 0x22,
    /// `0xF0`: acknowledges a frame sent with `REQUIRES_ACK` (see [`crate::Ack`]).
    Ack = 0xF0,
    /// `0xF1`: a failure, possibly answering a frame (see [`crate::ErrorPayload`]).
    Error = 0xF1,
}

impl MessageType {
    /// Every message type, in wire order.
    pub const ALL: [MessageType; 11] = [
        MessageType::AgentRegister,
        MessageType::AgentDiscover,
        MessageType::AgentHeartbeat,
        MessageType::Call,
        MessageType::Response,
        MessageType::Event,
        MessageType::StreamOpen,
        MessageType::StreamChunk,
        MessageType::StreamClose,
        MessageType::Ack,
        MessageType::Error,
    ];

    /// Maps a header byte to a type, or `None` for a byte MXP v1 does not define.
    #[inline]
    pub const fn from_byte(byte: u8) -> Option<MessageType> {
        Some(match byte {
            0x01 => MessageType::AgentRegister,
            0x02 => MessageType::AgentDiscover,
            0x03 => MessageType::AgentHeartbeat,
            0x10 => MessageType::Call,
            0x11 => MessageType::Response,
            0x12 => MessageType::Event,
            0x20 => MessageType::StreamOpen,
            0x21 => MessageType::StreamChunk,
            0x22 => MessageType::StreamClose,
            0xF0 => MessageType::Ack,
            0xF1 => MessageType::Error,
            _ => return None,
        })
    }

    /// The header byte of this type.
    #[inline]
    pub const fn as_byte(self) -> u8 {
        self as u8
    }

    /// The type's name as MXP writes it, e.g. `"AgentRegister"`, `"Call"`.
    pub const fn name(self) -> &'static str {
        match self {
            MessageType::AgentRegister => "AgentRegister",
            MessageType::AgentDiscover => "AgentDiscover",
            MessageType::AgentHeartbeat => "AgentHeartbeat",
            MessageType::Call => "Call",
            MessageType::Response => "Response",
            MessageType::Event => "Event",
            MessageType::StreamOpen => "StreamOpen",
            MessageType::StreamChunk => "StreamChunk",
            MessageType::StreamClose => "StreamClose",
            MessageType::Ack => "Ack",
            MessageType::Error => "Error",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<u8> for MessageType {
    type Error = DecodeError;

    fn try_from(byte: u8) -> Result<Self, DecodeError> {
        MessageType::from_byte(byte).ok_or(DecodeError::InvalidMessageType { byte })
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> u8 {
        t.as_byte()
    }
}

/// Error from parsing a [`MessageType`] or [`Flags`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseNameError(String);

impl FromStr for MessageType {
    type Err = ParseNameError;

    /// Accepts a type name in any case, with or without `_`/`-` (`call`, `Call`,
    /// `agent_register`, `stream-open`), or its byte as decimal (`16`) or hex (`0x10`).
    ///
    /// ```
    /// use mxp_protocol::MessageType;
    /// assert_eq!("call".parse(), Ok(MessageType::Call));
    /// assert_eq!("0x21".parse(), Ok(MessageType::StreamChunk));
    /// assert_eq!("241".parse(), Ok(MessageType::Error));
    /// assert!("0x13".parse::<MessageType>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, ParseNameError> {
        let s = s.trim();
        if let Some(byte) = parse_u8(s) {
            return MessageType::from_byte(byte).ok_or_else(|| {
                ParseNameError(format!(
                    "message type byte {byte:#04x} is not defined by MXP v1 (known: {})",
                    known_types()
                ))
            });
        }
        let folded: String = s
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        MessageType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(&folded))
            .ok_or_else(|| {
                ParseNameError(format!(
                    "unknown message type {s:?} (known: {})",
                    known_types()
                ))
            })
    }
}

fn known_types() -> String {
    MessageType::ALL
        .iter()
        .map(|t| format!("{} ({:#04x})", t.name(), t.as_byte()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `"16"` or `"0x10"` as a byte.
fn parse_u8(s: &str) -> Option<u8> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u8::from_str_radix(hex, 16).ok()
    } else if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        s.parse().ok()
    } else {
        None
    }
}

/// The flag byte at header offset 5. Bits 4-7 are reserved and must be zero,
/// so a `Flags` value never has them set.
///
/// ```
/// use mxp_protocol::Flags;
/// let f = Flags::REQUIRES_ACK | Flags::FINAL;
/// assert_eq!(f.bits(), 0b1100);
/// assert!(f.contains(Flags::FINAL));
/// assert_eq!(Flags::from_bits(0x10), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag set.
    pub const EMPTY: Flags = Flags(0);
    /// Bit 0: the payload is compressed (zstd). The codec carries the bit; it does not compress.
    pub const COMPRESSED: Flags = Flags(0b0001);
    /// Bit 1: the payload is end-to-end encrypted. The codec carries the bit; it does not encrypt.
    pub const ENCRYPTED: Flags = Flags(0b0010);
    /// Bit 2: the sender wants an [`MessageType::Ack`].
    pub const REQUIRES_ACK: Flags = Flags(0b0100);
    /// Bit 3: the last message in a sequence.
    pub const FINAL: Flags = Flags(0b1000);
    /// All defined bits.
    pub const ALL: Flags = Flags(0b1111);

    /// The flags of a header byte, or `None` if a reserved bit (4-7) is set.
    #[inline]
    pub const fn from_bits(bits: u8) -> Option<Flags> {
        if bits & !Flags::ALL.0 == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }

    /// The header byte.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `self` with the bits of `other` set.
    #[inline]
    #[must_use]
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.with(rhs)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        *self = self.with(rhs);
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#06b}", self.0)?;
        for (flag, name) in [
            (Flags::COMPRESSED, "COMPRESSED"),
            (Flags::ENCRYPTED, "ENCRYPTED"),
            (Flags::REQUIRES_ACK, "REQUIRES_ACK"),
            (Flags::FINAL, "FINAL"),
        ] {
            if self.contains(flag) {
                write!(f, " {name}")?;
            }
        }
        f.write_str(")")
    }
}

impl FromStr for Flags {
    type Err = ParseNameError;

    /// Accepts a byte (`12`, `0x0c`) or names joined by `|` or `,`
    /// (`requires_ack|final`), case-insensitive.
    ///
    /// ```
    /// use mxp_protocol::Flags;
    /// assert_eq!("4".parse(), Ok(Flags::REQUIRES_ACK));
    /// assert_eq!("final|compressed".parse(), Ok(Flags::FINAL | Flags::COMPRESSED));
    /// assert!("0x10".parse::<Flags>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, ParseNameError> {
        let s = s.trim();
        if let Some(bits) = parse_u8(s) {
            return Flags::from_bits(bits).ok_or_else(|| {
                ParseNameError(format!(
                    "flags {bits:#04x} set reserved bits 4-7 (allowed: 0x00-0x0f)"
                ))
            });
        }
        let mut flags = Flags::EMPTY;
        for name in s.split(['|', ',']).map(str::trim).filter(|n| !n.is_empty()) {
            let folded = name.replace('-', "_").to_ascii_uppercase();
            flags |= match folded.as_str() {
                "COMPRESSED" => Flags::COMPRESSED,
                "ENCRYPTED" => Flags::ENCRYPTED,
                "REQUIRES_ACK" | "ACK" => Flags::REQUIRES_ACK,
                "FINAL" => Flags::FINAL,
                _ => {
                    return Err(ParseNameError(format!(
                        "unknown flag {name:?} (known: compressed, encrypted, requires_ack, final, or a number 0-15)"
                    )));
                }
            };
        }
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_maps_to_at_most_one_type_and_back() {
        let mut defined = 0;
        for b in 0..=u8::MAX {
            if let Some(t) = MessageType::from_byte(b) {
                assert_eq!(t.as_byte(), b);
                assert_eq!(t.name().parse::<MessageType>(), Ok(t));
                defined += 1;
            }
        }
        assert_eq!(defined, MessageType::ALL.len());
    }

    #[test]
    fn type_names_parse_in_many_spellings() {
        assert_eq!("agent_register".parse(), Ok(MessageType::AgentRegister));
        assert_eq!("STREAM-CLOSE".parse(), Ok(MessageType::StreamClose));
        assert_eq!("0xf0".parse(), Ok(MessageType::Ack));
        let err = "0x80".parse::<MessageType>().unwrap_err().to_string();
        assert!(err.contains("0x80"), "{err}");
        assert!("".parse::<MessageType>().is_err());
        assert!("256".parse::<MessageType>().is_err());
    }

    #[test]
    fn flags_reject_reserved_bits() {
        for b in 0..=u8::MAX {
            assert_eq!(Flags::from_bits(b).is_some(), b < 16, "{b}");
        }
        assert!("bogus".parse::<Flags>().is_err());
        assert_eq!("".parse::<Flags>(), Ok(Flags::EMPTY));
        assert_eq!(
            format!("{:?}", Flags::ALL),
            "Flags(0b1111 COMPRESSED ENCRYPTED REQUIRES_ACK FINAL)"
        );
    }
}
