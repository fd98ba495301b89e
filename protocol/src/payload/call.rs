//! Call, Response, Error, Ack (binary prefixes, JSON bodies) and Event (JSON).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{AgentId, TypedPayload, check_len, frame_of, from_json, to_json};
use crate::cursor::Reader;
use crate::{DecodeError, EncodeError, Fingerprint, Flags, Frame, MessageType, SessionId};

/// Bytes of the Call prefix: target agent id (16) and timeout (4).
pub const CALL_PREFIX_LEN: usize = 20;
/// Bytes of the Response prefix: the answered Call's message id.
pub const RESPONSE_PREFIX_LEN: usize = 8;
/// Bytes of the Error prefix: answered message id (8) and code (2).
pub const ERROR_PREFIX_LEN: usize = 10;
/// Longest Call method name, in bytes.
pub const MAX_METHOD_LEN: usize = 256;
/// Longest Event topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Call (`0x10`) payload: the MXP spec's fixed prefix, then a body.
///
/// ```text
/// offset 0   16 bytes  target agent id (UUID)
/// offset 16   4 bytes  timeout in seconds, u32 LE (0: the receiver's default)
/// offset 20   …        body: a JSON object, see CallBody
/// ```
///
/// Routing reads the target at a fixed offset ([`Call::peek_target`]) without
/// touching the body.
///
/// ```
/// use bytes::Bytes;
/// use mxp_protocol::{AgentId, Call, CallBody, Flags, TypedPayload};
/// let call = Call::json(AgentId::from_bytes([9; 16]), 5, &CallBody::new("echo", serde_json::json!({"x": 1})))?;
/// let frame = call.to_frame(42, 7, Flags::REQUIRES_ACK)?;
/// assert_eq!(Call::peek_target(frame.payload_slice())?, AgentId::from_bytes([9; 16]));
/// let back = Call::from_frame(&frame)?;
/// assert_eq!(back.timeout_secs, 5);
/// assert_eq!(back.parse_body()?.method, "echo");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The agent that should handle the Call.
    pub target: AgentId,
    /// Seconds the caller waits; 0 leaves the deadline to the receiver.
    pub timeout_secs: u32,
    /// The body, a slice of the frame (JSON; see [`CallBody`]).
    pub body: Bytes,
}

impl Call {
    /// A Call whose body is `body` serialised as JSON.
    ///
    /// # Errors
    /// [`EncodeError::Json`] if serialisation fails.
    pub fn json(target: AgentId, timeout_secs: u32, body: &CallBody) -> Result<Call, EncodeError> {
        Ok(Call {
            target,
            timeout_secs,
            body: Bytes::from(to_json("Call", body)?),
        })
    }

    /// The target agent id of a Call payload, read at its fixed offset.
    ///
    /// # Errors
    /// `truncated` if the payload is shorter than the 20-byte prefix.
    pub fn peek_target(payload: &[u8]) -> Result<AgentId, DecodeError> {
        let mut r = Reader::new(payload, "Call");
        let target = AgentId::from_bytes(r.array()?);
        r.u32_le()?;
        Ok(target)
    }

    /// The timeout (seconds) of a Call payload, read from its prefix without
    /// decoding the body.
    ///
    /// # Errors
    /// `truncated` if the payload is shorter than the prefix.
    pub fn peek_timeout(payload: &[u8]) -> Result<u32, DecodeError> {
        let mut r = Reader::new(payload, "Call");
        r.array::<16>()?;
        r.u32_le()
    }

