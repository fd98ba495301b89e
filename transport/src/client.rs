//! The calling side of MXP over QUIC: connections to peers (one per node,
//! reused), Calls with deadlines and cancellation, Events, MXP streams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mxp_protocol::{
    AgentId, Call, CallBody, EventBody, Flags, Frame, Response, StreamChunk, StreamClose,
    StreamCloseBody, StreamId, StreamOpen, StreamType, TypedPayload,
};
use quinn::VarInt;

use crate::identity::{client_tls, peer_of};
use crate::server::{codes, transport_config};
use crate::stats::{Stats, StatsSnapshot};
use crate::wire::{ReadError, consume_fin, read_frame, write_frame};
use crate::{CallError, Limits, MxpUrl, NodeIdentity, PeerId, PeerTrust, TransportError};

/// A QUIC client: calls agents on other nodes.
///
/// Connections are opened on first use and reused for every later Call to
/// the same `host:port`; each Call runs on its own stream.
pub struct Client {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    limits: Limits,
    /// One slot per `host:port`.
    conns: Mutex<HashMap<String, Arc<ConnSlot>>>,
    ids: AtomicU64,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// A connection-level failure, with the reason the connection closed if it did
/// (e.g. the TLS alert of a node that refused this client's certificate).
fn lost(conn: &quinn::Connection, e: &dyn std::fmt::Display) -> TransportError {
    match conn.close_reason() {
        Some(reason) => TransportError::ConnectionLost(format!("{e} ({reason})")),
        None => TransportError::ConnectionLost(e.to_string()),
    }
}

/// The connection to one node: the live connection and its peer (read
/// without waiting), and a lock held across a handshake so that concurrent
/// first calls to a node share one connection.
#[derive(Default)]
struct ConnSlot {
    live: Mutex<Option<(quinn::Connection, PeerId)>>,
    dialing: tokio::sync::Mutex<()>,
}

impl ConnSlot {
    fn live(&self) -> Option<(quinn::Connection, PeerId)> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref()
            .filter(|(c, _)| c.close_reason().is_none())
            .cloned()
    }
}

/// Cancels the QUIC stream of a Call if the caller drops the Call's future.
struct CancelOnDrop {
    send: Option<quinn::SendStream>,
    recv: Option<quinn::RecvStream>,
    done: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let code = VarInt::from_u32(codes::RESET_CANCELLED);
        if let Some(s) = self.send.as_mut() {
            let _ = s.reset(code);
        }
        if let Some(r) = self.recv.as_mut() {
            let _ = r.stop(code);
        }
    }
}

