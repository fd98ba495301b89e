//! The in-process bus: frames move between components of a node as the same
//! [`Frame`] value (one `Bytes`): no encode, no copy, no second checksum.
//!
//! Each agent registers a [`Mailbox`]; anything that wants to reach it —
//! another component, or the QUIC server on behalf of a peer — delivers an
//! [`Envelope`] to it by agent id. A Call's envelope carries a [`Reply`] port.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use mxp_protocol::{
    AgentId, DecodeError, ErrorCode, ErrorPayload, Flags, Frame, Response, SessionId, TypedPayload,
};
use tokio::sync::{mpsc, oneshot};

use crate::budget::{BodyPermit, ByteBudget};
use crate::reply_stream::{AnswerPort, ReplyStream};
use crate::{CallError, NodeAuthority, PeerId, Principal, TransportError};

/// The agent id that addresses a node itself (the nil UUID): control Calls
/// (`node.status`, `agents.list`, `agent.suspend`, ...) and the mesh frames
/// (AgentRegister, AgentDiscover, AgentHeartbeat) go to whatever component
/// registers this id, as do Calls for agents that are not on this node.
pub const NODE_AGENT: AgentId = AgentId::from_bytes([0; 16]);

/// A frame on its way to an agent, with who sent it.
///
/// The sender is a [`Principal`]: a value only the TLS handshake path and
/// the node's [`NodeAuthority`] construct, so no in-process code can claim
/// another identity by building an envelope.
#[derive(Debug)]
pub struct Envelope {
    frame: Frame,
    principal: Principal,
    reply: Option<Reply>,
    /// Its bytes, charged to its agent's and the node's budgets while queued.
    held: Option<BodyPermit>,
}

impl Envelope {
    /// An envelope for `frame` from `principal`, answered on `reply` for a Call.
    pub fn new(frame: Frame, principal: Principal, reply: Option<Reply>) -> Envelope {
        Envelope {
            frame,
            principal,
            reply,
            held: None,
        }
    }

    /// Takes the bytes this envelope holds of its agent's and the node's
    /// budgets, to keep them held (e.g. until its Call is answered); `None`
    /// when the bus has no budgets.
    pub fn take_held(&mut self) -> Option<BodyPermit> {
        self.held.take()
    }

    /// The frame, validated where its bytes entered the process.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// Who sent it.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Takes the reply port (a Call has one; other frames none).
    pub fn take_reply(&mut self) -> Option<Reply> {
        self.reply.take()
    }

    /// Frame, sender and reply port. The bytes held are released: take them
    /// first with [`Envelope::take_held`] to keep them charged.
    pub fn into_parts(self) -> (Frame, Principal, Option<Reply>) {
        (self.frame, self.principal, self.reply)
    }
}

/// The port a Call's answer is sent on.
///
/// Dropping it without answering tells the caller the agent gave no answer.
/// [`Reply::closed`] resolves when the caller gave up, so long work can stop.
#[derive(Debug)]
pub struct Reply {
    tx: oneshot::Sender<Frame>,
    call_id: u64,
    trace_id: u64,
    ids: Arc<AtomicU64>,
    /// Where the answer stream goes, if the caller can take one (a Call
    /// over QUIC, which has its own stream; not an in-process Call).
    stream: Option<oneshot::Sender<mpsc::Receiver<Frame>>>,
}