    /// The same Call with `"caller": "<fingerprint>"` set as the body's last
    /// member (what a forwarding node sends): a `caller` the body already
    /// had is overridden, as the last of duplicate members wins when a node
    /// parses it. The body is not parsed; it must be a JSON object.
    ///
    /// # Errors
    /// `invalid_json` if the body is not an object.
    pub fn with_caller(&self, caller: &Fingerprint) -> Result<Call, DecodeError> {
        let not_object = || DecodeError::InvalidJson {
            what: "Call",
            detail: "the body must be a JSON object ({...})".into(),
        };
        let body = &self.body[..];
        let open = body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .filter(|&i| body.get(i) == Some(&b'{'))
            .ok_or_else(not_object)?;
        let close = body
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .filter(|&i| i > open && body.get(i) == Some(&b'}'))
            .ok_or_else(not_object)?;
        let empty = body
            .get(open + 1..close)
            .is_some_and(|inner| inner.iter().all(u8::is_ascii_whitespace));
        let member = format!("{}\"caller\":\"{caller}\"", if empty { "" } else { "," });
        let mut out = Vec::with_capacity(body.len() + member.len());
        out.extend_from_slice(body.get(..close).unwrap_or_default());
        out.extend_from_slice(member.as_bytes());
        out.extend_from_slice(body.get(close..).unwrap_or_default());
        Ok(Call {
            target: self.target,
            timeout_secs: self.timeout_secs,
            body: Bytes::from(out),
        })
    }

    /// The prefix bytes.
    pub fn prefix(&self) -> [u8; CALL_PREFIX_LEN] {
        let mut p = [0u8; CALL_PREFIX_LEN];
        let (id, timeout) = p.split_at_mut(16);
        id.copy_from_slice(self.target.as_bytes());
        timeout.copy_from_slice(&self.timeout_secs.to_le_bytes());
        p
    }

    /// Parses the body as a [`CallBody`] within `limits` (see
    /// [`super::JsonLimits`]), and says what the parse cost: what a node
    /// uses on bodies from peers. Other fields of the body are ignored, as
    /// [`Call::parse_body`] ignores them.
    ///
    /// # Errors
    /// As [`Call::parse_body`], and `limit_exceeded` when the body holds more
    /// values or deeper nesting than `limits` allow.
    pub fn parse_body_within(
        &self,
        limits: super::JsonLimits,
    ) -> Result<(CallBody, super::JsonCost), DecodeError> {
        let not_object = || DecodeError::InvalidJson {
            what: "Call",
            detail: "the body must be a JSON object ({...})".into(),
        };
        if self.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(not_object());
        }
        let (value, cost) = super::parse_json_bounded("Call", &self.body, limits)?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(not_object());
        };
        let schema = |detail: &str| DecodeError::InvalidJson {
            what: "Call",
            detail: detail.to_owned(),
        };
        let method = match map.remove("method") {
            Some(serde_json::Value::String(m)) => m,
            Some(_) => return Err(schema("`method` must be a string")),
            None => return Err(schema("missing field `method`")),
        };
        let params = map.remove("params").unwrap_or(serde_json::Value::Null);
        let session = match map.remove("session") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => {
                Some(s.parse::<SessionId>().map_err(|e| schema(&e.to_string()))?)
            }
            Some(_) => return Err(schema("`session` must be a string")),
        };
        let caller = match map.remove("caller") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(
                s.parse::<Fingerprint>()
                    .map_err(|e| schema(&e.to_string()))?,
            ),
            Some(_) => return Err(schema("`caller` must be a string")),
        };
        if method.is_empty() {
            return Err(DecodeError::InvalidValue {
                field: "method",
                reason: "must not be empty",
            });
        }
        check_len("method", method.len(), MAX_METHOD_LEN)?;
        Ok((
            CallBody {
                method,
                params,
                session,
                caller,
            },
            cost,
        ))
    }

    /// Parses the body as a [`CallBody`].
    ///
    /// # Errors
    /// `invalid_json` if it does not match the schema, `invalid_value` or
    /// `limit_exceeded` for an empty or over-long method.
    pub fn parse_body(&self) -> Result<CallBody, DecodeError> {
        let body: CallBody = from_json("Call", &self.body)?;
        if body.method.is_empty() {
            return Err(DecodeError::InvalidValue {
                field: "method",
                reason: "must not be empty",
            });
        }
        check_len("method", body.method.len(), MAX_METHOD_LEN)?;
        Ok(body)
    }
}