impl Client {
    /// A client presenting `identity` and checking servers against `trust`.
    ///
    /// # Errors
    /// [`TransportError::Config`] or [`TransportError::Bind`].
    pub fn new(
        identity: &NodeIdentity,
        trust: PeerTrust,
        limits: Limits,
    ) -> Result<Client, TransportError> {
        limits.validate().map_err(TransportError::Config)?;
        let tls = client_tls(identity, trust)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| TransportError::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut tc = transport_config(&limits)?;
        // Keep idle connections to peers alive well inside the idle timeout.
        tc.keep_alive_interval(Some(limits.idle_timeout / 3));
        config.transport_config(Arc::new(tc));
        let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], 0));
        let endpoint = match quinn::Endpoint::client(any) {
            Ok(e) => e,
            // No IPv6 here: fall back to IPv4 only.
            Err(_) => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], 0));
                quinn::Endpoint::client(v4)
                    .map_err(|source| TransportError::Bind { addr: v4, source })?
            }
        };
        Ok(Client {
            endpoint,
            config,
            limits,
            conns: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(1),
            stats: Arc::new(Stats::default()),
        })
    }

    /// Live counters (calls in flight, open connections, ...).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// A fresh message id.
    pub fn next_message_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The connection to `url`'s node, opened if needed, and the node's identity.
    ///
    /// # Errors
    /// [`TransportError::Connect`] if the node cannot be reached, refuses the
    /// connection, or fails the TLS handshake (e.g. an unpinned certificate).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped caller abandons only its own wait; a handshake it was driving is dropped with it and the next caller dials again. Live connections are shared and stay open.
    pub async fn connect(
        &self,
        url: &MxpUrl,
    ) -> Result<(quinn::Connection, PeerId), TransportError> {
        let key = url.authority();
        let slot = {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            match conns.get(&key) {
                Some(slot) => slot.clone(),
                None => conns.entry(key.clone()).or_default().clone(),
            }
        };
        if let Some(live) = slot.live() {
            return Ok(live);
        }
        // Only callers of the same node wait here: a handshake to an
        // unreachable node does not hold up calls to any other.
        let _dialing = slot.dialing.lock().await;
        if let Some(live) = slot.live() {
            return Ok(live);
        }
        let addrs = url.resolve().await?;
        let mut last = None;
        for addr in addrs {
            let attempt = async {
                let connecting = self
                    .endpoint
                    .connect_with(self.config.clone(), addr, "mxp-node")
                    .map_err(|e| e.to_string())?;
                connecting.await.map_err(|e| e.to_string())
            };
            match tokio::time::timeout(self.limits.handshake_timeout, attempt).await {
                Ok(Ok(c)) => {
                    let Some(peer) = peer_of(&c) else {
                        last = Some("server presented no certificate".to_owned());
                        continue;
                    };
                    *slot.live.lock().unwrap_or_else(|p| p.into_inner()) = Some((c.clone(), peer));
                    return Ok((c, peer));
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(format!(
                        "no handshake within {:?}",
                        self.limits.handshake_timeout
                    ))
                }
            }
        }
        Err(TransportError::Connect {
            addr: key,
            reason: last.unwrap_or_else(|| "no address".into()),
        })
    }

    /// Closes the connection to `url`'s node, if one is open (application
    /// close code 0): every stream on it ends at once; the next exchange
    /// with that node dials again.
    pub fn disconnect(&self, url: &MxpUrl) {
        let slot = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&url.authority())
            .cloned();
        if let Some(slot) = slot
            && let Some((conn, _)) = slot.live.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            conn.close(
                VarInt::from_u32(codes::CLOSE_SHUTDOWN),
                b"client disconnecting",
            );
        }
    }

    /// Calls the agent `url` names with `body` and waits at most `timeout`.
    ///
    /// The Call carries `timeout` (rounded up to whole seconds) so the callee
    /// can stop early; if the deadline passes, or the returned future is
    /// dropped, the Call's stream is reset and the callee sees it cancelled.
    ///
    /// # Errors
    /// [`CallError`]: the callee's Error frame, a timeout, a connection
    /// failure or an answer that does not match the Call.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the Call: its stream is reset and the callee sees it cancelled.
    pub async fn call(
        &self,
        url: &MxpUrl,
        body: &CallBody,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let target = url.agent().ok_or_else(|| {
            CallError::Transport(TransportError::InvalidUrl {
                url: url.to_string(),
                reason: "a Call needs an agent id in the path: mxp://host:port/<agent-id>".into(),
            })
        })?;
        let body = serde_json::to_vec(body).map_err(|e| {
            CallError::Transport(TransportError::Encode(mxp_protocol::EncodeError::Json {
                what: "Call",
                detail: e.to_string(),
            }))
        })?;
        self.call_raw(url, target, Bytes::from(body), timeout).await
    }

    /// Like [`Client::call`] with a body already encoded.
    ///
    /// # Errors
    /// As [`Client::call`].
    ///
    /// # Cancel safety
    /// As [`Client::call`]: dropping the future resets the Call's stream.
    pub async fn call_raw(
        &self,
        url: &MxpUrl,
        target: AgentId,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let id = self.next_message_id();
        let timeout_secs = u32::try_from(timeout.as_millis().div_ceil(1000))
            .unwrap_or(u32::MAX)
            .max(1);
        let frame = Call {
            target,
            timeout_secs,
            body,
        }
        .to_frame(id, id, Flags::EMPTY)
        .map_err(TransportError::from)?;
        let answer = self.exchange(url, frame, timeout).await?;
        crate::call::interpret_answer(&answer, id)
    }

    /// Sends one frame on a new bidirectional stream and returns the one
    /// frame that answers it, within `timeout`. The building block of
    /// [`Client::call`]; useful to send frames the typed API would not.
    ///
    /// # Errors
    /// [`CallError::Timeout`], or [`CallError::Transport`] if the connection
    /// fails or the stream ends without an answer.
    ///
    /// # Cancel safety
    /// Dropping the future resets the exchange's stream; the peer sees it cancelled.
    pub async fn exchange(
        &self,
        url: &MxpUrl,
        frame: Frame,
        timeout: Duration,
    ) -> Result<Frame, CallError> {
        let _in_flight = self.stats.call();
        let max = self.limits.max_frame_payload;
        let work = async {
            let (conn, _) = self.connect(url).await?;
            let (send, recv) = conn.open_bi().await.map_err(|e| lost(&conn, &e))?;
            let mut guard = CancelOnDrop {
                send: Some(send),
                recv: Some(recv),
                done: false,
            };
            let _stream = self.stats.stream();
            if let Some(send) = guard.send.as_mut() {
                write_frame(send, &frame)
                    .await
                    .map_err(TransportError::ConnectionLost)?;
                let _ = send.finish();
            }
            self.stats.frame_out(frame.message_type());
            let answer = match guard.recv.as_mut() {
                Some(recv) => {
                    let answer = read_frame(recv, max).await;
                    consume_fin(recv);
                    answer
                }
                None => Ok(None),
            };
            guard.done = true;
            let answer = answer.map_err(|e| match e {
                ReadError::Stream(s) => match conn.close_reason() {
                    Some(reason) => ReadError::Stream(format!("{s} ({reason})")),
                    None => ReadError::Stream(s),
                },
                other => other,
            });
            match answer {
                Ok(Some(f)) => {
                    self.stats.frame_in(f.message_type());
                    Ok(f)
                }
                Ok(None) => Err(TransportError::ConnectionLost(
                    "the peer closed the stream without answering".into(),
                )),
                Err(ReadError::Stream(e)) => Err(TransportError::ConnectionLost(e)),
                Err(ReadError::Decode { err, .. }) => Err(TransportError::Decode(err)),
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r.map_err(CallError::from),
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// Calls the agent `url` names with `body`, expecting a stream of frames
    /// as the answer (docs/PROTOCOL.md, a Call answered by a stream): waits
    /// at most `timeout` for the Response that accepts the Call, then hands
    /// over the stream, whose later frames have no deadline.
    ///
    /// # Errors
    /// As [`Client::call`]: the callee's Error frame (it refused), a timeout,
    /// a connection failure or an answer that does not match the Call.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the Call: its stream is reset and the
    /// callee sees it cancelled.
    pub async fn call_stream(
        &self,
        url: &MxpUrl,
        body: &CallBody,
        timeout: Duration,
    ) -> Result<AnswerStream, CallError> {
        let target = url.agent().ok_or_else(|| {
            CallError::Transport(TransportError::InvalidUrl {
                url: url.to_string(),
                reason: "a Call needs an agent id in the path: mxp://host:port/<agent-id>".into(),
            })
        })?;
        let id = self.next_message_id();
        let timeout_secs = u32::try_from(timeout.as_millis().div_ceil(1000))
            .unwrap_or(u32::MAX)
            .max(1);
        let frame = Call::json(target, timeout_secs, body)
            .map_err(TransportError::from)?
            .to_frame(id, id, Flags::EMPTY)
            .map_err(TransportError::from)?;
        let max = self.limits.max_frame_payload;
        let work = async {
            let (conn, _) = self.connect(url).await?;
            let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(&conn, &e))?;
            write_frame(&mut send, &frame)
                .await
                .map_err(TransportError::ConnectionLost)?;
            let _ = send.finish();
            self.stats.frame_out(frame.message_type());
            let mut stream = AnswerStream {
                first: None,
                send,
                recv,
                max,
                conn,
                done: false,
                stats: self.stats.clone(),
                _stream: self.stats.stream(),
            };
            let first = stream.next().await?.ok_or_else(|| {
                TransportError::ConnectionLost(
                    "the peer closed the stream without answering".into(),
                )
            })?;
            Ok::<_, TransportError>((stream, first))
        };
        let (mut stream, first) = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r?,
            Err(_) => return Err(CallError::Timeout(timeout)),
        };
        let response = crate::call::interpret_answer(&first, id)?;
        stream.first = Some(response);
        Ok(stream)
    }

    /// Sends an Event (fire-and-forget) on a new unidirectional stream.
    ///
    /// # Errors
    /// [`TransportError`] if the node cannot be reached or the frame not written.
    ///
    /// # Cancel safety
    /// If dropped before the stream is finished, the Event may or may not have been delivered.
    pub async fn event(&self, url: &MxpUrl, event: &EventBody) -> Result<(), TransportError> {
        let id = self.next_message_id();
        let frame = event.to_frame(id, id, Flags::EMPTY)?;
        self.send_uni(url, &frame).await
    }

    /// Sends any frame on a new unidirectional stream.
    ///
    /// # Errors
    /// [`TransportError`] if the node cannot be reached or the frame not written.
    ///
    /// # Cancel safety
    /// If dropped before the stream is finished, the frame may or may not have been delivered.
    pub async fn send_uni(&self, url: &MxpUrl, frame: &Frame) -> Result<(), TransportError> {
        let (conn, _) = self.connect(url).await?;
        let mut send = conn
            .open_uni()
            .await
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        write_frame(&mut send, frame)
            .await
            .map_err(TransportError::ConnectionLost)?;
        send.finish()
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        // Wait until the peer has the data, so a process that exits right
        // after sending does not lose it.
        let _ = send.stopped().await;
        self.stats.frame_out(frame.message_type());
        Ok(())
    }

    /// Opens an MXP stream to the agent `url` names.
    ///
    /// # Errors
    /// [`TransportError`] if the node cannot be reached or the URL names no agent.
    ///
    /// # Cancel safety
    /// If dropped, the stream being opened is reset; no [`StreamSender`] exists yet.
    pub async fn open_stream(
        &self,
        url: &MxpUrl,
        stream_id: StreamId,
        stream_type: StreamType,
    ) -> Result<StreamSender, TransportError> {
        let target = url.agent().ok_or_else(|| TransportError::InvalidUrl {
            url: url.to_string(),
            reason: "a stream needs an agent id in the path".into(),
        })?;
        let (conn, _) = self.connect(url).await?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        let id = self.next_message_id();
        let open = StreamOpen {
            stream_id,
            target,
            stream_type,
        }
        .to_frame(id, id, Flags::EMPTY)?;
        write_frame(&mut send, &open)
            .await
            .map_err(TransportError::ConnectionLost)?;
        Ok(StreamSender {
            send,
            recv,
            stream_id,
            seq: 0,
            trace_id: id,
            next_id: id + 1,
            max: self.limits.max_frame_payload,
        })
    }

    /// Closes every connection.
    ///
    /// # Cancel safety
    /// Cancel safe: connections already closed stay closed; dropping the future stops waiting for the rest to drain.
    pub async fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(codes::CLOSE_SHUTDOWN), b"client closing");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// The answer to a Call answered by a stream ([`Client::call_stream`]): the
