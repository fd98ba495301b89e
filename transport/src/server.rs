//! The QUIC side of a node: accepts connections, attributes each to the peer's
//! certificate, applies the limits, and hands frames to the bus.
//!
//! Stream mapping (docs/PROTOCOL.md, "MXP over QUIC"):
//! * a Call is one bidirectional stream: the Call frame, then the Response or
//!   Error frame back; every Call has its own stream and task, so a slow Call
//!   never holds up another;
//! * an Event is one unidirectional stream carrying one frame, not answered;
//! * an MXP stream is one bidirectional stream: StreamOpen, StreamChunk…,
//!   StreamClose, delivered to the agent in order; when its mailbox is full the
//!   server stops reading and QUIC flow control holds the sender back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mxp_protocol::{
    Call, ErrorCode, ErrorPayload, EventBody, Flags, Frame, MessageType, StreamChunk, StreamClose,
    StreamOpen, TypedPayload,
};
use quinn::VarInt;
use tracing::{Instrument, debug, info_span, warn};

use crate::bus::Envelope;
use crate::identity::{peer_of, server_tls};
use crate::principal::Principal;
use crate::stats::{Gauge, Stats, StatsSnapshot};
use crate::wire::{ReadError, consume_fin, read_frame, write_frame};
use crate::{Bus, Limits, NodeIdentity, PeerId, PeerTrust, TokenBucket, TransportError};

/// QUIC application close codes and stream reset codes (docs/PROTOCOL.md).
pub mod codes {
    /// Connection closed normally (node shutting down).
    pub const CLOSE_SHUTDOWN: u32 = 0;
    /// Connection closed after too many malformed frames.
    pub const CLOSE_MALFORMED: u32 = 1;
    /// Connection closed: the peer presented no usable identity.
    pub const CLOSE_UNAUTHENTICATED: u32 = 2;
    /// Stream reset: the request frame did not arrive within `request_timeout`.
    pub const RESET_REQUEST_TIMEOUT: u32 = 1;
    /// Stream reset: the caller gave up on the Call.
    pub const RESET_CANCELLED: u32 = 2;
}

struct Ctx {
    bus: Bus,
    limits: Limits,
    stats: Arc<Stats>,
    peers: Mutex<HashMap<PeerId, PeerState>>,
}

struct PeerState {
    bucket: TokenBucket,
    connections: usize,
}

impl Ctx {
    fn peer_connected(&self, peer: PeerId) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        // A disconnected peer's bucket is kept until it has refilled, so
        // reconnecting does not buy a fresh burst; then it is forgotten.
        let now = Instant::now();
        peers.retain(|_, s| s.connections > 0 || !s.bucket.is_full(now));
        peers
            .entry(peer)
            .or_insert_with(|| PeerState {
                bucket: TokenBucket::new(
                    self.limits.peer_rate_per_sec,
                    self.limits.peer_burst,
                    Instant::now(),
                ),
                connections: 0,
            })
            .connections += 1;
    }

    fn peer_disconnected(&self, peer: PeerId) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = peers.get_mut(&peer) {
            state.connections = state.connections.saturating_sub(1);
        }
    }

    /// Takes one token from the peer's bucket (kept while the peer is
    /// connected, and after, until it has refilled).
    fn admit(&self, peer: PeerId) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .get_mut(&peer)
            .is_some_and(|s| s.bucket.try_take(Instant::now()))
    }

    fn error_frame(
        &self,
        in_reply_to: u64,
        trace_id: u64,
        code: ErrorCode,
        message: String,
    ) -> Option<Frame> {
        ErrorPayload::new(in_reply_to, code, message)
            .and_then(|e| e.to_frame(self.bus.next_message_id(), trace_id, Flags::FINAL))
            .ok()
    }
}

/// A running QUIC endpoint serving the agents on a [`Bus`].
pub struct Server {
    endpoint: quinn::Endpoint,
    ctx: Arc<Ctx>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

pub(crate) fn transport_config(limits: &Limits) -> Result<quinn::TransportConfig, TransportError> {
    let mut tc = quinn::TransportConfig::default();
    tc.max_concurrent_bidi_streams(limits.max_streams_per_connection.into());
    tc.max_concurrent_uni_streams(limits.max_uni_streams_per_connection.into());
    tc.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(limits.idle_timeout)
            .map_err(|_| TransportError::Config("idle_timeout is too long for QUIC".into()))?,
    ));
    Ok(tc)
}

