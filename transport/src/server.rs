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

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mxp_protocol::{ErrorCode, EventBody, Frame, TypedPayload};
use quinn::VarInt;
use tracing::{Instrument, debug, debug_span, info_span, warn};

use crate::bus::Envelope;
use crate::identity::{peer_of, server_tls};
use crate::principal::Principal;
use crate::session::Refusal;
use crate::session::budget::{Pool, ReadBudget};
use crate::session::conn::{Admission, ConnSession, Malformed};
use crate::session::stream::{self, MxpStream, Request, Step};
use crate::stats::{Gauge, Stats, StatsSnapshot};
use crate::wire::{
    After, RequestError, after_frame, after_frame_now, consume_fin, read_request, write_frame,
};
use crate::{Bus, Limits, NodeIdentity, PeerId, PeerTrust, TransportError};

/// QUIC application close codes and stream reset codes (docs/PROTOCOL.md).
pub mod codes {
    /// Connection closed normally (node shutting down).
    pub const CLOSE_SHUTDOWN: u32 = 0;
    /// Connection closed after too many malformed frames.
    pub const CLOSE_MALFORMED: u32 = 1;
    /// Connection closed: the peer presented no usable identity. (With
    /// mutual TLS a client without a certificate fails the handshake with a
    /// TLS alert instead; see docs/PROTOCOL.md.)
    pub const CLOSE_UNAUTHENTICATED: u32 = 2;
    /// Connection closed right after its handshake: the peer identity holds
    /// `max_connections_per_peer` connections already.
    pub const CLOSE_PEER_CONNECTIONS: u32 = 3;
    /// Stream reset: the request frame did not arrive within `request_timeout`.
    pub const RESET_REQUEST_TIMEOUT: u32 = 1;
    /// Stream reset: the caller gave up on the Call.
    pub const RESET_CANCELLED: u32 = 2;
    /// Stream reset: the caller of a Call answered by a stream took no frame
    /// within `idle_timeout`.
    pub const RESET_STALLED: u32 = 3;
}

struct Ctx {
    bus: Bus,
    limits: Limits,
    stats: Arc<Stats>,
    admission: Mutex<Admission>,
    /// Bytes of request frames being read, all connections together.
    buffered: Arc<Pool>,
}

impl Ctx {
    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One connection's state, shared by its stream tasks.
struct Conn {
    conn: quinn::Connection,
    peer: PeerId,
    session: ConnSession,
    budget: ReadBudget,
}

/// An admitted connection attempt from `ip`, counted until dropped.
struct IpSlot {
    ctx: Arc<Ctx>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.ctx.admission().closed(self.ip);
    }
}

/// A connection counted against its peer identity until dropped.
struct PeerSlot {
    ctx: Arc<Ctx>,
    peer: PeerId,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.ctx.admission().peer_left(self.peer);
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
            admission: Mutex::new(Admission::new(&limits)),
            buffered: Pool::new(limits.max_buffered_bytes),
            limits,
            stats: Arc::new(Stats::default()),
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

    /// Bytes held now for request frames being read, all connections
    /// together: at most `max_buffered_bytes`.
    pub fn buffered_bytes(&self) -> u64 {
        self.ctx.buffered.held()
    }

    /// Request frames refused (answered `overloaded`) so far because their
    /// declared length did not fit the connection's or the node's read
    /// budget.
    pub fn read_budget_refusals(&self) -> u64 {
        self.ctx.stats.over_read_budget_count()
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
        let remote = incoming.remote_address();
        let ip = remote.ip().to_canonical();
        // Before the handshake: refusing here costs one packet, so neither
        // connections nor handshakes from one address can crowd out others.
        let admitted = ctx.admission().incoming(ip);
        if let Err(why) = admitted {
            ctx.stats.refused();
            debug!(%remote, "refusing connection: {why}");
            incoming.refuse();
            continue;
        }
        let slot = IpSlot {
            ctx: ctx.clone(),
            ip,
        };
        let gauge = ctx.stats.connection(true);
        let span = info_span!("connection", %remote, peer = tracing::field::Empty);
        tokio::spawn(serve_connection(incoming, slot, gauge, ctx.clone()).instrument(span));
    }
}