/// Response that accepted the Call, then the frames that follow, read one
/// at a time (what is not read waits in QUIC's flow-control window, which
/// holds the sender back). Dropping it closes the stream: the callee sees
/// the caller gone.
#[derive(Debug)]
pub struct AnswerStream {
    first: Option<Response>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    max: u64,
    conn: quinn::Connection,
    done: bool,
    stats: Arc<Stats>,
    _stream: crate::stats::Gauge,
}

impl AnswerStream {
    /// The Response that accepted the Call.
    pub fn response(&self) -> Option<&Response> {
        self.first.as_ref()
    }

    /// The next frame; `Ok(None)` once the callee ended the stream (FIN).
    /// An Error frame with FINAL is the callee ending it with a reason.
    ///
    /// # Errors
    /// [`TransportError::ConnectionLost`] if the stream or connection broke
    /// (e.g. reset by the callee), [`TransportError::Decode`] for bytes that
    /// are not a frame.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part-way through a frame, the stream's
    /// framing is lost; drop the [`AnswerStream`] then.
    pub async fn next(&mut self) -> Result<Option<Frame>, TransportError> {
        if self.done {
            return Ok(None);
        }
        match read_frame(&mut self.recv, self.max).await {
            Ok(Some(f)) => {
                self.stats.frame_in(f.message_type());
                Ok(Some(f))
            }
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(ReadError::Stream(e)) => {
                self.done = true;
                Err(match self.conn.close_reason() {
                    Some(reason) => TransportError::ConnectionLost(format!("{e} ({reason})")),
                    None => TransportError::ConnectionLost(e),
                })
            }
            Err(ReadError::Decode { err }) => {
                self.done = true;
                Err(TransportError::Decode(err))
            }
        }
    }
}