impl TypedPayload for Call {
    const MESSAGE_TYPE: MessageType = MessageType::Call;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "Call");
        let target = AgentId::from_bytes(r.array()?);
        let timeout_secs = r.u32_le()?;
        Ok(Call {
            target,
            timeout_secs,
            body: payload.slice(r.position()..),
        })
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        frame_of(
            Self::MESSAGE_TYPE,
            message_id,
            trace_id,
            flags,
            &[&self.prefix(), &self.body],
        )
    }
}

/// The JSON body of a Call.
///
/// ```json
/// {"method": "echo", "params": {"text": "hi"}, "session": "s-1"}
/// ```
///
/// `session` is optional: without it the node starts a new session and the
/// Response names it; with it, the Call joins that session, which must
/// belong to the same caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallBody {
    /// What the agent should do, 1 to 256 bytes.
    pub method: String,
    /// Arguments, any JSON value; `null` when absent.
    #[serde(default)]
    pub params: serde_json::Value,
    /// The session this Call belongs to; `None`: start a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    /// Set by a forwarding node: the fingerprint of the peer it forwards
    /// for. Honoured only from a trusted mesh peer (see docs/PROTOCOL.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Fingerprint>,
}

impl CallBody {
    /// A body calling `method` with `params`, in a new session.
    pub fn new(method: impl Into<String>, params: serde_json::Value) -> CallBody {
        CallBody {
            method: method.into(),
            params,
            session: None,
            caller: None,
        }
    }

    /// The same body, in `session`.
    #[must_use]
    pub fn in_session(mut self, session: SessionId) -> CallBody {
        self.session = Some(session);
        self
    }
}

/// Response (`0x11`) payload: the answered Call's message id, then a JSON body.
///
/// ```text
/// offset 0   8 bytes  in_reply_to: the Call's message id, u64 LE
/// offset 8   …        body: a JSON object, see ResponseBody
/// ```
///
/// The Response's header carries the Call's trace id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The message id of the Call this answers.
    pub in_reply_to: u64,
    /// The body, a slice of the frame (JSON; see [`ResponseBody`]).
    pub body: Bytes,
}

impl Response {
    /// A Response whose body is `{"result": result}`.
    ///
    /// # Errors
    /// [`EncodeError::Json`] if serialisation fails.
    pub fn json(in_reply_to: u64, result: serde_json::Value) -> Result<Response, EncodeError> {
        Response::with_body(
            in_reply_to,
            &ResponseBody {
                result,
                session: None,
            },
        )
    }

    /// A Response with this body (`{"result": …, "session": …}`).
    ///
    /// # Errors
    /// [`EncodeError::Json`] if serialisation fails.
    pub fn with_body(in_reply_to: u64, body: &ResponseBody) -> Result<Response, EncodeError> {
        Ok(Response {
            in_reply_to,
            body: Bytes::from(to_json("Response", body)?),
        })
    }

    /// Parses the body.
    ///
    /// # Errors
    /// `invalid_json` if it does not match the schema.
    pub fn parse_body(&self) -> Result<ResponseBody, DecodeError> {
        from_json("Response", &self.body)
    }
}

impl TypedPayload for Response {
    const MESSAGE_TYPE: MessageType = MessageType::Response;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "Response");
        let in_reply_to = r.u64_le()?;
        Ok(Response {
            in_reply_to,
            body: payload.slice(r.position()..),
        })
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        frame_of(
            Self::MESSAGE_TYPE,
            message_id,
            trace_id,
            flags,
            &[&self.in_reply_to.to_le_bytes(), &self.body],
        )
    }
}

/// The JSON body of a Response.
///
/// ```json
/// {"result": {"text": "hi"}, "session": "s-0f…"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseBody {
    /// What the Call produced, any JSON value.
    #[serde(default)]
    pub result: serde_json::Value,
    /// The session the Call ran in (an agent's answers name it; the node
    /// agent's control answers do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
}