impl Server {
    /// Binds a QUIC endpoint on `listen` and starts accepting connections.
    ///
    /// # Errors
    /// [`TransportError::Config`] for invalid limits or TLS setup,
    /// [`TransportError::Bind`] if the address cannot be bound.
    pub fn bind(
        listen: SocketAddr,
        identity: &NodeIdentity,
        trust: PeerTrust,
        limits: Limits,
        bus: Bus,
    ) -> Result<Server, TransportError> {
        limits.validate().map_err(TransportError::Config)?;
        let tls = server_tls(identity, trust)?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TransportError::Config(e.to_string()))?;
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        sc.transport_config(Arc::new(transport_config(&limits)?));
        let endpoint =
            quinn::Endpoint::server(sc, listen).map_err(|source| TransportError::Bind {
                addr: listen,
                source,
            })?;
        let ctx = Arc::new(Ctx {
            bus,
            limits,
            stats: Arc::new(Stats::default()),
            peers: Mutex::new(HashMap::new()),
        });
        let accept = tokio::spawn(accept_loop(endpoint.clone(), ctx.clone()));
        Ok(Server {
            endpoint,
            ctx,
            accept,
        })
    }

    /// The bound address (useful after binding port 0).
    ///
    /// # Errors
    /// The OS error if the socket has no address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Live counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.ctx.stats.snapshot()
    }

    /// Closes every connection and waits up to `grace` for peers to learn of it.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped part-way, the endpoint may be left closing without having waited for in-flight streams.
    pub async fn shutdown(&self, grace: Duration) {
        self.endpoint.close(
            VarInt::from_u32(codes::CLOSE_SHUTDOWN),
            b"node shutting down",
        );
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
        self.accept.abort();
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, ctx: Arc<Ctx>) {
    while let Some(incoming) = endpoint.accept().await {
        if ctx.stats.connections() >= ctx.limits.max_connections {
            ctx.stats.refused();
            warn!(remote = %incoming.remote_address(), limit = ctx.limits.max_connections, "refusing connection: connection limit reached");
            incoming.refuse();
            continue;
        }
        let gauge = ctx.stats.connection(true);
        let span = info_span!("connection", remote = %incoming.remote_address(), peer = tracing::field::Empty);
        tokio::spawn(serve_connection(incoming, gauge, ctx.clone()).instrument(span));
    }
}