async fn serve_connection(incoming: quinn::Incoming, _slot: IpSlot, _gauge: Gauge, ctx: Arc<Ctx>) {
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
    let admitted = ctx.admission().peer_connected(peer, Instant::now());
    if let Err(why) = admitted {
        ctx.stats.refused();
        debug!(peer = %peer, "closing connection: {why}");
        conn.close(
            VarInt::from_u32(codes::CLOSE_PEER_CONNECTIONS),
            b"too many connections with this identity",
        );
        return;
    }
    let _peer_slot = PeerSlot {
        ctx: ctx.clone(),
        peer,
    };
    debug!(peer = %peer, "peer connected");
    let c = Arc::new(Conn {
        conn: conn.clone(),
        peer,
        session: ConnSession::new(ctx.limits.malformed_threshold),
        budget: ReadBudget {
            conn: Pool::new(ctx.limits.max_buffered_bytes_per_connection),
            node: ctx.buffered.clone(),
        },
    });
    // Accept until both directions report the connection closed: quinn hands
    // out streams that already arrived before it reports the close, so
    // stopping at the first error would drop an Event sent just before it.
    let (mut bi_open, mut uni_open) = (true, true);
    while bi_open || uni_open {
        tokio::select! {
            bi = conn.accept_bi(), if bi_open => match bi {
                Ok((send, recv)) => {
                    tokio::spawn(serve_bi(c.clone(), send, recv, ctx.clone()).in_current_span());
                }
                Err(_) => bi_open = false,
            },
            uni = conn.accept_uni(), if uni_open => match uni {
                Ok(recv) => {
                    tokio::spawn(serve_uni(c.clone(), recv, ctx.clone()).in_current_span());
                }
                Err(_) => uni_open = false,
            },
        }
    }
    debug!(peer = %peer, reason = ?conn.close_reason(), "peer disconnected");
}

fn close_malformed(conn: &quinn::Connection) {
    warn!("closing connection: too many malformed frames");
    conn.close(
        VarInt::from_u32(codes::CLOSE_MALFORMED),
        b"too many malformed frames",
    );
}

/// Counts a refusal that is not answered (an Event's): malformed ones count
/// toward the threshold, which closes the connection.
fn count_only(c: &Conn, ctx: &Ctx, r: &Refusal) {
    debug!(code = %r.code, class = r.class, "not answered: {}", r.message);
    if r.malformed {
        ctx.stats.malformed(r.class.unwrap_or("invalid_payload"));
        if c.session.malformed() == Malformed::AnswerThenClose {
            close_malformed(&c.conn);
        }
    }
}