/// The numeric code of an Error frame, readable at a fixed offset without
/// parsing JSON. Unknown codes are kept as they are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal, $retriable:literal;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($value);)*

            /// Every code this version defines.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code's stable name, e.g. `unknown_agent`; `unknown` for a code
            /// this version does not define.
            pub const fn name(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "unknown",
                }
            }

            /// Whether the same request may succeed if sent again later.
            pub const fn retriable(self) -> bool {
                match self.0 {
                    $($value => $retriable,)*
                    _ => false,
                }
            }
        }
    };
}

error_codes! {
    /// The frame could not be decoded; `class` in the body names the decode class.
    MALFORMED_FRAME = 100, "malformed_frame", false;
    /// The frame decoded but its payload does not match its schema.
    INVALID_PAYLOAD = 101, "invalid_payload", false;
    /// The receiver does not handle this message type.
    UNSUPPORTED = 102, "unsupported", false;
    /// No agent with the target id is known.
    UNKNOWN_AGENT = 200, "unknown_agent", false;
    /// The agent exists but is not accepting Calls now (e.g. suspended).
    AGENT_UNAVAILABLE = 201, "agent_unavailable", true;
    /// The agent is retiring or terminated and will not accept Calls again.
    AGENT_RETIRED = 202, "agent_retired", false;
    /// The node hosting the agent cannot be reached (connection refused,
    /// handshake failed, connection lost).
    UNREACHABLE = 203, "unreachable", true;
    /// A lifecycle transition that the agent's current state does not allow
    /// (e.g. resuming an agent that is not suspended).
    INVALID_TRANSITION = 204, "invalid_transition", false;
    /// The deadline passed before an answer.
    TIMEOUT = 300, "timeout", true;
    /// The caller gave up; the work was cancelled.
    CANCELLED = 301, "cancelled", false;
    /// Too much work in flight; try later.
    OVERLOADED = 400, "overloaded", true;
    /// The peer exceeded its rate limit; try later.
    RATE_LIMITED = 401, "rate_limited", true;
    /// The peer's identity is missing or not trusted.
    UNAUTHENTICATED = 500, "unauthenticated", false;
    /// Policy denied the action.
    DENIED = 501, "denied", false;
    /// The action waits for an operator's approval.
    APPROVAL_REQUIRED = 502, "approval_required", true;
    /// The receiver failed; nothing the sender did.
    INTERNAL = 900, "internal", true;
}

