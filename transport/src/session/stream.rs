//! Per stream: what the first frame asks for, and what follows it.

use mxp_protocol::{
    Ack, AgentId, Call, DecodeError, ErrorCode, Flags, Frame, MessageType, StreamChunk,
    StreamClose, StreamOpen, TypedPayload,
};

use super::Refusal;
use crate::Limits;

/// What the first frame of a bidirectional stream asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// A Call to `target` (routed to the node agent if it is not here),
    /// answered within `deadline`.
    Call {
        target: AgentId,
        deadline: std::time::Duration,
    },
    /// A mesh frame for the node agent, answered within the default deadline.
    Mesh { deadline: std::time::Duration },
    /// The start of an MXP stream.
    Stream(MxpStream, AgentId),
    /// An Event on a bidirectional stream; answered with an Ack when it
    /// carries REQUIRES_ACK.
    Event { ack: bool },
    /// Answered with this Error (naming the frame's message id).
    Refuse(Refusal),
}

/// The class of a Call or mesh request that uses the reserved message id 0.
pub(crate) const RESERVED_MESSAGE_ID: &str = "reserved_message_id";
/// The class of a chunk out of sequence inside an MXP stream.
pub(crate) const OUT_OF_SEQUENCE: &str = "out_of_sequence";

fn reserved_id(frame: &Frame) -> Option<Refusal> {
    (frame.message_id() == 0).then(|| Refusal {
        code: ErrorCode::INVALID_PAYLOAD,
        class: Some(RESERVED_MESSAGE_ID),
        message: format!(
            "{} with message id 0: 0 is reserved for \"none\", so no answer could name it",
            frame.message_type()
        ),
        malformed: true,
    })
}

/// Dispatches the first frame of a bidirectional stream by its type.
pub(crate) fn first_bidi(frame: &Frame, limits: &Limits) -> Request {
    match frame.message_type() {
        MessageType::Call => {
            if let Some(r) = reserved_id(frame) {
                return Request::Refuse(r);
            }
            match Call::peek_target(frame.payload_slice()) {
                Ok(target) => {
                    let secs = Call::peek_timeout(frame.payload_slice()).unwrap_or(0);
                    Request::Call {
                        target,
                        deadline: limits.call_deadline(secs),
                    }
                }
                Err(e) => Request::Refuse(Refusal::decode(&e)),
            }
        }
        MessageType::AgentRegister | MessageType::AgentDiscover | MessageType::AgentHeartbeat => {
            match reserved_id(frame) {
                Some(r) => Request::Refuse(r),
                None => Request::Mesh {
                    deadline: limits.default_call_timeout,
                },
            }
        }
        MessageType::StreamOpen => match StreamOpen::from_frame(frame) {
            Ok(open) => Request::Stream(MxpStream::new(open.stream_id), open.target),
            Err(e) => Request::Refuse(Refusal::decode(&e)),
        },
        MessageType::Event => Request::Event {
            ack: frame.flags().contains(Flags::REQUIRES_ACK),
        },
        other => Request::Refuse(Refusal::plain(
            ErrorCode::UNSUPPORTED,
            format!("{other} is not served on a bidirectional stream by this node"),
        )),
    }
}

/// The first frame of a unidirectional stream: only Events are served.
pub(crate) fn first_uni(frame: &Frame) -> bool {
    frame.message_type() == MessageType::Event
}

/// Bytes after the one frame a Call, mesh or Event stream carries.
pub(crate) fn trailing(frame: &Frame, extra: usize) -> Refusal {
    trailing_len(frame.wire_len(), extra)
}

/// Bytes after a `frame_len`-byte frame whose frame was handed on already.
pub(crate) fn trailing_len(frame_len: usize, extra: usize) -> Refusal {
    Refusal::decode(&DecodeError::TrailingBytes {
        frame_len: frame_len as u64,
        extra: extra as u64,
    })
}

/// The Ack for a frame sent with REQUIRES_ACK, sent as message `message_id`
/// with the acknowledged frame's trace id.
pub(crate) fn ack(frame: &Frame, message_id: u64) -> Option<Frame> {
    Ack {
        acked: frame.message_id(),
    }
    .to_frame(message_id, frame.trace_id(), Flags::FINAL)
    .ok()
}

