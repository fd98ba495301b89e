//! Errors: [`DecodeError`] for bytes that came from outside, [`EncodeError`] for
//! values that cannot be written.

/// Why a byte sequence is not a valid MXP frame or payload.
///
/// Every variant names the exact violation; [`DecodeError::class`] maps it to
/// the stable class string of the conformance vectors and of `Error` frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header (or the header's declared length) requires.
    #[error("truncated frame: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the frame needs.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The first four bytes are not `31 50 58 4D` (`0x4D585031` little-endian).
    #[error("invalid magic {found:#010x} (bytes {:02x?}); an MXP v1 frame starts with 31 50 58 4d", found.to_le_bytes())]
    InvalidMagic {
        /// The magic read little-endian.
        found: u32,
    },
    /// The type byte is not one MXP v1 defines.
    #[error(
        "invalid message type {byte:#04x}: MXP v1 defines 0x01-0x03, 0x10-0x12, 0x20-0x22, 0xf0, 0xf1"
    )]
    InvalidMessageType {
        /// The type byte.
        byte: u8,
    },
    /// A reserved flag bit (4-7) is set.
    #[error("invalid flags {flags:#04x}: reserved bits 4-7 must be zero")]
    InvalidFlags {
        /// The flag byte.
        flags: u8,
    },
    /// The two reserved header bytes are not zero.
    #[error("reserved header bytes are {value:#06x}, must be zero")]
    ReservedNonZero {
        /// The reserved field, read little-endian.
        value: u16,
    },
    /// The declared payload length is above the limit.
    #[error("declared payload length {declared} exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The header's payload length.
        declared: u64,
        /// The limit in force (at most 16 MiB).
        limit: u64,
    },
    /// The XXH3-64 checksum does not match the header and payload.
    #[error(
        "checksum mismatch: frame carries {carried:#018x}, header and payload hash to {computed:#018x}"
    )]
    ChecksumMismatch {
        /// The checksum written in the frame.
        carried: u64,
        /// XXH3-64 of the frame's header and payload.
        computed: u64,
    },
    /// Bytes follow a complete frame where exactly one frame was expected.
    #[error("{extra} trailing bytes after a complete {frame_len}-byte frame")]
    TrailingBytes {
        /// Length of the frame.
        frame_len: u64,
        /// Bytes after it.
        extra: u64,
    },
    /// A payload is shorter than its layout requires.
    #[error("{what} payload truncated: need {needed} bytes, have {available}")]
    PayloadTruncated {
        /// The payload or field being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A fixed-layout payload has bytes after its last field.
    #[error("{what} payload has {extra} trailing bytes")]
    PayloadTrailingBytes {
        /// The payload.
        what: &'static str,
        /// Bytes after the last field.
        extra: usize,
    },
    /// A text field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A length or count is above its documented limit.
    #[error("{field} is {len}, above the limit of {limit}")]
    LimitExceeded {
        /// The field.
        field: &'static str,
        /// Its length or count.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A field holds a value its schema does not allow.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A JSON body does not match its schema.
    #[error("{what} body is not valid JSON for its schema: {detail}")]
    InvalidJson {
        /// The body.
        what: &'static str,
        /// serde_json's description, with line and column.
        detail: String,
    },
    /// A typed decoder was given a frame of another type.
    #[error("expected a {expected} frame, got {found}")]
    WrongMessageType {
        /// The type the decoder reads.
        expected: crate::MessageType,
        /// The frame's type.
        found: crate::MessageType,
    },
}

impl DecodeError {
    /// The stable class of this error, as the conformance vectors and `Error`
    /// frames name it: `truncated`, `invalid_magic`, `invalid_message_type`,
    /// `invalid_flags`, `reserved_nonzero`, `payload_too_large`,
    /// `checksum_mismatch`, `trailing_bytes`, and for payloads `invalid_utf8`,
    /// `limit_exceeded`, `invalid_value`, `invalid_json`, `wrong_message_type`.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use mxp_protocol::Frame;
    /// let err = Frame::parse(Bytes::from_static(b"MXP1")).unwrap_err();
    /// assert_eq!(err.class(), "truncated");
    /// ```
    pub const fn class(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } | DecodeError::PayloadTruncated { .. } => "truncated",
            DecodeError::InvalidMagic { .. } => "invalid_magic",
            DecodeError::InvalidMessageType { .. } => "invalid_message_type",
            DecodeError::InvalidFlags { .. } => "invalid_flags",
            DecodeError::ReservedNonZero { .. } => "reserved_nonzero",
            DecodeError::PayloadTooLarge { .. } => "payload_too_large",
            DecodeError::ChecksumMismatch { .. } => "checksum_mismatch",
            DecodeError::TrailingBytes { .. } | DecodeError::PayloadTrailingBytes { .. } => {
                "trailing_bytes"
            }
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::LimitExceeded { .. } => "limit_exceeded",
            DecodeError::InvalidValue { .. } => "invalid_value",
            DecodeError::InvalidJson { .. } => "invalid_json",
            DecodeError::WrongMessageType { .. } => "wrong_message_type",
        }
    }

    pub(crate) fn json(what: &'static str, err: &serde_json::Error) -> DecodeError {
        DecodeError::InvalidJson {
            what,
            detail: err.to_string(),
        }
    }
}

/// Why a frame or payload cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload is longer than MXP allows (16 MiB).
    #[error("payload of {len} bytes exceeds the MXP limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A field is longer (or a list has more items) than its layout allows.
    #[error("{field} is {len}, above the limit of {limit}")]
    LimitExceeded {
        /// The field.
        field: &'static str,
        /// Its length or count.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A field holds a value the layout cannot carry.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A JSON body could not be serialised.
    #[error("cannot serialise {what} body: {detail}")]
    Json {
        /// The body.
        what: &'static str,
        /// serde_json's description.
        detail: String,
    },
}