impl Drop for AnswerStream {
    fn drop(&mut self) {
        if !self.done {
            let code = VarInt::from_u32(codes::RESET_CANCELLED);
            let _ = self.recv.stop(code);
            let _ = self.send.reset(code);
        }
    }
}

/// The sending half of an MXP stream. Chunks arrive at the agent in order;
/// [`StreamSender::chunk`] waits while the receiver is behind (backpressure).
#[derive(Debug)]
pub struct StreamSender {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    stream_id: StreamId,
    seq: u64,
    trace_id: u64,
    next_id: u64,
    max: u64,
}

impl StreamSender {
    /// Sends the next chunk.
    ///
    /// # Errors
    /// [`TransportError`] if the stream broke (e.g. the node refused it).
    ///
    /// # Cancel safety
    /// If dropped part-way, the chunk may have been partly written: the stream's sequence is then broken and it should be reset, not continued.
    pub async fn chunk(&mut self, data: Bytes) -> Result<(), TransportError> {
        let frame = StreamChunk {
            stream_id: self.stream_id,
            seq: self.seq,
            data,
        }
        .to_frame(self.next_id, self.trace_id, Flags::EMPTY)?;
        self.seq += 1;
        self.next_id += 1;
        write_frame(&mut self.send, &frame)
            .await
            .map_err(TransportError::ConnectionLost)
    }

    /// Ends the stream and waits for the node to finish with it. Returns the
    /// Error frame the node sent, if it refused the stream.
    ///
    /// # Errors
    /// [`TransportError`] if the stream broke.
    ///
    /// # Cancel safety
    /// If dropped, the stream is reset rather than closed cleanly.
    pub async fn close(mut self, body: &StreamCloseBody) -> Result<Option<Frame>, TransportError> {
        let frame = StreamClose::json(self.stream_id, body)?.to_frame(
            self.next_id,
            self.trace_id,
            Flags::FINAL,
        )?;
        write_frame(&mut self.send, &frame)
            .await
            .map_err(TransportError::ConnectionLost)?;
        let _ = self.send.finish();
        match read_frame(&mut self.recv, self.max).await {
            Ok(answer) => Ok(answer),
            Err(ReadError::Stream(e)) => Err(TransportError::ConnectionLost(e)),
            Err(ReadError::Decode { err, .. }) => Err(TransportError::Decode(err)),
        }
    }
}