impl ErrorCode {
    /// The code that answers `err`: `invalid_payload` (101) when the frame was
    /// sound but its payload was not, `malformed_frame` (100) otherwise.
    pub fn for_decode_error(err: &DecodeError) -> ErrorCode {
        match err {
            DecodeError::PayloadTruncated { .. }
            | DecodeError::PayloadTrailingBytes { .. }
            | DecodeError::InvalidUtf8 { .. }
            | DecodeError::LimitExceeded { .. }
            | DecodeError::InvalidValue { .. }
            | DecodeError::InvalidJson { .. }
            | DecodeError::WrongMessageType { .. } => ErrorCode::INVALID_PAYLOAD,
            _ => ErrorCode::MALFORMED_FRAME,
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({} {})", self.0, self.name())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Error (`0xF1`) payload: what it answers and a code, then a JSON body.
///
/// ```text
/// offset 0   8 bytes  in_reply_to: the answered frame's message id, u64 LE (0: none)
/// offset 8   2 bytes  code, u16 LE (see ErrorCode)
/// offset 10  …        body: a JSON object, see ErrorBody
/// ```
///
/// ```
/// use mxp_protocol::{ErrorCode, ErrorPayload, Flags, TypedPayload};
/// let err = ErrorPayload::new(42, ErrorCode::UNKNOWN_AGENT, "no agent 1234 here")?;
/// let frame = err.to_frame(43, 7, Flags::EMPTY)?;
/// // Which Call failed, and why, without parsing JSON:
/// assert_eq!(&frame.payload_slice()[..10], &[42, 0, 0, 0, 0, 0, 0, 0, 200, 0]);
/// assert_eq!(ErrorPayload::from_frame(&frame)?.parse_body()?.message, "no agent 1234 here");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPayload {
    /// The message id of the frame this answers; 0 when it answers none.
    pub in_reply_to: u64,
    /// What went wrong.
    pub code: ErrorCode,
    /// The body, a slice of the frame (JSON; see [`ErrorBody`]).
    pub body: Bytes,
}

impl ErrorPayload {
    /// An Error with a message and the code's own retriability.
    ///
    /// # Errors
    /// [`EncodeError::Json`] if serialisation fails.
    pub fn new(
        in_reply_to: u64,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<ErrorPayload, EncodeError> {
        ErrorPayload::with_body(in_reply_to, code, &ErrorBody::new(code, message))
    }

    /// An Error with a full body.
    ///
    /// # Errors
    /// [`EncodeError::Json`] if serialisation fails.
    pub fn with_body(
        in_reply_to: u64,
        code: ErrorCode,
        body: &ErrorBody,
    ) -> Result<ErrorPayload, EncodeError> {
        Ok(ErrorPayload {
            in_reply_to,
            code,
            body: Bytes::from(to_json("Error", body)?),
        })
    }

    /// The Error answering a frame that failed to decode: code
    /// `malformed_frame` (or `invalid_payload` for payload classes) with the
    /// decode class in the body.
    ///
    /// # Errors
    /// [`EncodeError::Json`] if serialisation fails.
    pub fn from_decode_error(
        in_reply_to: u64,
        err: &DecodeError,
    ) -> Result<ErrorPayload, EncodeError> {
        let code = ErrorCode::for_decode_error(err);
        let mut body = ErrorBody::new(code, err.to_string());
        body.class = Some(err.class().to_owned());
        ErrorPayload::with_body(in_reply_to, code, &body)
    }

    /// Parses the body.
    ///
    /// # Errors
    /// `invalid_json` if it does not match the schema.
    pub fn parse_body(&self) -> Result<ErrorBody, DecodeError> {
        from_json("Error", &self.body)
    }
}

impl TypedPayload for ErrorPayload {
    const MESSAGE_TYPE: MessageType = MessageType::Error;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "Error");
        let in_reply_to = r.u64_le()?;
        let code = ErrorCode(r.u16_le()?);
        Ok(ErrorPayload {
            in_reply_to,
            code,
            body: payload.slice(r.position()..),
        })
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        frame_of(
            Self::MESSAGE_TYPE,
            message_id,
            trace_id,
            flags,
            &[
                &self.in_reply_to.to_le_bytes(),
                &self.code.0.to_le_bytes(),
                &self.body,
            ],
        )
    }
}

/// The JSON body of an Error.
///
/// ```json
/// {"message": "declared payload length 16777217 exceeds …", "retriable": false, "class": "payload_too_large"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub message: String,
    /// Whether the same request may succeed later.
    #[serde(default)]
    pub retriable: bool,
    /// For `malformed_frame` and `invalid_payload`: the decode class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Anything else the sender wants to say, e.g. a policy's reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// A body with `message` and the code's retriability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            message: message.into(),
            retriable: code.retriable(),
            class: None,
            details: None,
        }
    }
}

/// Ack (`0xF0`) payload: exactly the acknowledged message id, u64 LE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The message id of the frame sent with `REQUIRES_ACK`.
    pub acked: u64,
}

impl TypedPayload for Ack {
    const MESSAGE_TYPE: MessageType = MessageType::Ack;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload, "Ack");
        let acked = r.u64_le()?;
        r.finish()?;
        Ok(Ack { acked })
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        frame_of(
            Self::MESSAGE_TYPE,
            message_id,
            trace_id,
            flags,
            &[&self.acked.to_le_bytes()],
        )
    }
}

