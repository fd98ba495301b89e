//! The node agent (nil UUID): mesh frames (register, heartbeat, discover),
//! control Calls, and forwards for agents hosted elsewhere. Control and
//! forwards are intents: each passes the gate before it acts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::dial::Dialer;
use crate::registry::RegistryLimits;

/// The longest a failing mesh node waits between rounds.
const MAX_DIAL_BACKOFF: Duration = Duration::from_secs(300);
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxp_protocol::{
    AgentId, AgentRegister, Call, DiscoverRequest, DiscoverResult, Frame, Heartbeat, MessageType,
    PrincipalId, TypedPayload,
};
use mxp_transport::{
    CallError, Client, Envelope, Limits, MxpUrl, NODE_AGENT, PeerId, Principal, Reply, Server,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::control::ControlRequest;
use super::{Hosted, NodeStatus, forward, mesh};
use crate::AgentMsg;
use crate::audit;
use crate::error::CallFailure;
use crate::gate::{OPERATOR_REMEDY, PolicySource, Zone};
use crate::registry::RegistryTable;
use crate::services::Services;
use crate::tool::EffectClass;

/// Messages to the node agent.
pub(crate) enum NodeAgentMsg {
    /// Frames for the node agent.
    Deliver(Vec<Envelope>),
    /// The heartbeat timer.
    Tick,
    /// Mesh nodes learned from a registration answer.
    Learned(Vec<MxpUrl>),
    /// How a mesh round with a node went.
    Dialed {
        /// The node.
        url: String,
        /// Whether it answered.
        ok: bool,
    },
    /// The node is shutting down: tell every mesh node its agents are gone
    /// (a heartbeat with TTL 0), then answer.
    Farewell(ractor::RpcReplyPort<()>),
    /// A hosted agent stopped (from the node supervisor).
    Gone(AgentId),
}

pub(crate) struct NodeAgent;

pub(crate) struct NodeAgentState {
    pub(super) table: RegistryTable,
    pub(super) hosted: BTreeMap<AgentId, Hosted>,
    pub(super) client: Arc<Client>,
    server: Arc<Server>,
    pub(super) services: Arc<Services>,
    pub(super) me: PeerId,
    pub(super) url: MxpUrl,
    pub(super) endpoint: Option<SocketAddrV4>,
    pub(super) ttl: Duration,
    limits: Limits,
    started: Instant,
    /// Nodes to heartbeat: seeds and nodes learned, minus this one; bounded,
    /// with backoff.
    pub(super) dialer: Dialer,
    /// Nodes with a mesh round under way (one at a time per node, so an
    /// unreachable node neither piles up tasks nor delays the others).
    pub(super) in_round: Arc<std::sync::Mutex<BTreeSet<String>>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    pub(super) heartbeat: Duration,
    /// Where `policy.reload` reads the policy set.
    pub(super) policy_source: PolicySource,
    /// The zone the reloaded set decides in.
    pub(super) zone: Zone,
    /// Replays and what-ifs running (`node::replay`).
    pub(super) replays: Arc<tokio::sync::Semaphore>,
}

/// What the node agent starts with (again, after a restart).
pub(crate) struct NodeAgentArgs {
    pub(crate) hosted: BTreeMap<AgentId, Hosted>,
    pub(crate) client: Arc<Client>,
    pub(crate) server: Arc<Server>,
    pub(crate) services: Arc<Services>,
    pub(crate) me: PeerId,
    pub(crate) url: MxpUrl,
    pub(crate) endpoint: Option<SocketAddrV4>,
    pub(crate) ttl: Duration,
    pub(crate) limits: Limits,
    pub(crate) seeds: Vec<MxpUrl>,
    pub(crate) heartbeat: Duration,
    pub(crate) registry: RegistryLimits,
    pub(crate) policy_source: PolicySource,
    pub(crate) zone: Zone,
}

fn respond(reply: Reply, result: Value) {
    let _ = reply.ok(result);
}

impl NodeAgentState {
    /// Brings the registry's view of local agents in line with `hosted`.
    pub(super) fn sync_local(&mut self) {
        let now = Instant::now();
        for (id, h) in &self.hosted {
            self.table.upsert_local(
                *id,
                &h.name,
                &h.capabilities,
                &self.url,
                h.view.state(),
                now,
            );
        }
    }

    /// The registrants' endpoints (one per identity) are what the dialer
    /// holds besides seeds and nodes learned from answers.
    pub(super) fn sync_dialer(&mut self, now: Instant) {
        let urls: Vec<String> = self
            .table
            .node_urls()
            .iter()
            .map(ToString::to_string)
            .filter(|u| *u != self.url.to_string())
            .collect();
        self.dialer.sync_registrants(&urls, now);
    }

    fn handle_envelope(&mut self, env: Envelope) {
        let (frame, principal, reply) = env.into_parts();
        let Some(reply) = reply else {
            debug!(r#type = %frame.message_type(), "node agent ignores a frame without a reply port");
            return;
        };
        let _span = tracing::debug_span!(
            "node_agent",
            trace_id = frame.trace_id(),
            message_id = frame.message_id(),
        )
        .entered();
        let principal = self.services.resolve(principal);
        let now = Instant::now();
        match frame.message_type() {
            MessageType::AgentRegister => {
                let Some(from) = principal.remote_peer() else {
                    return CallFailure::InvalidPayload(
                        "AgentRegister must come from a peer".into(),
                    )
                    .answer(reply);
                };
                let reg = match AgentRegister::from_frame(&frame) {
                    Ok(r) => r,
                    Err(e) => return CallFailure::Decode(e).answer(reply),
                };
                // The hosted set is authoritative for this node's agents: sync
                // first, so a peer can never claim a local agent's id.
                self.sync_local();
                match self.table.register_remote(&reg, from, self.ttl, now) {
                    Ok(()) => {
                        info!(agent = %reg.agent_id, name = %reg.name.escape_debug(), peer = %from.short(), "remote agent registered");
                        self.sync_dialer(now);
                        let mut nodes: Vec<String> = self
                            .table
                            .node_urls()
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        nodes.push(self.url.to_string());
                        respond(reply, json!({ "nodes": nodes }));
                    }
                    Err(e) => {
                        warn!(agent = %reg.agent_id, peer = %from.short(), "registration refused: {e}");
                        let _ = reply.error(mxp_protocol::ErrorCode::DENIED, e.to_string());
                    }
                }
            }
            MessageType::AgentHeartbeat => {
                let Some(from) = principal.remote_peer() else {
                    return CallFailure::InvalidPayload(
                        "AgentHeartbeat must come from a peer".into(),
                    )
                    .answer(reply);
                };
                match Heartbeat::from_frame(&frame) {
                    Ok(hb) => {
                        let refreshed = self.table.heartbeat(&hb, from, now);
                        respond(
                            reply,
                            json!({ "refreshed": refreshed, "unknown": hb.agents.len() - refreshed }),
                        );
                    }
                    Err(e) => CallFailure::Decode(e).answer(reply),
                }
            }
            MessageType::AgentDiscover => match DiscoverRequest::from_frame(&frame) {
                Ok(req) => {
                    self.sync_local();
                    let limit = req.limit.map_or(100, |l| l.clamp(1, 1000) as usize);
                    let page = self.table.discover(&req.capability, req.after, limit);
                    let (agents, next) = fit_page(page.items, page.next, |a| a.agent_id);
                    respond(
                        reply,
                        serde_json::to_value(DiscoverResult { agents, next }).unwrap_or_default(),
                    );
                }
                Err(e) => CallFailure::Decode(e).answer(reply),
            },
            MessageType::Call => {
                let call = match Call::from_frame(&frame) {
                    Ok(c) => c,
                    Err(e) => return CallFailure::Decode(e).answer(reply),
                };
                if call.target == NODE_AGENT {
                    self.control(principal, &frame, &call, reply);
                } else {
                    self.forward(frame, principal, &call, reply);
                }
            }
            other => CallFailure::Unsupported(format!("the node agent does not handle {other}"))
                .answer(reply),
        }
    }

    /// Forwards a Call for a remote agent, unchanged, to its node, once the
    /// gate allows it.
    fn forward(&self, frame: Frame, principal: Principal, call: &Call, reply: Reply) {
        let (node, owner) = match forward::route(&self.table, &call.target, &principal) {
            Ok(n) => n,
            Err(f) => {
                metrics::counter!("mxp_forwards_total", "outcome" => f.code().name()).increment(1);
                return f.answer(reply);
            }
        };
        let intent = forward::intent(
            principal,
            &call.target,
            &node,
            frame.trace_id(),
            frame.message_id(),
        );
        if let Err(denial) = self.services.check_now(intent) {
            metrics::counter!("mxp_forwards_total", "outcome" => "denied").increment(1);
            return CallFailure::Denied(denial).answer(reply);
        }
        // The receiving node sees the forwarder on the connection and the
        // caller in the Call, and takes the forwarder's word only if it
        // trusts it (docs/PROTOCOL.md, "Forwarding").
        let frame = match principal.id() {
            PrincipalId::Peer(caller) | PrincipalId::Operator(caller) => {
                match call.with_caller(caller).and_then(|c| {
                    c.to_frame(frame.message_id(), frame.trace_id(), frame.flags())
                        .map_err(|e| mxp_protocol::DecodeError::InvalidJson {
                            what: "Call",
                            detail: e.to_string(),
                        })
                }) {
                    Ok(f) => f,
                    Err(e) => {
                        return CallFailure::InvalidPayload(format!(
                            "cannot forward this Call: {e}"
                        ))
                        .answer(reply);
                    }
                }
            }
            _ => frame,
        };
        let client = self.client.clone();
        let deadline = self.limits.call_deadline(call.timeout_secs);
        let target = call.target;
        tokio::spawn(async move {
            debug!(agent = %target, node = %node, "forwarding call");
            let outcome = forward_to(&client, &node, owner, frame, deadline).await;
            let label = match &outcome {
                Ok(_) => "ok",
                Err(f) => f.code().name(),
            };
            metrics::counter!("mxp_forwards_total", "outcome" => label).increment(1);
            match outcome {
                Ok(answer) => {
                    let _ = reply.send(answer);
                }
                Err(f) => f.answer(reply),
            }
        });
    }

    fn control(&mut self, principal: Principal, frame: &Frame, call: &Call, reply: Reply) {
        let (request, params) = match call
            .parse_body_within(mxp_protocol::JsonLimits::default())
            .map_err(CallFailure::Decode)
            .and_then(|(body, _)| ControlRequest::parse(&body).map(|r| (r, body.params)))
        {
            Ok(r) => r,
            Err(f) => return f.answer(reply),
        };
        let intent = request.intent(principal, frame.trace_id(), frame.message_id());
        let checked = self.services.check_now(intent);
        let (effect, reasons) = match &checked {
            Ok(a) => (audit::PolicyEffect::Allow, a.reasons().to_vec()),
            Err(d) => (audit::PolicyEffect::Deny, d.reasons.clone()),
        };
        let (kind, data) = audit::decision(effect, &reasons, request.method(), &NODE_AGENT);
        self.services.auditor().record_detached(vec![audit::event(
            kind,
            data,
            Some(principal.id()),
            None,
            frame.trace_id(),
        )]);
        if let Err(mut denial) = checked {
            if denial.effect == EffectClass::Control
                && principal.kind() != mxp_protocol::PrincipalKind::Operator
            {
                denial.message = if self.services.authority().has_operators() {
                    format!(
                        "{} is not an operator of this node ({}); to make it one, {OPERATOR_REMEDY}",
                        principal, denial.message
                    )
                } else {
                    format!(
                        "no operators are configured on this node, so nobody may call {}; {OPERATOR_REMEDY}",
                        request.method()
                    )
                };
                // The message says what to do; the policy's generic remedy
                // (add a permit) is not it.
                denial.remedy = None;
            }
            return CallFailure::Denied(denial).answer(reply);
        }
        match request {
            ControlRequest::PolicyReload => self.policy_reload(principal, reply),
            ControlRequest::KillSwitch { on, mesh } => self.kill_switch(on, mesh, principal, reply),
            ControlRequest::ApprovalsList { id } => self.approvals_list(id, reply),
            ControlRequest::AuditRead {
                from,
                limit,
                verify,
                prove,
            } => self.audit_read(from, limit, verify, prove, reply),
            ControlRequest::AuditReplay | ControlRequest::PolicyWhatIf => {
                self.replay(request.method(), &params, reply);
            }
            ControlRequest::ApprovalsDecide { id, approve } => {
                self.approvals_decide(id, approve, principal, reply);
            }
            ControlRequest::AuditSubscribe { from, checkpoint } => self.audit_subscribe(
                principal,
                audit::subscribe::SubscribeRequest { from, checkpoint },
                reply,
            ),
            ControlRequest::AuditCheckpoint { size, from_size } => {
                self.audit_checkpoint(size, from_size, reply);
            }
            ControlRequest::AuditCosign { note } => self.audit_cosign(principal, note, reply),
            ControlRequest::NodeStatus => self.node_status(reply),
            ControlRequest::AgentsList => self.agents_list(&params, reply),
            ControlRequest::Lifecycle { transition, agent } => {
                let Some(h) = self.hosted.get(&agent).cloned() else {
                    if let Some(r) = self.table.get(&agent) {
                        // Another node's agent: its node decides, not this one.
                        return CallFailure::NotHere {
                            agent,
                            node: r.node.to_string(),
                        }
                        .answer(reply);
                    }
                    return CallFailure::UnknownAgent(agent).answer(reply);
                };
                let auditor = self.services.auditor().clone();
                tokio::spawn(async move {
                    match h
                        .actor
                        .call(
                            |p| AgentMsg::Control(transition, p),
                            Some(Duration::from_secs(10)),
                        )
                        .await
                    {
                        Ok(ractor::rpc::CallResult::Success(Ok(state))) => {
                            info!(agent = %agent, %transition, %state, by = %principal, "operator changed agent lifecycle");
                            let recorded = auditor
                                .record(vec![audit::event(
                                    audit::EventKind::LifecycleChange,
                                    json!({ "agent": agent.to_string(), "transition": transition.to_string(), "state": state.to_string() }),
                                    Some(principal.id()),
                                    None,
                                    0,
                                )])
                                .await;
                            match recorded {
                                Ok(_) => respond(reply, json!({ "agent_id": agent, "state": state })),
                                Err(e) => CallFailure::Internal(format!(
                                    "the agent is {state}, but the audit log could not record it: {e}"
                                ))
                                .answer(reply),
                            }
                        }
                        Ok(ractor::rpc::CallResult::Success(Err(f))) => f.answer(reply),
                        _ => CallFailure::Restarting("the agent's supervisor").answer(reply),
                    }
                });
            }
        }
    }

    fn node_status(&self, reply: Reply) {
        let (remote_online, remote_offline) = self.table.remote_counts();
        let mut status = NodeStatus {
            peer_id: self.me.to_string(),
            url: self.url.to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            local_agents: HashMap::new(),
            remote_online,
            remote_offline,
            nodes: self.dialer.all(),
            transport: self.server.stats(),
            kill_switch: self.services.gate().kill_switch().is_on(),
            approvals_pending: self.services.gate().approvals().pending_count(),
            audit_subscribers: self
                .services
                .auditor()
                .feed()
                .map_or(0, |f| f.subscriptions.count()),
        };
        for h in self.hosted.values() {
            *status
                .local_agents
                .entry(h.view.state().to_string())
                .or_default() += 1;
        }
        respond(reply, serde_json::to_value(status).unwrap_or_default());
    }

    /// One page of `agents.list` (`{"after": "<id>", "limit": n}`), in id
    /// order: local agents with their live status, remote ones with theirs.
    fn agents_list(&mut self, params: &Value, reply: Reply) {
        self.sync_local();
        let after = params
            .get("after")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<AgentId>().ok());
        let limit = params
            .get("limit")
            .and_then(Value::as_u64)
            .map_or(1000, |l| l.clamp(1, 1000) as usize);
        let page = self.table.page(after, limit);
        let next = page.next;
        let me = self.me.to_string();
        let out: Vec<(AgentId, Value)> = page
            .items
            .into_iter()
            .map(|r| {
                let v = match self.hosted.get(&r.agent_id) {
                    Some(h) => {
                        let s = h.view.status();
                        let mut v = serde_json::to_value(&s).unwrap_or_default();
                        if let Some(obj) = v.as_object_mut() {
                            obj.insert("status".into(), json!(s.state.discovery_status()));
                            obj.insert("location".into(), json!("local"));
                            obj.insert("owner".into(), json!(me));
                        }
                        v
                    }
                    None => json!({
                        "agent_id": r.agent_id, "name": r.name, "capabilities": r.capabilities,
                        "status": if r.online { "online" } else { "offline" },
                        "location": r.node.to_string(),
                        "owner": r.info(&self.me).owner,
                    }),
                };
                (r.agent_id, v)
            })
            .collect();
        let (agents, next) = fit_page(out, next, |(id, _)| *id);
        let agents: Vec<Value> = agents.into_iter().map(|(_, v)| v).collect();
        respond(reply, json!({ "agents": agents, "next": next }));
    }
}

/// The most bytes of entries one page of `agents.list` or discovery holds,
/// so no answer comes near the frame limit (an entry is at most about
/// 66 KiB: a 256-byte name and 256 capabilities of 256 bytes).
pub(crate) const PAGE_BYTES: usize = 1 << 20;

/// Cuts `items` so their JSON fits [`PAGE_BYTES`]; the cursor moves back to
/// the last entry kept when entries are cut.
fn fit_page<T: serde::Serialize>(
    mut items: Vec<T>,
    next: Option<AgentId>,
    id: impl Fn(&T) -> AgentId,
) -> (Vec<T>, Option<AgentId>) {
    let mut used = 0;
    let mut keep = items.len();
    for (i, item) in items.iter().enumerate() {
        used += serde_json::to_vec(item).map_or(0, |v| v.len() + 1);
        if used > PAGE_BYTES && i > 0 {
            keep = i;
            break;
        }
    }
    if keep < items.len() {
        items.truncate(keep);
        let cursor = items.last().map(&id);
        return (items, cursor);
    }
    (items, next)
}

/// Sends a Call for `owner`'s agent to `node`, unchanged, once `node`
/// proves in its TLS handshake that it is `owner`.
async fn forward_to(
    client: &Client,
    node: &MxpUrl,
    owner: PeerId,
    frame: Frame,
    deadline: Duration,
) -> Result<Frame, CallFailure> {
    let unreachable = |reason: String| CallFailure::Unreachable {
        node: node.to_string(),
        reason,
    };
    let (_, presented) = client
        .connect(node)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if presented != owner {
        return Err(unreachable(format!(
            "it presents identity {}, not {} which registered the agent",
            presented.short(),
            owner.short()
        )));
    }
    client
        .exchange(node, frame, deadline)
        .await
        .map_err(|e| match e {
            CallError::Timeout(d) => {
                CallFailure::Timeout(format!("node {node} did not answer within {d:?}"))
            }
            other => unreachable(other.to_string()),
        })
}

impl Actor for NodeAgent {
    type Msg = NodeAgentMsg;
    type State = NodeAgentState;
    type Arguments = NodeAgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeAgentMsg>,
        a: NodeAgentArgs,
    ) -> Result<NodeAgentState, ActorProcessingErr> {
        let now = Instant::now();
        let mut dialer = Dialer::new(
            a.seeds
                .iter()
                .map(|u| MxpUrl::new(u.host(), u.port(), None).to_string()),
            a.registry.max_nodes,
            a.heartbeat,
            MAX_DIAL_BACKOFF,
            now,
        );
        dialer.remove(&a.url.to_string());
        let ticker = myself.send_interval(a.heartbeat, || NodeAgentMsg::Tick);
        // First mesh round right away, not one interval later.
        myself.send_message(NodeAgentMsg::Tick)?;
        let mut st = NodeAgentState {
            table: RegistryTable::for_node(a.me, Some(a.url.clone()), a.registry),
            hosted: a.hosted,
            client: a.client,
            server: a.server,
            services: a.services,
            me: a.me,
            url: a.url,
            endpoint: a.endpoint,
            ttl: a.ttl,
            limits: a.limits,
            started: now,
            dialer,
            in_round: Arc::new(std::sync::Mutex::new(BTreeSet::new())),
            ticker: Some(ticker),
            heartbeat: a.heartbeat,
            policy_source: a.policy_source,
            zone: a.zone,
            replays: super::replay::replay_slots(),
        };
        st.sync_local();
        Ok(st)
    }

    async fn post_stop(
        &self,
        _: ActorRef<NodeAgentMsg>,
        st: &mut NodeAgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeAgentMsg>,
        msg: NodeAgentMsg,
        st: &mut NodeAgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeAgentMsg::Deliver(batch) => {
                for env in batch {
                    st.handle_envelope(env);
                }
            }
            NodeAgentMsg::Tick => mesh::tick(st, &myself),
            NodeAgentMsg::Learned(urls) => {
                let now = Instant::now();
                for u in urls {
                    let u = MxpUrl::new(u.host(), u.port(), None);
                    if u != st.url {
                        st.dialer.learn(u.to_string(), now);
                    }
                }
            }
            NodeAgentMsg::Dialed { url, ok } => {
                let now = Instant::now();
                if ok {
                    st.dialer.succeeded(&url, now);
                } else {
                    st.dialer.failed(&url, now);
                }
            }
            NodeAgentMsg::Farewell(port) => mesh::farewell(st, port),
            NodeAgentMsg::Gone(id) => {
                st.hosted.remove(&id);
                st.table.remove_local(&id);
            }
        }
        Ok(())
    }
}