impl Reply {
    /// Whether the caller can take a stream of frames as the answer
    /// ([`Reply::into_stream`]).
    pub fn can_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Turns this reply into a stream of frames (docs/PROTOCOL.md, a Call
    /// answered by a stream): the caller then gets every frame sent on the
    /// [`ReplyStream`], in order, until it is dropped (the stream ends) or
    /// the caller closes its side. The Call's deadline no longer applies.
    ///
    /// # Errors
    /// Gives the reply back if the caller cannot take a stream (an
    /// in-process Call): answer it with one frame instead.
    pub fn into_stream(self) -> Result<ReplyStream, Reply> {
        let Reply {
            tx,
            call_id,
            trace_id,
            ids,
            stream,
        } = self;
        let Some(port) = stream else {
            return Err(Reply {
                tx,
                call_id,
                trace_id,
                ids,
                stream: None,
            });
        };
        let (frames, rx) = mpsc::channel(crate::reply_stream::STREAM_FRAMES);
        // If the caller is gone, `frames` is closed at once and every send fails.
        let _ = port.send(rx);
        Ok(ReplyStream::new(frames, call_id, trace_id, ids, tx))
    }

    /// The message id of the Call being answered.
    pub fn call_id(&self) -> u64 {
        self.call_id
    }

    /// The trace id of the Call being answered.
    pub fn trace_id(&self) -> u64 {
        self.trace_id
    }

    /// Whether the caller is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the caller gives up (deadline, cancellation, disconnect).
    ///
    /// # Cancel safety
    /// Cancel safe: waiting again later resolves at the same moment.
    pub async fn closed(&mut self) {
        self.tx.closed().await;
    }

    /// Answers with a prepared frame (a Response or Error).
    ///
    /// # Errors
    /// Gives the frame back if the caller is gone.
    pub fn send(self, frame: Frame) -> Result<(), Frame> {
        self.tx.send(frame)
    }

    /// Answers with a Response whose body is `{"result": result}`.
    ///
    /// # Errors
    /// [`TransportError::Encode`] if the result cannot be encoded; the caller then
    /// gets an `internal` Error.
    pub fn ok(self, result: serde_json::Value) -> Result<(), TransportError> {
        self.ok_in_session(result, None)
    }

    /// Answers with a Response whose body is `{"result": result, "session": session}`.
    ///
    /// # Errors
    /// As [`Reply::ok`].
    pub fn ok_in_session(
        self,
        result: serde_json::Value,
        session: Option<SessionId>,
    ) -> Result<(), TransportError> {
        let body = mxp_protocol::ResponseBody { result, session };
        let frame = Response::with_body(self.call_id, &body)
            .and_then(|r| r.to_frame(self.next_id(), self.trace_id, Flags::FINAL));
        match frame {
            Ok(f) => {
                let _ = self.send(f);
                Ok(())
            }
            Err(e) => {
                let _ = self.error(
                    ErrorCode::INTERNAL,
                    format!("cannot encode the response: {e}"),
                );
                Err(e.into())
            }
        }
    }

    /// Answers with an Error frame.
    ///
    /// # Errors
    /// [`TransportError::Encode`] if the message cannot be encoded.
    pub fn error(self, code: ErrorCode, message: impl Into<String>) -> Result<(), TransportError> {
        let frame = ErrorPayload::new(self.call_id, code, message)?.to_frame(
            self.next_id(),
            self.trace_id,
            Flags::FINAL,
        )?;
        let _ = self.send(frame);
        Ok(())
    }

    /// Answers with an Error frame whose body carries `details` (e.g. a
    /// denial's determining policies and remedy).
    ///
    /// # Errors
    /// [`TransportError::Encode`] if the body cannot be encoded.
    pub fn error_with_details(
        self,
        code: ErrorCode,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<(), TransportError> {
        let mut body = mxp_protocol::ErrorBody::new(code, message);
        body.details = Some(details);
        let frame = ErrorPayload::with_body(self.call_id, code, &body)?.to_frame(
            self.next_id(),
            self.trace_id,
            Flags::FINAL,
        )?;
        let _ = self.send(frame);
        Ok(())
    }

    /// Answers with the Error a decode failure maps to: `malformed_frame`
    /// (100) or `invalid_payload` (101), its body's `class` naming the
    /// decode class (`invalid_json`, `invalid_utf8`, `limit_exceeded`, ...)
    /// as docs/PROTOCOL.md promises. Use it for a Call whose body does not
    /// parse, instead of [`Reply::error`] with the error's text.
    ///
    /// # Errors
    /// [`TransportError::Encode`] if the message cannot be encoded.
    pub fn decode_error(self, err: &DecodeError) -> Result<(), TransportError> {
        let frame = ErrorPayload::from_decode_error(self.call_id, err)?.to_frame(
            self.next_id(),
            self.trace_id,
            Flags::FINAL,
        )?;
        let _ = self.send(frame);
        Ok(())
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// An agent's inbox on the bus. Dropping it unregisters the agent.
#[derive(Debug)]
pub struct Mailbox {
    agent: AgentId,
    rx: mpsc::Receiver<Envelope>,
    /// Which registration this is: a later registration of the same id is
    /// not removed when this mailbox drops. (No sender is kept here, so the
    /// channel closes, and `recv` returns `None`, once the bus is gone.)
    registration: u64,
    bus: Weak<BusInner>,
}

impl Mailbox {
    /// The agent this mailbox belongs to.
    pub fn agent(&self) -> AgentId {
        self.agent
    }

    /// The next envelope; `None` once the bus is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: an envelope is either returned or left in the mailbox.
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.rx.recv().await
    }

    /// Up to `limit` envelopes already waiting, appended to `out`, after
    /// waiting for at least one; returns how many were added (0: bus gone).
    ///
    /// # Cancel safety
    /// Cancel safe: envelopes are either appended to `out` or left in the mailbox.
    pub async fn recv_many(&mut self, out: &mut Vec<Envelope>, limit: usize) -> usize {
        self.rx.recv_many(out, limit).await
    }

    /// Frames waiting to be read.
    pub fn depth(&self) -> usize {
        self.rx.len()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade()
            && let Ok(mut agents) = bus.agents.write()
            && agents
                .get(&self.agent)
                .is_some_and(|reg| reg.id == self.registration)
        {
            agents.remove(&self.agent);
        }
    }
}

/// One registered mailbox.
#[derive(Debug)]
struct Registration {
    /// Which registration this is (a later one of the same id is another).
    id: u64,
    tx: mpsc::Sender<Envelope>,
    /// Bytes this agent's mailbox (and its Calls in flight) may hold.
    budget: Option<ByteBudget>,
}

#[derive(Debug)]
struct BusInner {
    /// Registered mailboxes.
    agents: RwLock<HashMap<AgentId, Registration>>,
    /// Bytes all mailboxes together (and what took their envelopes' permits)
    /// may hold.
    node_budget: Option<ByteBudget>,
    capacity: usize,
    ids: Arc<AtomicU64>,
    /// Whether the node authority was handed out.
    authority_taken: std::sync::atomic::AtomicBool,
}

/// The in-process bus. Cloning gives another handle to the same bus.
///
/// ```
/// # tokio_test();
/// # fn tokio_test() {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// # rt.block_on(async {
/// use std::time::Duration;
/// use mxp_protocol::{AgentId, Call, CallBody, Flags, TypedPayload};
/// use mxp_transport::Bus;
///
/// let bus = Bus::new(64);
/// let agent = AgentId::from_bytes([1; 16]);
/// let mut mailbox = bus.register(agent)?;
/// tokio::spawn(async move {
///     while let Some(mut env) = mailbox.recv().await {
///         if let Some(reply) = env.take_reply() {
///             reply.ok(serde_json::json!("pong")).ok();
///         }
///     }
/// });
/// let call = Call::json(agent, 5, &CallBody::new("ping", serde_json::Value::Null))?;
/// // The node takes the bus's authority once, to name itself and its agents.
/// let me = bus.take_authority(mxp_transport::PeerId::from_spki(b"node"), [])?.node();
/// let response = bus.call(call.to_frame(bus.next_message_id(), 1, Flags::EMPTY)?, &me, Duration::from_secs(5)).await?;
/// assert_eq!(response.parse_body()?.result, "pong");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

/// A resolved route to one agent's mailbox: sending through it skips the
/// lookup by id.
#[derive(Debug, Clone)]
pub struct AgentSender {
    agent: AgentId,
    tx: mpsc::Sender<Envelope>,
    budgets: Vec<ByteBudget>,
}

impl AgentSender {
    /// The agent.
    pub fn agent(&self) -> AgentId {
        self.agent
    }

    /// Delivers, waiting for room in the mailbox (backpressure).
    ///
    /// # Errors
    /// [`TransportError::AgentStopped`] if the mailbox is gone.
    ///
    /// # Cancel safety
    /// If dropped while waiting for room, the envelope is not delivered and is dropped with the future (a Call's caller then sees its reply port closed).
    pub async fn send(&self, mut env: Envelope) -> Result<(), TransportError> {
        if !self.budgets.is_empty() {
            let budgets: Vec<&ByteBudget> = self.budgets.iter().collect();
            env.held = Some(BodyPermit::acquire(&budgets, env.frame.as_bytes().len()).await);
        }
        self.tx
            .send(env)
            .await
            .map_err(|_| TransportError::AgentStopped(self.agent))
    }

    /// Delivers without waiting.
    ///
    /// # Errors
    /// [`TransportError::Overloaded`] if the mailbox is full,
    /// [`TransportError::OverBudget`] if the frame's bytes do not fit the
    /// agent's or the node's budget, [`TransportError::AgentStopped`] if the
    /// mailbox is gone.
    pub fn try_send(&self, mut env: Envelope) -> Result<(), TransportError> {
        if !self.budgets.is_empty() {
            let budgets: Vec<&ByteBudget> = self.budgets.iter().collect();
            let permit = BodyPermit::take(&budgets, env.frame.as_bytes().len()).map_err(|e| {
                TransportError::OverBudget {
                    agent: self.agent,
                    reason: e,
                }
            })?;
            env.held = Some(permit);
        }
        self.tx.try_send(env).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TransportError::Overloaded(self.agent),
            mpsc::error::TrySendError::Closed(_) => TransportError::AgentStopped(self.agent),
        })
    }
}

impl Bus {
    /// A bus whose mailboxes hold `mailbox_capacity` envelopes each, with
    /// no byte budgets.
    pub fn new(mailbox_capacity: usize) -> Bus {
        Bus::with_node_budget(mailbox_capacity, None)
    }

