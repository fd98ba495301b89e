//! The MXP session core: the rules a node applies to what a peer sends, as
//! pure, synchronous functions and small state machines. Frames, counts and
//! `now` go in; decisions come out. No sockets, no tasks, no clocks: the
//! async code in `server.rs` only reads, writes and resets QUIC streams as
//! these decisions say, the way quinn drives quinn-proto.
//!
//! * [`stream`]: what the first frame of a stream asks for (dispatch by
//!   type, reserved message id, the Call prefix), the order of frames inside
//!   an MXP stream (stream id, chunk sequence), trailing bytes, Acks;
//! * [`conn`]: per connection, malformed-frame counting up to the threshold
//!   and the close; per node, admission of connections (global, per source
//!   IP before the handshake, per peer identity after it) and of frames (the
//!   per-identity token bucket);
//! * [`budget`]: the bytes held for request frames being read, per
//!   connection and per node, reserved from the header's declared length
//!   before the payload is read.

pub(crate) mod budget;
pub(crate) mod conn;
pub(crate) mod stream;

use mxp_protocol::{DecodeError, ErrorCode, ErrorPayload, Flags, Frame, TypedPayload};

/// A refusal the node answers with an Error frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The Error's code.
    pub(crate) code: ErrorCode,
    /// The decode class (codes 100 and 101).
    pub(crate) class: Option<&'static str>,
    /// For a person.
    pub(crate) message: String,
    /// Whether it counts toward the connection's malformed threshold.
    pub(crate) malformed: bool,
}

impl Refusal {
    /// A refusal for bytes that failed to decode: `malformed_frame` or
    /// `invalid_payload` with the decode class; counted as malformed.
    pub(crate) fn decode(err: &DecodeError) -> Refusal {
        let code = ErrorPayload::from_decode_error(0, err)
            .map(|e| e.code)
            .unwrap_or(ErrorCode::MALFORMED_FRAME);
        Refusal {
            code,
            class: Some(err.class()),
            message: err.to_string(),
            malformed: true,
        }
    }

    /// A refusal that is not the peer's fault in the bytes (not counted).
    pub(crate) fn plain(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            class: None,
            message: message.into(),
            malformed: false,
        }
    }

    /// The Error frame answering message `in_reply_to` of trace `trace_id`,
    /// sent with message id `message_id`.
    pub(crate) fn to_frame(
        &self,
        in_reply_to: u64,
        trace_id: u64,
        message_id: u64,
    ) -> Option<Frame> {
        let mut body = mxp_protocol::ErrorBody::new(self.code, self.message.clone());
        body.class = self.class.map(str::to_owned);
        ErrorPayload::with_body(in_reply_to, self.code, &body)
            .and_then(|e| e.to_frame(message_id, trace_id, Flags::FINAL))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_refusal_carries_code_and_class() {
        let r = Refusal::decode(&DecodeError::InvalidMagic { found: 1 });
        assert_eq!(
            (r.code, r.class, r.malformed),
            (ErrorCode::MALFORMED_FRAME, Some("invalid_magic"), true)
        );
        let r = Refusal::decode(&DecodeError::InvalidUtf8 { field: "method" });
        assert_eq!(
            (r.code, r.class),
            (ErrorCode::INVALID_PAYLOAD, Some("invalid_utf8"))
        );
        let f = r.to_frame(7, 9, 11).unwrap();
        assert_eq!((f.message_id(), f.trace_id()), (11, 9));
        let e = ErrorPayload::from_frame(&f).unwrap();
        assert_eq!(e.in_reply_to, 7);
        assert_eq!(
            e.parse_body().unwrap().class.as_deref(),
            Some("invalid_utf8")
        );
        assert!(!Refusal::plain(ErrorCode::OVERLOADED, "x").malformed);
    }
}