/// Answers `r` as an Error naming message `in_reply_to`, with `trace`.
/// A malformed frame is counted first (so a peer that reads the count after
/// the answer sees it); the one that reaches the threshold has its Error
/// queued and the connection closed at once; past it nothing is answered.
async fn refuse(
    send: &mut quinn::SendStream,
    ctx: &Ctx,
    c: &Conn,
    r: Refusal,
    in_reply_to: u64,
    trace: u64,
) {
    debug!(code = %r.code, class = r.class, "refused: {}", r.message);
    let verdict = if r.malformed {
        ctx.stats.malformed(r.class.unwrap_or("invalid_payload"));
        c.session.malformed()
    } else if c.session.closing() {
        Malformed::Silent
    } else {
        Malformed::Answer
    };
    match verdict {
        Malformed::Silent => {
            let _ = send.reset(VarInt::from_u32(0));
        }
        Malformed::Answer => {
            let f = r.to_frame(in_reply_to, trace, ctx.bus.next_message_id());
            reply(send, ctx, f).await;
        }
        Malformed::AnswerThenClose => {
            let f = r.to_frame(in_reply_to, trace, ctx.bus.next_message_id());
            reply(send, ctx, f).await;
            close_malformed(&c.conn);
        }
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

/// What reading a request frame came to.
enum Read {
    Frame(Frame),
    /// Answered (or counted) already, or nothing to do.
    Done,
}

/// Reads the next request frame within `within`, reserving its bytes from
/// the connection's and the node's read budgets; answers what cannot be read
/// on `send` (or, without one, counts it).
async fn read_or_refuse(
    recv: &mut quinn::RecvStream,
    send: Option<&mut quinn::SendStream>,
    c: &Conn,
    ctx: &Ctx,
    within: Duration,
    trace_default: u64,
) -> Read {
    let read = tokio::time::timeout(
        within,
        read_request(recv, ctx.limits.max_frame_payload, Some(&c.budget)),
    )
    .await;
    let (r, id, trace) = match read {
        Ok(Ok(Some(frame))) => return Read::Frame(frame),
        Ok(Ok(None)) | Ok(Err(RequestError::Stream(_))) => return Read::Done,
        Err(_) => {
            debug!("stream reset: no whole frame within {within:?}");
            if let Some(send) = send {
                let _ = send.reset(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
            }
            let _ = recv.stop(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
            return Read::Done;
        }
        Ok(Err(RequestError::Decode { err, header })) => {
            let (id, trace) = header.map_or((0, trace_default), |h| (h.message_id, h.trace_id));
            (Refusal::decode(&err), id, trace)
        }
        Ok(Err(RequestError::OverBudget { header, exhausted })) => {
            ctx.stats.over_read_budget();
            let r = Refusal::plain(
                ErrorCode::OVERLOADED,
                format!(
                    "a frame of {} payload bytes does not fit the read budget: {exhausted}",
                    header.payload_len
                ),
            );
            (r, header.message_id, header.trace_id)
        }
    };
    let _ = recv.stop(VarInt::from_u32(0));
    match send {
        Some(send) => refuse(send, ctx, c, r, id, trace).await,
        None => count_only(c, ctx, &r),
    }
    Read::Done
}

fn frame_span(c: &Conn, stream: quinn::StreamId, frame: &Frame) -> tracing::Span {
    debug_span!(
        "frame",
        peer = %c.peer.short(),
        stream = %stream,
        r#type = %frame.message_type(),
        message_id = frame.message_id(),
        trace_id = frame.trace_id()
    )
}

async fn serve_bi(
    c: Arc<Conn>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: Arc<Ctx>,
) {
    let _gauge = ctx.stats.stream();
    let within = ctx.limits.request_timeout;
    let first = match read_or_refuse(&mut recv, Some(&mut send), &c, &ctx, within, 0).await {
        Read::Frame(f) => f,
        Read::Done => return,
    };
    ctx.stats.frame_in(first.message_type());
    let span = frame_span(&c, send.id(), &first);
    async {
        let (id, trace) = (first.message_id(), first.trace_id());
        if !ctx.admission().admit_frame(c.peer, Instant::now()) {
            ctx.stats.rate_limited();
            let r = Refusal::plain(
                ErrorCode::RATE_LIMITED,
                format!(
                    "peer {} exceeded {} frames/s",
                    c.peer.short(),
                    ctx.limits.peer_rate_per_sec
                ),
            );
            refuse(&mut send, &ctx, &c, r, id, trace).await;
            consume_fin(&mut recv);
            return;
        }
        match stream::first_bidi(&first, &ctx.limits) {
            Request::Call { target, deadline } => {
                serve_request(first, target, deadline, &c, send, recv, &ctx).await;
            }
            Request::Mesh { deadline } => {
                serve_request(first, crate::NODE_AGENT, deadline, &c, send, recv, &ctx).await;
            }
            Request::Stream(mxp, target) => {
                serve_stream(first, mxp, target, &c, send, recv, &ctx).await;
            }
            Request::Event { ack } => serve_bi_event(first, ack, &c, send, recv, &ctx).await,
            Request::Refuse(r) => {
                let _ = recv.stop(VarInt::from_u32(0));
                refuse(&mut send, &ctx, &c, r, id, trace).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Hands a request frame (a Call, or a mesh frame for the node agent) to
/// `target` with a reply port and writes the answer back, within `deadline`;
/// gives up when the caller does. Bytes after the frame on its stream are
/// answered `malformed_frame`/`trailing_bytes` instead, and the agent sees
/// its reply port close.
async fn serve_request(
    frame: Frame,
    target: mxp_protocol::AgentId,
    deadline: Duration,
    c: &Conn,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: &Ctx,
) {
    let (id, trace) = (frame.message_id(), frame.trace_id());
    // The caller's FIN usually came with the frame: junk already there is
    // refused before the agent ever sees the request.
    let mut tail_open = match after_frame_now(&mut recv) {
        Some(After::Extra(n)) => {
            let _ = recv.stop(VarInt::from_u32(0));
            return refuse(&mut send, ctx, c, stream::trailing(&frame, n), id, trace).await;
        }
        Some(After::Fin | After::Failed) => false,
        None => true,
    };
    let sender = match ctx.bus.route(target) {
        Ok(s) => s,
        Err(_) => {
            let r = Refusal::plain(
                ErrorCode::UNKNOWN_AGENT,
                format!("no agent {target} on this node"),
            );
            return refuse(&mut send, ctx, c, r, id, trace).await;
        }
    };
    let wire_len = frame.wire_len();
    let (port, answers) = ctx.bus.streaming_reply_port(id, trace);
    let (mut answer, mut streamed) = (answers.frame, answers.stream);
    let mut may_stream = true;
    let env = Envelope::new(frame, Principal::peer(c.peer), Some(port));
    if let Err(e) = sender.try_send(env) {
        let code = match e {
            TransportError::Overloaded(_) | TransportError::OverBudget { .. } => {
                ErrorCode::OVERLOADED
            }
            _ => ErrorCode::AGENT_UNAVAILABLE,
        };
        return refuse(
            &mut send,
            ctx,
            c,
            Refusal::plain(code, e.to_string()),
            id,
            trace,
        )
        .await;
    }
    let _in_flight = ctx.stats.call();
    let timer = tokio::time::sleep(deadline);
    tokio::pin!(timer);
    let answer = loop {
        tokio::select! {
            biased;
            r = &mut streamed, if may_stream => match r {
                Ok(frames) => return serve_answer_stream(frames, (id, trace, wire_len), c, send, recv, tail_open, ctx).await,
                // The agent answers with one frame (or drops the Call).
                Err(_) => may_stream = false,
            },
            r = &mut answer => break match r {
                Ok(frame) => Some(frame),
                Err(_) => Refusal::plain(ErrorCode::INTERNAL, format!("agent {target} dropped the call without answering")).to_frame(id, trace, ctx.bus.next_message_id()),
            },
            () = &mut timer => break Refusal::plain(ErrorCode::TIMEOUT, format!("agent {target} did not answer within {deadline:?}")).to_frame(id, trace, ctx.bus.next_message_id()),
            _ = send.stopped() => {
                // The caller reset or stopped the stream, or the connection died:
                // dropping the answer receiver tells the agent the call is cancelled.
                debug!("call cancelled by the caller");
                return;
            }
            tail = after_frame(&mut recv), if tail_open => match tail {
                After::Extra(n) => {
                    drop(answer);
                    let _ = recv.stop(VarInt::from_u32(0));
                    let r = stream::trailing_len(wire_len, n);
                    return refuse(&mut send, ctx, c, r, id, trace).await;
                }
                After::Fin | After::Failed => tail_open = false,
            },
        }
    };
    reply(&mut send, ctx, answer).await;
    // The answer is out, so the caller's FIN has long arrived: reading it
    // spares the caller a STOP_SENDING.
    consume_fin(&mut recv);
}

/// Writes the frames of a Call answered by a stream (docs/PROTOCOL.md) as
/// the agent sends them, each within `idle_timeout` (a caller that takes
/// none for that long is cut off: stream reset code 3), until the agent ends
/// the stream (FIN) or the caller goes away; the agent learns the latter
/// from its [`crate::ReplyStream`] closing.
async fn serve_answer_stream(
    mut frames: tokio::sync::mpsc::Receiver<Frame>,
    (id, trace, wire_len): (u64, u64, usize),
    c: &Conn,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut tail_open: bool,
    ctx: &Ctx,
) {
    loop {
        tokio::select! {
            next = frames.recv() => {
                let Some(frame) = next else { break };
                let kind = frame.message_type();
                match tokio::time::timeout(ctx.limits.idle_timeout, write_frame(&mut send, &frame)).await {
                    Ok(Ok(())) => ctx.stats.frame_out(kind),
                    Ok(Err(e)) => {
                        debug!("answer stream ended by the caller: {e}");
                        return;
                    }
                    Err(_) => {
                        debug!("answer stream reset: the caller took no frame within {:?}", ctx.limits.idle_timeout);
                        let _ = send.reset(VarInt::from_u32(codes::RESET_STALLED));
                        let _ = recv.stop(VarInt::from_u32(codes::RESET_STALLED));
                        return;
                    }
                }
            }
            _ = send.stopped() => {
                debug!("answer stream closed by the caller");
                return;
            }
            tail = after_frame(&mut recv), if tail_open => match tail {
                After::Extra(n) => {
                    drop(frames);
                    let _ = recv.stop(VarInt::from_u32(0));
                    let r = stream::trailing_len(wire_len, n);
                    return refuse(&mut send, ctx, c, r, id, trace).await;
                }
                After::Fin | After::Failed => tail_open = false,
            },
        }
    }
    let _ = send.finish();
    consume_fin(&mut recv);
}

/// An Event on a bidirectional stream: delivered once its stream has ended
/// cleanly; with REQUIRES_ACK answered with an Ack (delivered) or an Error
/// (not), otherwise with the stream's end alone.
async fn serve_bi_event(
    frame: Frame,
    ack: bool,
    c: &Conn,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: &Ctx,
) {
    let (id, trace) = (frame.message_id(), frame.trace_id());
    match tokio::time::timeout(ctx.limits.request_timeout, after_frame(&mut recv)).await {
        Ok(After::Fin) => {}
        Ok(After::Extra(n)) => {
            let _ = recv.stop(VarInt::from_u32(0));
            let r = stream::trailing(&frame, n);
            return if ack {
                refuse(&mut send, ctx, c, r, id, trace).await
            } else {
                count_only(c, ctx, &r);
                let _ = send.finish();
            };
        }
        Ok(After::Failed) => return,
        Err(_) => {
            let _ = send.reset(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
            let _ = recv.stop(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
            return;
        }
    }
    let acked = stream::ack(&frame, ctx.bus.next_message_id());
    match deliver_event(frame, c.peer, ctx) {
        Ok(()) if ack => reply(&mut send, ctx, acked).await,
        Ok(()) => {
            let _ = send.finish();
        }
        Err(r) if ack => refuse(&mut send, ctx, c, r, id, trace).await,
        Err(r) => {
            count_only(c, ctx, &r);
            let _ = send.finish();
        }
    }
}

async fn serve_stream(
    open_frame: Frame,
    mut mxp: MxpStream,
    target: mxp_protocol::AgentId,
    c: &Conn,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    ctx: &Ctx,
) {
    let (id, trace) = (open_frame.message_id(), open_frame.trace_id());
    let Ok(sender) = ctx.bus.sender(target) else {
        let r = Refusal::plain(
            ErrorCode::UNKNOWN_AGENT,
            format!("no agent {target} on this node"),
        );
        return refuse(&mut send, ctx, c, r, id, trace).await;
    };
    let principal = Principal::peer(c.peer);
    let stopped = |target| {
        Refusal::plain(
            ErrorCode::AGENT_UNAVAILABLE,
            format!("agent {target} stopped"),
        )
    };
    if sender
        .send(Envelope::new(open_frame, principal, None))
        .await
        .is_err()
    {
        return refuse(&mut send, ctx, c, stopped(target), id, trace).await;
    }
    loop {
        // Between frames a stream may pause (a model thinking), but not
        // longer than the idle timeout: a peer cannot hold a stream slot
        // forever by going quiet half-way.
        let within = ctx.limits.idle_timeout;
        let frame = match read_or_refuse(&mut recv, Some(&mut send), c, ctx, within, trace).await {
            Read::Frame(f) => f,
            Read::Done => return,
        };
        ctx.stats.frame_in(frame.message_type());
        match mxp.next(&frame) {
            Step::Refuse(r) => {
                let _ = recv.stop(VarInt::from_u32(0));
                return refuse(&mut send, ctx, c, r, frame.message_id(), frame.trace_id()).await;
            }
            Step::Deliver { last } => {
                // Waiting here when the mailbox is full is the backpressure:
                // the server stops reading, and QUIC flow control stops the
                // sender.
                if sender
                    .send(Envelope::new(frame, principal, None))
                    .await
                    .is_err()
                {
                    return refuse(&mut send, ctx, c, stopped(target), id, trace).await;
                }
                if last {
                    break;
                }
            }
        }
    }
    consume_fin(&mut recv);
    let _ = send.finish();
}

async fn serve_uni(c: Arc<Conn>, mut recv: quinn::RecvStream, ctx: Arc<Ctx>) {
    let _gauge = ctx.stats.stream();
    let end = tokio::time::Instant::now() + ctx.limits.request_timeout;
    let frame = match read_or_refuse(&mut recv, None, &c, &ctx, ctx.limits.request_timeout, 0).await
    {
        Read::Frame(f) => f,
        Read::Done => return,
    };
    ctx.stats.frame_in(frame.message_type());
    let span = frame_span(&c, recv.id(), &frame);
    async {
        if !ctx.admission().admit_frame(c.peer, Instant::now()) {
            ctx.stats.rate_limited();
            return;
        }
        if !stream::first_uni(&frame) {
            debug!("ignoring non-Event frame on a unidirectional stream");
            return;
        }
        // One Event, then the stream's end: junk after it is malformed and
        // the Event is not delivered.
        match tokio::time::timeout_at(end, after_frame(&mut recv)).await {
            Ok(After::Fin) => {}
            Ok(After::Extra(n)) => {
                let _ = recv.stop(VarInt::from_u32(0));
                return count_only(&c, &ctx, &stream::trailing(&frame, n));
            }
            Ok(After::Failed) => return,
            Err(_) => {
                let _ = recv.stop(VarInt::from_u32(codes::RESET_REQUEST_TIMEOUT));
                return;
            }
        }
        if let Err(r) = deliver_event(frame, c.peer, &ctx) {
            count_only(&c, &ctx, &r);
        }
    }
    .instrument(span)
    .await;
}

/// Events are fire-and-forget unless sent with REQUIRES_ACK on a
/// bidirectional stream: delivered if the target agent is here and has room;
/// otherwise the refusal says why (answered only on a bidirectional stream
/// with REQUIRES_ACK).
fn deliver_event(frame: Frame, peer: PeerId, ctx: &Ctx) -> Result<(), Refusal> {
    let body = EventBody::from_frame(&frame).map_err(|e| Refusal::decode(&e))?;
    let Some(target) = body.target else {
        return Err(Refusal::plain(
            ErrorCode::UNKNOWN_AGENT,
            format!("event {:?} names no target agent", body.topic),
        ));
    };
    ctx.bus
        .sender(target)
        .and_then(|s| s.try_send(Envelope::new(frame, Principal::peer(peer), None)))
        .map_err(|e| {
            let code = match e {
                TransportError::UnknownAgent(_) => ErrorCode::UNKNOWN_AGENT,
                TransportError::Overloaded(_) | TransportError::OverBudget { .. } => {
                    ErrorCode::OVERLOADED
                }
                _ => ErrorCode::AGENT_UNAVAILABLE,
            };
            Refusal::plain(code, format!("event {:?} not delivered: {e}", body.topic))
        })
}