    /// A bus whose mailboxes hold `mailbox_capacity` envelopes each and,
    /// all together, at most `node_bytes` bytes of frames queued or held in
    /// flight ([`Envelope::take_held`]).
    pub fn with_node_budget(mailbox_capacity: usize, node_bytes: Option<usize>) -> Bus {
        Bus {
            inner: Arc::new(BusInner {
                node_budget: node_bytes.map(ByteBudget::new),
                agents: RwLock::new(HashMap::new()),
                capacity: mailbox_capacity.max(1),
                ids: Arc::new(AtomicU64::new(1)),
                authority_taken: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Hands out the power to name the node `node`, its agents and its
    /// `operators` as principals ([`NodeAuthority`]). Only once per bus: the
    /// node that owns the bus takes it at start, so no other component can.
    ///
    /// # Errors
    /// [`TransportError::AuthorityTaken`] on any later call.
    pub fn take_authority(
        &self,
        node: PeerId,
        operators: impl IntoIterator<Item = PeerId>,
    ) -> Result<NodeAuthority, TransportError> {
        if self.inner.authority_taken.swap(true, Ordering::AcqRel) {
            return Err(TransportError::AuthorityTaken);
        }
        Ok(NodeAuthority::new(node, operators))
    }

    /// Registers `agent` and returns its mailbox.
    ///
    /// # Errors
    /// [`TransportError::AlreadyRegistered`] if the id is taken.
    pub fn register(&self, agent: AgentId) -> Result<Mailbox, TransportError> {
        self.register_with_budget(agent, None)
    }

    /// Registers `agent`, whose mailbox and Calls in flight may hold at most
    /// `bytes` bytes of frames (besides the node's budget), and returns its
    /// mailbox.
    ///
    /// # Errors
    /// [`TransportError::AlreadyRegistered`] if the id is taken.
    pub fn register_with_budget(
        &self,
        agent: AgentId,
        bytes: Option<usize>,
    ) -> Result<Mailbox, TransportError> {
        let (tx, rx) = mpsc::channel(self.inner.capacity);
        let mut agents = self.inner.agents.write().unwrap_or_else(|p| p.into_inner());
        if agents.get(&agent).is_some_and(|r| !r.tx.is_closed()) {
            return Err(TransportError::AlreadyRegistered(agent));
        }
        let registration = self.inner.ids.fetch_add(1, Ordering::Relaxed);
        agents.insert(
            agent,
            Registration {
                id: registration,
                tx,
                budget: bytes.map(ByteBudget::new),
            },
        );
        Ok(Mailbox {
            agent,
            rx,
            registration,
            bus: Arc::downgrade(&self.inner),
        })
    }

    /// Agents registered here.
    pub fn agents(&self) -> Vec<AgentId> {
        self.inner
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Whether `agent` is registered here.
    pub fn contains(&self, agent: &AgentId) -> bool {
        self.inner
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(agent)
    }

    /// A route to `agent`'s mailbox.
    ///
    /// # Errors
    /// [`TransportError::UnknownAgent`].
    pub fn sender(&self, agent: AgentId) -> Result<AgentSender, TransportError> {
        let agents = self.inner.agents.read().unwrap_or_else(|p| p.into_inner());
        agents
            .get(&agent)
            .map(|r| self.sender_of(agent, r))
            .ok_or(TransportError::UnknownAgent(agent))
    }

    fn sender_of(&self, agent: AgentId, r: &Registration) -> AgentSender {
        AgentSender {
            agent,
            tx: r.tx.clone(),
            budgets: r
                .budget
                .iter()
                .chain(self.inner.node_budget.iter())
                .cloned()
                .collect(),
        }
    }

    /// Bytes free in the node's budget, if it has one.
    pub fn node_budget_available(&self) -> Option<usize> {
        self.inner.node_budget.as_ref().map(ByteBudget::available)
    }

    /// A route for a frame addressed to `agent`: its own mailbox when it is
    /// registered here, otherwise the node agent's ([`NODE_AGENT`]), which
    /// knows the mesh and forwards; [`TransportError::UnknownAgent`] if
    /// neither is registered.
    ///
    /// # Errors
    /// [`TransportError::UnknownAgent`].
    pub fn route(&self, agent: AgentId) -> Result<AgentSender, TransportError> {
        let agents = self.inner.agents.read().unwrap_or_else(|p| p.into_inner());
        agents
            .get(&agent)
            .or_else(|| agents.get(&NODE_AGENT))
            .map(|r| self.sender_of(agent, r))
            .ok_or(TransportError::UnknownAgent(agent))
    }

    /// A fresh message id for a frame this node sends.
    pub fn next_message_id(&self) -> u64 {
        self.inner.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// A reply port for a Call with these ids, and the receiver of its answer.
    pub fn reply_port(&self, call_id: u64, trace_id: u64) -> (Reply, oneshot::Receiver<Frame>) {
        let (tx, rx) = oneshot::channel();
        (
            Reply {
                tx,
                call_id,
                trace_id,
                ids: self.inner.ids.clone(),
                stream: None,
            },
            rx,
        )
    }

    /// A reply port whose answer may also be a stream of frames
    /// ([`Reply::into_stream`]), for a caller that has a stream of its own
    /// to carry them (a Call over QUIC).
    pub fn streaming_reply_port(&self, call_id: u64, trace_id: u64) -> (Reply, AnswerPort) {
        let (tx, frame) = oneshot::channel();
        let (stream_tx, stream) = oneshot::channel();
        (
            Reply {
                tx,
                call_id,
                trace_id,
                ids: self.inner.ids.clone(),
                stream: Some(stream_tx),
            },
            AnswerPort { frame, stream },
        )
    }

    /// Sends a Call frame from `from` to the agent it targets (see
    /// [`Bus::route`]) and waits for the answer.
    ///
    /// # Errors
    /// [`CallError`]: unknown agent, overloaded mailbox, timeout, or the
    /// agent's Error frame.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the Call: the agent's [`Reply`] reports
    /// the caller gone ([`Reply::closed`]).
    pub async fn call(
        &self,
        frame: Frame,
        from: &Principal,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let call_id = frame.message_id();
        let trace_id = frame.trace_id();
        let target = mxp_protocol::Call::peek_target(frame.payload_slice())
            .map_err(|e| CallError::Transport(e.into()))?;
        let (reply, rx) = self.reply_port(call_id, trace_id);
        self.route(target)?
            .try_send(Envelope::new(frame, *from, Some(reply)))?;
        let answer = match tokio::time::timeout(timeout, rx).await {
            Err(_) => return Err(CallError::Timeout(timeout)),
            Ok(Err(_)) => {
                return Err(CallError::Remote {
                    code: ErrorCode::INTERNAL,
                    message: format!("agent {target} dropped the call without answering"),
                    retriable: true,
                    details: None,
                });
            }
            Ok(Ok(frame)) => frame,
        };
        crate::call::interpret_answer(&answer, call_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxp_protocol::{Call, CallBody, FrameHeader, MessageType};

    fn agent(n: u8) -> AgentId {
        AgentId::from_bytes([n; 16])
    }

    /// The node's own principal, from the bus's authority.
    fn me(bus: &Bus) -> Principal {
        ME.with(|m| {
            *m.get_or_init(|| {
                bus.take_authority(PeerId::from_spki(b"test node"), [])
                    .unwrap()
                    .node()
            })
        })
    }

    thread_local! {
        static ME: std::cell::OnceCell<Principal> = const { std::cell::OnceCell::new() };
    }

    #[tokio::test]
    async fn frames_move_without_copy() {
        let bus = Bus::new(4);
        let mut mb = bus.register(agent(1)).unwrap();
        let frame = FrameHeader::new(MessageType::Event)
            .encode(&[7; 65536])
            .unwrap();
        let ptr = frame.as_bytes().as_ptr();
        bus.sender(agent(1))
            .unwrap()
            .send(Envelope::new(frame, me(&bus), None))
            .await
            .unwrap();
        let got = mb.recv().await.unwrap();
        assert_eq!(
            got.frame().as_bytes().as_ptr(),
            ptr,
            "same buffer, not a copy"
        );
    }

    #[tokio::test]
    async fn register_twice_is_refused_and_drop_unregisters() {
        let bus = Bus::new(4);
        let mb = bus.register(agent(1)).unwrap();
        assert!(matches!(
            bus.register(agent(1)),
            Err(TransportError::AlreadyRegistered(_))
        ));
        assert!(bus.contains(&agent(1)));
        drop(mb);
        assert!(!bus.contains(&agent(1)));
        assert!(matches!(
            bus.sender(agent(1)),
            Err(TransportError::UnknownAgent(_))
        ));
        let _again = bus.register(agent(1)).unwrap();
    }

    #[tokio::test]
    async fn a_mailbox_ends_when_the_bus_is_gone() {
        let bus = Bus::new(4);
        let mut mb = bus.register(agent(1)).unwrap();
        drop(bus);
        let end = tokio::time::timeout(Duration::from_secs(5), mb.recv()).await;
        assert!(
            matches!(end, Ok(None)),
            "recv must return None once the bus is dropped"
        );
    }

    #[tokio::test]
    async fn full_mailbox_is_overloaded() {
        let bus = Bus::new(1);
        let _mb = bus.register(agent(1)).unwrap();
        let s = bus.sender(agent(1)).unwrap();
        let f = FrameHeader::new(MessageType::Event).encode(b"{}").unwrap();
        s.try_send(Envelope::new(f.clone(), me(&bus), None))
            .unwrap();
        assert!(matches!(
            s.try_send(Envelope::new(f, me(&bus), None)),
            Err(TransportError::Overloaded(_))
        ));
    }

    #[tokio::test]
    async fn local_call_times_out_and_the_agent_sees_the_caller_leave() {
        let bus = Bus::new(4);
        let mut mb = bus.register(agent(2)).unwrap();
        let call =
            Call::json(agent(2), 1, &CallBody::new("slow", serde_json::Value::Null)).unwrap();
        let frame = call
            .to_frame(bus.next_message_id(), 9, Flags::EMPTY)
            .unwrap();
        let me = me(&bus);
        let (res, env) = tokio::join!(bus.call(frame, &me, Duration::from_millis(50)), mb.recv());
        assert!(matches!(res, Err(CallError::Timeout(_))));
        let mut reply = env.unwrap().take_reply().unwrap();
        // The caller is gone: `closed` resolves at once.
        tokio::time::timeout(Duration::from_secs(5), reply.closed())
            .await
            .unwrap();
        assert!(reply.is_closed());
    }

    #[tokio::test]
    async fn unknown_agent_is_an_error() {
        let bus = Bus::new(4);
        let call = Call::json(agent(3), 1, &CallBody::new("x", serde_json::Value::Null)).unwrap();
        let err = bus
            .call(
                call.to_frame(1, 1, Flags::EMPTY).unwrap(),
                &me(&bus),
                Duration::from_secs(1),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::UNKNOWN_AGENT);
    }
}
