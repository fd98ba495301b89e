//! Reading the answer to a Call: correlation and error mapping (pure).

use mxp_protocol::{ErrorPayload, Frame, MessageType, Response, TypedPayload};

use crate::CallError;

/// Turns the frame that answered Call `call_id` into a Response or a [`CallError`].
///
/// # Errors
/// [`CallError::Remote`] for an Error frame, [`CallError::InvalidResponse`] for
/// an answer of another type, or one naming another Call.
pub fn interpret_answer(answer: &Frame, call_id: u64) -> Result<Response, CallError> {
    match answer.message_type() {
        MessageType::Response => {
            let r = Response::from_frame(answer)
                .map_err(|e| CallError::InvalidResponse(e.to_string()))?;
            if r.in_reply_to != call_id {
                return Err(CallError::InvalidResponse(format!(
                    "response answers message {} but the call was message {call_id}",
                    r.in_reply_to
                )));
            }
            Ok(r)
        }
        MessageType::Error => {
            let e = ErrorPayload::from_frame(answer)
                .map_err(|e| CallError::InvalidResponse(e.to_string()))?;
            if e.in_reply_to != call_id && e.in_reply_to != 0 {
                return Err(CallError::InvalidResponse(format!(
                    "error answers message {} but the call was message {call_id}",
                    e.in_reply_to
                )));
            }
            let (message, retriable, details) = match e.parse_body() {
                Ok(b) => (b.message, b.retriable, b.details),
                Err(_) => (
                    String::from_utf8_lossy(&e.body).into_owned(),
                    e.code.retriable(),
                    None,
                ),
            };
            Err(CallError::Remote {
                code: e.code,
                message,
                retriable,
                details,
            })
        }
        other => Err(CallError::InvalidResponse(format!(
            "expected a Response or Error, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxp_protocol::{ErrorCode, Flags, FrameHeader};

    #[test]
    fn correlates_by_message_id() {
        let ok = Response::json(5, serde_json::json!(1))
            .unwrap()
            .to_frame(9, 1, Flags::FINAL)
            .unwrap();
        assert!(interpret_answer(&ok, 5).is_ok());
        assert!(matches!(
            interpret_answer(&ok, 6),
            Err(CallError::InvalidResponse(_))
        ));
        let err = ErrorPayload::new(5, ErrorCode::DENIED, "no")
            .unwrap()
            .to_frame(9, 1, Flags::FINAL)
            .unwrap();
        match interpret_answer(&err, 5) {
            Err(CallError::Remote {
                code,
                message,
                retriable,
                ..
            }) => {
                assert_eq!(
                    (code, message.as_str(), retriable),
                    (ErrorCode::DENIED, "no", false)
                );
            }
            other => panic!("{other:?}"),
        }
        let ev = FrameHeader::new(MessageType::Event).encode(b"{}").unwrap();
        assert!(matches!(
            interpret_answer(&ev, 5),
            Err(CallError::InvalidResponse(_))
        ));
    }
}
