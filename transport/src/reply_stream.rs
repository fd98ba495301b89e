//! A Call answered by a stream of frames instead of one (docs/PROTOCOL.md,
//! "Streams": a Call answered by a stream): the agent turns the Call's
//! [`Reply`](crate::Reply) into a [`ReplyStream`], answers with a Response
//! (not FINAL), then sends Events on the Call's own QUIC stream, in order,
//! until it ends the stream (FIN, or an Error with FINAL) or the caller
//! closes it.
//!
//! Backpressure: the channel to the QUIC stream holds a few frames; past
//! them [`ReplyStream::send`] waits, and the server writes a frame only as
//! fast as QUIC flow control lets it, so a caller that stops reading holds
//! the sender back instead of filling the node's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mxp_protocol::{ErrorCode, ErrorPayload, EventBody, Flags, Frame, Response, TypedPayload};
use tokio::sync::{mpsc, oneshot};

use crate::TransportError;

/// Frames waiting between a [`ReplyStream`] and the QUIC stream, at most.
pub const STREAM_FRAMES: usize = 4;

/// The sending side of a Call answered by a stream of frames.
#[derive(Debug)]
pub struct ReplyStream {
    tx: mpsc::Sender<Frame>,
    call_id: u64,
    trace_id: u64,
    ids: Arc<AtomicU64>,
    /// The single-answer port of the Call, kept open so that the server does
    /// not read its closing as "the agent dropped the Call".
    _answer: oneshot::Sender<Frame>,
}

impl ReplyStream {
    pub(crate) fn new(
        tx: mpsc::Sender<Frame>,
        call_id: u64,
        trace_id: u64,
        ids: Arc<AtomicU64>,
        answer: oneshot::Sender<Frame>,
    ) -> ReplyStream {
        ReplyStream {
            tx,
            call_id,
            trace_id,
            ids,
            _answer: answer,
        }
    }

    /// The message id of the Call being answered.
    pub fn call_id(&self) -> u64 {
        self.call_id
    }

    /// The trace id of the Call (every frame of the stream carries it).
    pub fn trace_id(&self) -> u64 {
        self.trace_id
    }

    /// Whether the caller is gone (closed its side, reset the stream, lost
    /// the connection).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the caller is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: waiting again later resolves at the same moment.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `frame` on the stream, waiting while the caller is behind.
    ///
    /// # Errors
    /// [`TransportError::CallerGone`] if the caller closed the stream.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped while waiting for room, the frame is not sent
    /// and the stream is unchanged.
    pub async fn send(&self, frame: Frame) -> Result<(), TransportError> {
        self.tx
            .send(frame)
            .await
            .map_err(|_| TransportError::CallerGone)
    }

    /// Sends the Response that accepts the Call, `{"result": result}`,
    /// without FINAL: more frames follow.
    ///
    /// # Errors
    /// [`TransportError::Encode`]; [`TransportError::CallerGone`].
    ///
    /// # Cancel safety
    /// As [`ReplyStream::send`].
    pub async fn respond(&self, result: serde_json::Value) -> Result<(), TransportError> {
        let frame = Response::json(self.call_id, result)?.to_frame(
            self.next_id(),
            self.trace_id,
            Flags::EMPTY,
        )?;
        self.send(frame).await
    }

    /// Sends an Event `{"topic": topic, "data": data}` with the Call's trace id.
    ///
    /// # Errors
    /// [`TransportError::Encode`] (e.g. a topic over 256 bytes);
    /// [`TransportError::CallerGone`].
    ///
    /// # Cancel safety
    /// As [`ReplyStream::send`].
    pub async fn event(&self, topic: &str, data: serde_json::Value) -> Result<(), TransportError> {
        let body = EventBody {
            target: None,
            topic: topic.to_owned(),
            data,
        };
        let frame = body.to_frame(self.next_id(), self.trace_id, Flags::EMPTY)?;
        self.send(frame).await
    }

    /// Ends the stream with an Error frame (FINAL) saying why.
    ///
    /// # Errors
    /// [`TransportError::Encode`]; [`TransportError::CallerGone`].
    ///
    /// # Cancel safety
    /// As [`ReplyStream::send`]; dropped, the stream still ends (without
    /// the Error if it was not sent).
    pub async fn end_with_error(
        self,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), TransportError> {
        let frame = ErrorPayload::new(self.call_id, code, message)?.to_frame(
            self.next_id(),
            self.trace_id,
            Flags::FINAL,
        )?;
        self.send(frame).await
    }
}

/// What the server holds for a Call's answer: one frame, or a stream.
#[derive(Debug)]
pub struct AnswerPort {
    /// The single answer.
    pub frame: oneshot::Receiver<Frame>,
    /// The stream, if the agent turns the reply into one.
    pub stream: oneshot::Receiver<mpsc::Receiver<Frame>>,
}