async fn serve_connection(incoming: quinn::Incoming, _gauge: Gauge, ctx: Arc<Ctx>) {
    let handshake = async {
        match incoming.accept() {
            Ok(connecting) => connecting.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let conn = match tokio::time::timeout(ctx.limits.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!("handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!("handshake timed out");
            return;
        }
    };
    let Some(peer) = peer_of(&conn) else {
        conn.close(
            VarInt::from_u32(codes::CLOSE_UNAUTHENTICATED),
            b"no client certificate",
        );
        return;
    };
    tracing::Span::current().record("peer", tracing::field::display(peer.short()));
    debug!(peer = %peer, "peer connected");
    ctx.peer_connected(peer);
    let malformed = Arc::new(AtomicU32::new(0));
    // Accept until both directions report the connection closed: quinn hands
    // out streams that already arrived before it reports the close, so
    // stopping at the first error would drop an Event sent just before it.
    let (mut bi_open, mut uni_open) = (true, true);
    while bi_open || uni_open {
        tokio::select! {
            bi = conn.accept_bi(), if bi_open => match bi {
                Ok((send, recv)) => {
                    let task = serve_bi(conn.clone(), peer, send, recv, ctx.clone(), malformed.clone());
                    tokio::spawn(task.in_current_span());
                }
                Err(_) => bi_open = false,
            },
            uni = conn.accept_uni(), if uni_open => match uni {
                Ok(recv) => {
                    let task = serve_uni(conn.clone(), peer, recv, ctx.clone(), malformed.clone());
                    tokio::spawn(task.in_current_span());
                }
                Err(_) => uni_open = false,
            },
        }
    }
    ctx.peer_disconnected(peer);
    debug!(peer = %peer, reason = ?conn.close_reason(), "peer disconnected");
}

/// Counts a malformed frame; closes the connection past the threshold.
fn count_malformed(
    conn: &quinn::Connection,
    ctx: &Ctx,
    malformed: &AtomicU32,
    class: &'static str,
) {
    if note_malformed(ctx, malformed, class) {
        close_malformed(conn);
    }
}

/// Counts a malformed frame; true when the connection has reached the threshold.
fn note_malformed(ctx: &Ctx, malformed: &AtomicU32, class: &'static str) -> bool {
    ctx.stats.malformed(class);
    let n = malformed.fetch_add(1, Ordering::Relaxed) + 1;
    n >= ctx.limits.malformed_threshold
}

fn close_malformed(conn: &quinn::Connection) {
    warn!("closing connection: too many malformed frames");
    conn.close(
        VarInt::from_u32(codes::CLOSE_MALFORMED),
        b"too many malformed frames",
    );
}

/// Answers a malformed frame with `answer`, then counts it; when that reaches
/// the threshold the connection is closed once the peer has the answer (or
/// after a second), so the last offence is answered too.
async fn reply_malformed(
    send: &mut quinn::SendStream,
    ctx: &Ctx,
    answer: Option<Frame>,
    conn: &quinn::Connection,
    malformed: &AtomicU32,
    class: &'static str,
) {
    reply(send, ctx, answer).await;
    if note_malformed(ctx, malformed, class) {
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        close_malformed(conn);
    }
}

async fn reply(send: &mut quinn::SendStream, ctx: &Ctx, frame: Option<Frame>) {
    if let Some(frame) = frame
        && write_frame(send, &frame).await.is_ok()
    {
        ctx.stats.frame_out(frame.message_type());
    }
    let _ = send.finish();
}

async fn serve_bi(
    conn: quinn::Connection,
    peer: PeerId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: Arc<Ctx>,
    malformed: Arc<AtomicU32>,
) {
    let _gauge = ctx.stats.stream();
    let first = match tokio::time::timeout(
        ctx.limits.request_timeout,
        read_frame(&mut recv, ctx.limits.max_frame_payload),
    )
    .await
    {
        Err(_) => {
            debug!(
                "stream reset: no request frame within {:?}",
                ctx.limits.request_timeout
            );
            let _ = send.reset(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
            let _ = recv.stop(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
            return;
        }
        Ok(Ok(None)) | Ok(Err(ReadError::Stream(_))) => return,
        Ok(Err(ReadError::Decode { err, message_id })) => {
            debug!(class = err.class(), "malformed frame: {err}");
            let frame = ErrorPayload::from_decode_error(message_id, &err)
                .and_then(|e| e.to_frame(ctx.bus.next_message_id(), 0, Flags::FINAL))
                .ok();
            let _ = recv.stop(VarInt::from_u32(0));
            reply_malformed(&mut send, &ctx, frame, &conn, &malformed, err.class()).await;
            return;
        }
        Ok(Ok(Some(frame))) => frame,
    };
    ctx.stats.frame_in(first.message_type());
    let (id, trace) = (first.message_id(), first.trace_id());
    let span =
        info_span!("frame", trace_id = trace, message_id = id, r#type = %first.message_type());
    async {
        if !ctx.admit(peer) {
            ctx.stats.rate_limited();
            let f = ctx.error_frame(
                id,
                trace,
                ErrorCode::RATE_LIMITED,
                format!(
                    "peer {} exceeded {} frames/s",
                    peer.short(),
                    ctx.limits.peer_rate_per_sec
                ),
            );
            reply(&mut send, &ctx, f).await;
            return;
        }
        match first.message_type() {
            MessageType::Call => {
                serve_call(first, peer, send, &ctx, &conn, &malformed).await;
                // The answer is out, so the caller's FIN has long arrived:
                // reading it spares the caller a STOP_SENDING.
                consume_fin(&mut recv);
            }
            MessageType::AgentRegister
            | MessageType::AgentDiscover
            | MessageType::AgentHeartbeat => {
                serve_request(first, crate::NODE_AGENT, peer, send, &ctx).await;
                consume_fin(&mut recv);
            }
            MessageType::StreamOpen => {
                serve_stream(first, peer, send, recv, &ctx, &conn, &malformed).await
            }
            MessageType::Event => {
                deliver_event(first, peer, &ctx, &conn, &malformed);
                let _ = send.finish();
            }
            other => {
                let f = ctx.error_frame(
                    id,
                    trace,
                    ErrorCode::UNSUPPORTED,
                    format!("{other} is not served on a bidirectional stream by this node"),
                );
                reply(&mut send, &ctx, f).await;
            }
        }
    }
    .instrument(span)
    .await;
}

async fn serve_call(
    frame: Frame,
    peer: PeerId,
    mut send: quinn::SendStream,
    ctx: &Ctx,
    conn: &quinn::Connection,
    malformed: &AtomicU32,
) {
    let (id, trace) = (frame.message_id(), frame.trace_id());
    match Call::peek_target(frame.payload_slice()) {
        Ok(target) => serve_request(frame, target, peer, send, ctx).await,
        Err(err) => {
            let f = ErrorPayload::from_decode_error(id, &err)
                .and_then(|e| e.to_frame(ctx.bus.next_message_id(), trace, Flags::FINAL))
                .ok();
            reply_malformed(&mut send, ctx, f, conn, malformed, err.class()).await;
        }
    }
}

/// Hands a request frame (a Call, or a mesh frame for the node agent) to
/// `target` with a reply port and writes the answer back, within the Call's
/// deadline; gives up when the caller does.
async fn serve_request(
    frame: Frame,
    target: mxp_protocol::AgentId,
    peer: PeerId,
    mut send: quinn::SendStream,
    ctx: &Ctx,
) {
    let (id, trace) = (frame.message_id(), frame.trace_id());
    let timeout_secs = if frame.message_type() == MessageType::Call {
        Call::peek_timeout(frame.payload_slice()).unwrap_or(0)
    } else {
        0
    };
    let deadline = ctx.limits.call_deadline(timeout_secs);
    let sender = match ctx.bus.route(target) {
        Ok(s) => s,
        Err(_) => {
            let f = ctx.error_frame(
                id,
                trace,
                ErrorCode::UNKNOWN_AGENT,
                format!("no agent {target} on this node"),
            );
            return reply(&mut send, ctx, f).await;
        }
    };
    let (port, answer) = ctx.bus.reply_port(id, trace);
    let env = Envelope::new(frame, Principal::peer(peer), Some(port));
    if let Err(e) = sender.try_send(env) {
        let code = match e {
            TransportError::Overloaded(_) | TransportError::OverBudget { .. } => {
                ErrorCode::OVERLOADED
            }
            _ => ErrorCode::AGENT_UNAVAILABLE,
        };
        let f = ctx.error_frame(id, trace, code, e.to_string());
        return reply(&mut send, ctx, f).await;
    }
    let _in_flight = ctx.stats.call();
    let answer = tokio::select! {
        r = tokio::time::timeout(deadline, answer) => match r {
            Ok(Ok(frame)) => Some(frame),
            Ok(Err(_)) => ctx.error_frame(id, trace, ErrorCode::INTERNAL, format!("agent {target} dropped the call without answering")),
            Err(_) => ctx.error_frame(id, trace, ErrorCode::TIMEOUT, format!("agent {target} did not answer within {deadline:?}")),
        },
        _ = send.stopped() => {
            // The caller reset or stopped the stream, or the connection died:
            // dropping the answer receiver tells the agent the call is cancelled.
            debug!("call cancelled by the caller");
            return;
        }
    };
    reply(&mut send, ctx, answer).await;
}

async fn serve_stream(
    open_frame: Frame,
    peer: PeerId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: &Ctx,
    conn: &quinn::Connection,
    malformed: &AtomicU32,
) {
    let (id, trace) = (open_frame.message_id(), open_frame.trace_id());
    let open = match StreamOpen::from_frame(&open_frame) {
        Ok(o) => o,
        Err(err) => {
            let f = ErrorPayload::from_decode_error(id, &err)
                .and_then(|e| e.to_frame(ctx.bus.next_message_id(), trace, Flags::FINAL))
                .ok();
            reply_malformed(&mut send, ctx, f, conn, malformed, err.class()).await;
            return;
        }
    };
    let Ok(sender) = ctx.bus.sender(open.target) else {
        let f = ctx.error_frame(
            id,
            trace,
            ErrorCode::UNKNOWN_AGENT,
            format!("no agent {} on this node", open.target),
        );
        return reply(&mut send, ctx, f).await;
    };
    let principal = Principal::peer(peer);
    if sender
        .send(Envelope::new(open_frame, principal, None))
        .await
        .is_err()
    {
        let f = ctx.error_frame(
            id,
            trace,
            ErrorCode::AGENT_UNAVAILABLE,
            format!("agent {} stopped", open.target),
        );
        return reply(&mut send, ctx, f).await;
    }
    loop {
        // Between frames a stream may pause (a model thinking), but not
        // longer than the idle timeout: a peer cannot hold a stream slot
        // forever by going quiet half-way.
        let next = tokio::time::timeout(
            ctx.limits.idle_timeout,
            read_frame(&mut recv, ctx.limits.max_frame_payload),
        )
        .await;
        let Ok(next) = next else {
            debug!(
                "MXP stream idle for {:?}; resetting it",
                ctx.limits.idle_timeout
            );
            let _ = send.reset(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
            let _ = recv.stop(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
            return;
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) | Err(ReadError::Stream(_)) => break,
            Err(ReadError::Decode { err, message_id }) => {
                let f = ErrorPayload::from_decode_error(message_id, &err)
                    .and_then(|e| e.to_frame(ctx.bus.next_message_id(), trace, Flags::FINAL))
                    .ok();
                reply_malformed(&mut send, ctx, f, conn, malformed, err.class()).await;
                return;
            }
        };
        ctx.stats.frame_in(frame.message_type());
        let stream_id = match frame.message_type() {
            MessageType::StreamChunk => {
                StreamChunk::from_frame(&frame).map(|c| (c.stream_id, false))
            }
            MessageType::StreamClose => {
                StreamClose::from_frame(&frame).map(|c| (c.stream_id, true))
            }
            other => {
                let f = ctx.error_frame(
                    frame.message_id(),
                    trace,
                    ErrorCode::INVALID_PAYLOAD,
                    format!("{other} inside an MXP stream; expected StreamChunk or StreamClose"),
                );
                return reply(&mut send, ctx, f).await;
            }
        };
        let (stream_id, last) = match stream_id {
            Ok(v) => v,
            Err(err) => {
                let f = ErrorPayload::from_decode_error(frame.message_id(), &err)
                    .and_then(|e| e.to_frame(ctx.bus.next_message_id(), trace, Flags::FINAL))
                    .ok();
                reply_malformed(&mut send, ctx, f, conn, malformed, err.class()).await;
                return;
            }
        };
        if stream_id != open.stream_id {
            let f = ctx.error_frame(
                frame.message_id(),
                trace,
                ErrorCode::INVALID_PAYLOAD,
                format!(
                    "frame names stream {stream_id}, this QUIC stream carries {}",
                    open.stream_id
                ),
            );
            return reply(&mut send, ctx, f).await;
        }
        // Waiting here when the mailbox is full is the backpressure: the
        // server stops reading, and QUIC flow control stops the sender.
        if sender
            .send(Envelope::new(frame, principal, None))
            .await
            .is_err()
        {
            let f = ctx.error_frame(
                id,
                trace,
                ErrorCode::AGENT_UNAVAILABLE,
                format!("agent {} stopped", open.target),
            );
            return reply(&mut send, ctx, f).await;
        }
        if last {
            break;
        }
    }
    let _ = send.finish();
}

async fn serve_uni(
    conn: quinn::Connection,
    peer: PeerId,
    mut recv: quinn::RecvStream,
    ctx: Arc<Ctx>,
    malformed: Arc<AtomicU32>,
) {
    let _gauge = ctx.stats.stream();
    match tokio::time::timeout(
        ctx.limits.request_timeout,
        read_frame(&mut recv, ctx.limits.max_frame_payload),
    )
    .await
    {
        Err(_) => {
            let _ = recv.stop(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
        }
        Ok(Ok(Some(frame))) => {
            ctx.stats.frame_in(frame.message_type());
            if !ctx.admit(peer) {
                ctx.stats.rate_limited();
                return;
            }
            if frame.message_type() == MessageType::Event {
                deliver_event(frame, peer, &ctx, &conn, &malformed);
            } else {
                debug!(r#type = %frame.message_type(), "ignoring non-Event frame on a unidirectional stream");
            }
        }
        Ok(Ok(None)) | Ok(Err(ReadError::Stream(_))) => {}
        Ok(Err(ReadError::Decode { err, .. })) => {
            debug!(class = err.class(), "malformed event frame: {err}");
            count_malformed(&conn, &ctx, &malformed, err.class());
        }
    }
}

/// Events are fire-and-forget: delivered if the target agent is here and has
/// room, otherwise counted and logged.
fn deliver_event(
    frame: Frame,
    peer: PeerId,
    ctx: &Ctx,
    conn: &quinn::Connection,
    malformed: &AtomicU32,
) {
    let body = match EventBody::from_frame(&frame) {
        Ok(b) => b,
        Err(err) => {
            debug!(class = err.class(), "invalid event: {err}");
            count_malformed(conn, ctx, malformed, err.class());
            return;
        }
    };
    let Some(target) = body.target else {
        debug!(topic = %body.topic, "event names no target agent; dropped");
        return;
    };
    match ctx
        .bus
        .sender(target)
        .and_then(|s| s.try_send(Envelope::new(frame, Principal::peer(peer), None)))
    {
        Ok(()) => {}
        Err(e) => debug!(topic = %body.topic, "event not delivered: {e}"),
    }
}