/// Event (`0x12`) payload: a JSON object.
///
/// ```json
/// {"topic": "audit.appended", "target": "67e55044-10b1-426f-9247-bb680e5fe0c8", "data": {"seq": 17}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    /// The agent the event is for; absent for events addressed to a node's
    /// subscribers rather than to one agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<AgentId>,
    /// What the event is about, 1 to 256 bytes, dot-separated by convention.
    pub topic: String,
    /// The event's content, any JSON value; `null` when absent.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl TypedPayload for EventBody {
    const MESSAGE_TYPE: MessageType = MessageType::Event;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let ev: EventBody = from_json("Event", payload)?;
        if ev.topic.is_empty() {
            return Err(DecodeError::InvalidValue {
                field: "topic",
                reason: "must not be empty",
            });
        }
        check_len("topic", ev.topic.len(), MAX_TOPIC_LEN)?;
        Ok(ev)
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        let body = to_json("Event", self)?;
        frame_of(Self::MESSAGE_TYPE, message_id, trace_id, flags, &[&body])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_caller_appends_a_member_that_wins_over_a_forged_one() {
        let fp = Fingerprint([0xcd; 32]);
        let target = AgentId::from_bytes([1; 16]);
        for body in [
            &br#"{"method":"echo"}"#[..],
            br#"  { "method" : "echo", "caller": "00" }  "#,
            br#"{"method":"echo","caller":"abababababababababababababababababababababababababababababababab"}"#,
        ] {
            let call = Call {
                target,
                timeout_secs: 3,
                body: Bytes::copy_from_slice(body),
            };
            let (parsed, _) = call
                .with_caller(&fp)
                .unwrap()
                .parse_body_within(crate::JsonLimits::default())
                .unwrap();
            assert_eq!(parsed.caller, Some(fp), "{}", String::from_utf8_lossy(body));
            assert_eq!(parsed.method, "echo");
        }
        let empty = Call {
            target,
            timeout_secs: 3,
            body: Bytes::from_static(b"{ }"),
        };
        assert_eq!(&empty.with_caller(&fp).unwrap().body[..4], br#"{ "c"#);
        let array = Call {
            target,
            timeout_secs: 3,
            body: Bytes::from_static(b"[1]"),
        };
        assert!(array.with_caller(&fp).is_err());
    }
    use serde_json::json;

    #[test]
    fn call_body_is_a_zero_copy_slice() {
        let call = Call::json(
            AgentId::from_bytes([3; 16]),
            30,
            &CallBody::new("echo", json!("x")),
        )
        .unwrap();
        let frame = call.to_frame(1, 1, Flags::EMPTY).unwrap();
        let back = Call::from_frame(&frame).unwrap();
        assert_eq!(back, call);
        assert_eq!(
            back.body.as_ptr(),
            frame.payload_slice()[CALL_PREFIX_LEN..].as_ptr()
        );
        assert_eq!(&frame.payload_slice()[16..20], &30u32.to_le_bytes());
    }

    #[test]
    fn call_prefix_must_be_whole_and_body_valid() {
        for n in 0..CALL_PREFIX_LEN {
            let p = Bytes::from(vec![0; n]);
            assert_eq!(Call::decode(&p).unwrap_err().class(), "truncated");
            assert!(Call::peek_target(&p).is_err());
        }
        let call = Call {
            target: AgentId::from_bytes([0; 16]),
            timeout_secs: 0,
            body: Bytes::new(),
        };
        assert_eq!(call.parse_body().unwrap_err().class(), "invalid_json");
        let call = Call {
            body: Bytes::from_static(br#"{"method":""}"#),
            ..call
        };
        assert_eq!(call.parse_body().unwrap_err().class(), "invalid_value");
        let long = format!(r#"{{"method":"{}"}}"#, "m".repeat(MAX_METHOD_LEN + 1));
        let call = Call {
            body: Bytes::from(long),
            ..call
        };
        assert_eq!(call.parse_body().unwrap_err().class(), "limit_exceeded");
    }

    #[test]
    fn response_and_error_name_the_call_at_fixed_offsets() {
        let r = Response::json(0x0102_0304_0506_0708, json!({"ok": true})).unwrap();
        let f = r.to_frame(2, 9, Flags::FINAL).unwrap();
        assert_eq!(
            &f.payload_slice()[..8],
            &0x0102_0304_0506_0708u64.to_le_bytes()
        );
        let back = Response::from_frame(&f).unwrap();
        assert_eq!(back.parse_body().unwrap().result, json!({"ok": true}));

        let e = ErrorPayload::new(5, ErrorCode::AGENT_UNAVAILABLE, "suspended").unwrap();
        let back = ErrorPayload::from_frame(&e.to_frame(6, 9, Flags::EMPTY).unwrap()).unwrap();
        assert_eq!(back.code, ErrorCode::AGENT_UNAVAILABLE);
        let body = back.parse_body().unwrap();
        assert!(body.retriable);
        assert_eq!(body.message, "suspended");
    }

    #[test]
    fn decode_errors_map_to_codes_with_their_class() {
        let err = DecodeError::ChecksumMismatch {
            carried: 1,
            computed: 2,
        };
        let e = ErrorPayload::from_decode_error(0, &err).unwrap();
        assert_eq!(e.code, ErrorCode::MALFORMED_FRAME);
        assert_eq!(
            e.parse_body().unwrap().class.as_deref(),
            Some("checksum_mismatch")
        );
        let err = DecodeError::InvalidUtf8 { field: "name" };
        assert_eq!(
            ErrorPayload::from_decode_error(0, &err).unwrap().code,
            ErrorCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn error_codes_are_unique_and_named() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.0), "duplicate {c:?}");
            assert_ne!(c.name(), "unknown");
        }
        assert_eq!(ErrorCode(7).name(), "unknown");
    }

    #[test]
    fn ack_is_exactly_eight_bytes() {
        assert_eq!(
            Ack::decode(&Bytes::from_static(&[1, 0, 0, 0, 0, 0, 0, 0])).unwrap(),
            Ack { acked: 1 }
        );
        assert_eq!(
            Ack::decode(&Bytes::from_static(&[0; 9]))
                .unwrap_err()
                .class(),
            "trailing_bytes"
        );
        assert_eq!(
            Ack::decode(&Bytes::from_static(&[0; 7]))
                .unwrap_err()
                .class(),
            "truncated"
        );
    }

    #[test]
    fn event_topic_is_checked() {
        let ev = EventBody {
            topic: "audit.appended".into(),
            target: Some(AgentId::from_bytes([1; 16])),
            data: json!({"seq": 1}),
        };
        assert_eq!(
            EventBody::from_frame(&ev.to_frame(1, 1, Flags::EMPTY).unwrap()).unwrap(),
            ev
        );
        assert_eq!(
            EventBody::decode(&Bytes::from_static(br#"{"topic":""}"#))
                .unwrap_err()
                .class(),
            "invalid_value"
        );
        assert_eq!(
            EventBody::decode(&Bytes::from_static(b"[1]"))
                .unwrap_err()
                .class(),
            "invalid_json"
        );
    }

    #[test]
    fn json_bodies_must_be_objects_and_numbers_round_trip() {
        // serde would read a struct from an array field by field; the schema says object.
        let arr = Bytes::from_static(br#"["fs.read",32]"#);
        let err = crate::DiscoverRequest::decode(&arr).unwrap_err();
        assert_eq!(err.class(), "invalid_json");
        assert!(err.to_string().contains("JSON object"), "{err}");
        let call = Call {
            target: AgentId::from_bytes([0; 16]),
            timeout_secs: 0,
            body: Bytes::from_static(br#" ["echo"]"#),
        };
        assert_eq!(call.parse_body().unwrap_err().class(), "invalid_json");
        // Numbers decode to the nearest f64, so a decoded body re-encodes unchanged.
        let ev =
            EventBody::decode(&Bytes::from_static(br#"{"topic":"t","data":-2.5e-253}"#)).unwrap();
        assert_eq!(ev.data, json!(-2.5e-253));
        let again = EventBody::from_frame(&ev.to_frame(1, 1, Flags::EMPTY).unwrap()).unwrap();
        assert_eq!(again, ev);
    }
}