/// What to do with a frame inside an MXP stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Deliver it to the agent; `last` for the StreamClose.
    Deliver { last: bool },
    /// Answer this Error and end the stream.
    Refuse(Refusal),
}

/// The order of frames inside one MXP stream: StreamChunk with sequence 0,
/// 1, 2, … naming the stream StreamOpen opened, then one StreamClose.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MxpStream {
    stream_id: mxp_protocol::StreamId,
    next_seq: u64,
    closed: bool,
}

impl MxpStream {
    pub(crate) fn new(stream_id: mxp_protocol::StreamId) -> MxpStream {
        MxpStream {
            stream_id,
            next_seq: 0,
            closed: false,
        }
    }

    /// Checks the next frame of the stream.
    pub(crate) fn next(&mut self, frame: &Frame) -> Step {
        if self.closed {
            return Step::Refuse(trailing(frame, frame.wire_len()));
        }
        let (id, seq, last) = match frame.message_type() {
            MessageType::StreamChunk => match StreamChunk::from_frame(frame) {
                Ok(c) => (c.stream_id, Some(c.seq), false),
                Err(e) => return Step::Refuse(Refusal::decode(&e)),
            },
            MessageType::StreamClose => match StreamClose::from_frame(frame) {
                Ok(c) => (c.stream_id, None, true),
                Err(e) => return Step::Refuse(Refusal::decode(&e)),
            },
            other => {
                return Step::Refuse(Refusal {
                    code: ErrorCode::INVALID_PAYLOAD,
                    class: Some("wrong_message_type"),
                    message: format!(
                        "{other} inside an MXP stream; expected StreamChunk or StreamClose"
                    ),
                    malformed: false,
                });
            }
        };
        if id != self.stream_id {
            return Step::Refuse(Refusal {
                code: ErrorCode::INVALID_PAYLOAD,
                class: Some("invalid_value"),
                message: format!(
                    "frame names stream {id}, this QUIC stream carries {}",
                    self.stream_id
                ),
                malformed: false,
            });
        }
        if let Some(seq) = seq {
            if seq != self.next_seq {
                return Step::Refuse(Refusal {
                    code: ErrorCode::INVALID_PAYLOAD,
                    class: Some(OUT_OF_SEQUENCE),
                    message: format!(
                        "chunk {seq} out of sequence: stream {} expected chunk {}",
                        self.stream_id, self.next_seq
                    ),
                    malformed: false,
                });
            }
            self.next_seq = self.next_seq.saturating_add(1);
        }
        self.closed = last;
        Step::Deliver { last }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxp_protocol::{AgentRegister, CallBody, EventBody, FrameHeader, StreamId};
    use std::time::Duration;

    const A: AgentId = AgentId::from_bytes([7; 16]);

    fn call(id: u64, timeout: u32) -> Frame {
        Call::json(A, timeout, &CallBody::new("echo", serde_json::Value::Null))
            .unwrap()
            .to_frame(id, 3, Flags::EMPTY)
            .unwrap()
    }

    #[test]
    fn calls_are_routed_with_their_clamped_deadline() {
        let l = Limits::default();
        assert_eq!(
            first_bidi(&call(1, 5), &l),
            Request::Call {
                target: A,
                deadline: Duration::from_secs(5)
            }
        );
        assert_eq!(
            first_bidi(&call(1, 0), &l),
            Request::Call {
                target: A,
                deadline: l.default_call_timeout
            }
        );
    }

    #[test]
    fn message_id_zero_is_refused_as_reserved() {
        let Request::Refuse(r) = first_bidi(&call(0, 5), &Limits::default()) else {
            panic!("a Call with message id 0 was accepted");
        };
        assert_eq!(
            (r.code, r.class),
            (ErrorCode::INVALID_PAYLOAD, Some(RESERVED_MESSAGE_ID))
        );
        let reg = AgentRegister {
            agent_id: A,
            name: "a".into(),
            capabilities: vec![],
            endpoint: "0.0.0.0:0".parse().unwrap(),
        }
        .to_frame(0, 0, Flags::EMPTY)
        .unwrap();
        assert!(matches!(
            first_bidi(&reg, &Limits::default()),
            Request::Refuse(Refusal {
                class: Some(RESERVED_MESSAGE_ID),
                ..
            })
        ));
        // An Event is never answered by id, so 0 is fine there.
        let ev = EventBody {
            target: None,
            topic: "t".into(),
            data: serde_json::Value::Null,
        }
        .to_frame(0, 0, Flags::EMPTY)
        .unwrap();
        assert_eq!(
            first_bidi(&ev, &Limits::default()),
            Request::Event { ack: false }
        );
    }

    #[test]
    fn a_short_call_prefix_is_invalid_payload_and_counted() {
        let f = FrameHeader::new(MessageType::Call)
            .with_message_id(4)
            .encode(&[1; 10])
            .unwrap();
        let Request::Refuse(r) = first_bidi(&f, &Limits::default()) else {
            panic!()
        };
        assert_eq!(
            (r.code, r.class, r.malformed),
            (ErrorCode::INVALID_PAYLOAD, Some("truncated"), true)
        );
    }

    #[test]
    fn other_types_are_unsupported_and_not_counted() {
        for t in [
            MessageType::Response,
            MessageType::Ack,
            MessageType::Error,
            MessageType::StreamChunk,
        ] {
            let f = FrameHeader::new(t).with_message_id(1).encode(b"").unwrap();
            let Request::Refuse(r) = first_bidi(&f, &Limits::default()) else {
                panic!("{t}")
            };
            assert_eq!(
                (r.code, r.malformed),
                (ErrorCode::UNSUPPORTED, false),
                "{t}"
            );
        }
        let ev = FrameHeader::new(MessageType::Event).encode(b"{}").unwrap();
        assert!(first_uni(&ev));
        assert!(!first_uni(&call(1, 1)));
    }

    #[test]
    fn events_with_requires_ack_are_acked_by_message_id() {
        let ev = EventBody {
            target: None,
            topic: "t".into(),
            data: serde_json::Value::Null,
        }
        .to_frame(42, 9, Flags::REQUIRES_ACK)
        .unwrap();
        assert_eq!(
            first_bidi(&ev, &Limits::default()),
            Request::Event { ack: true }
        );
        let a = ack(&ev, 100).unwrap();
        assert_eq!(
            (a.message_type(), a.message_id(), a.trace_id()),
            (MessageType::Ack, 100, 9)
        );
        assert_eq!(Ack::from_frame(&a).unwrap().acked, 42);
    }

    #[test]
    fn trailing_bytes_are_malformed_frame_trailing_bytes() {
        let r = trailing(&call(1, 1), 5);
        assert_eq!(
            (r.code, r.class, r.malformed),
            (ErrorCode::MALFORMED_FRAME, Some("trailing_bytes"), true)
        );
    }

    fn chunk(id: StreamId, seq: u64) -> Frame {
        StreamChunk {
            stream_id: id,
            seq,
            data: bytes::Bytes::from_static(b"x"),
        }
        .to_frame(1, 1, Flags::EMPTY)
        .unwrap()
    }

    fn close(id: StreamId) -> Frame {
        StreamClose {
            stream_id: id,
            body: bytes::Bytes::new(),
        }
        .to_frame(1, 1, Flags::EMPTY)
        .unwrap()
    }

    #[test]
    fn mxp_streams_take_chunks_in_sequence_then_one_close() {
        let id = StreamId::from_bytes([1; 16]);
        let mut s = MxpStream::new(id);
        assert_eq!(s.next(&chunk(id, 0)), Step::Deliver { last: false });
        assert_eq!(s.next(&chunk(id, 1)), Step::Deliver { last: false });
        assert!(matches!(
            s.next(&chunk(id, 3)),
            Step::Refuse(Refusal {
                class: Some(OUT_OF_SEQUENCE),
                ..
            })
        ));
        let mut s = MxpStream::new(id);
        assert!(matches!(
            s.next(&chunk(StreamId::from_bytes([2; 16]), 0)),
            Step::Refuse(Refusal {
                code: ErrorCode::INVALID_PAYLOAD,
                ..
            })
        ));
        assert!(matches!(
            s.next(&call(5, 1)),
            Step::Refuse(Refusal {
                class: Some("wrong_message_type"),
                ..
            })
        ));
        let mut s = MxpStream::new(id);
        assert_eq!(s.next(&close(id)), Step::Deliver { last: true });
        assert!(matches!(
            s.next(&chunk(id, 0)),
            Step::Refuse(Refusal {
                class: Some("trailing_bytes"),
                ..
            })
        ));
    }
}
