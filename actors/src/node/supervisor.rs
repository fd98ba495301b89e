//! The node supervisor: starts the node agent and the hosted agents,
//! restarts the node agent when it fails, keeps the set of hosted agents
//! (and tells the node agent of every change), and retires them all on
//! shutdown, answering when the last one stopped or the grace passed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxp_protocol::AgentId;
use mxp_transport::{Bus, NODE_AGENT};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info};

use super::Hosted;
use super::agent::{NodeAgent, NodeAgentArgs, NodeAgentMsg};
use super::service::NodeService;
use crate::services::Services;
use crate::slot::{Slot, bridge};
use crate::{AgentArgs, AgentMsg, AgentSpec, AgentSupervisor, SupervisionPolicy, Transition};

/// Messages to the node supervisor.
pub(crate) enum NodeMsg {
    /// Retire every agent; answer how many are left when all stopped or
    /// `grace` passed.
    Retire(Duration, RpcReplyPort<usize>),
    /// The retire grace is over.
    RetireDeadline,
    /// Tell the mesh this node's agents are gone; answer when done.
    Farewell(RpcReplyPort<()>),
}

pub(crate) struct NodeSupervisor;

pub(crate) struct NodeSupervisorState {
    hosted: BTreeMap<AgentId, Hosted>,
    node_agent: Arc<Slot<NodeAgentMsg>>,
    node_args: Box<dyn Fn(BTreeMap<AgentId, Hosted>) -> NodeAgentArgs + Send + Sync>,
    bridge: tokio::task::JoinHandle<()>,
    /// Callers of `Retire` waiting for the last agent to stop.
    retiring: Vec<RpcReplyPort<usize>>,
    /// Node-wide services, their running actors and recent restarts.
    node_services: Vec<Running>,
    services: Arc<Services>,
    policy: SupervisionPolicy,
}

/// A node service and its actor.
struct Running {
    service: Arc<dyn NodeService>,
    cell: Option<ractor::ActorCell>,
    restarts: VecDeque<Instant>,
}

pub(crate) struct NodeSupervisorArgs {
    pub(crate) bus: Bus,
    pub(crate) node_args: Box<dyn Fn(BTreeMap<AgentId, Hosted>) -> NodeAgentArgs + Send + Sync>,
    pub(crate) agents: Vec<AgentSpec>,
    pub(crate) policy: SupervisionPolicy,
    pub(crate) services: Arc<Services>,
    pub(crate) node_services: Vec<Arc<dyn NodeService>>,
}

impl NodeSupervisor {
    async fn spawn_node_agent(
        myself: &ActorRef<NodeMsg>,
        st: &NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (a, _) = Actor::spawn_linked(
            None,
            NodeAgent,
            (st.node_args)(st.hosted.clone()),
            myself.get_cell(),
        )
        .await?;
        st.node_agent.set(a);
        Ok(())
    }

    /// Restarts the node service whose actor `cell` was, within the
    /// restart intensity; true if `cell` was one.
    async fn restart_service(
        myself: &ActorRef<NodeMsg>,
        st: &mut NodeSupervisorState,
        cell: &ractor::ActorCell,
        why: &str,
    ) -> bool {
        let (services, policy) = (st.services.clone(), st.policy.clone());
        let Some(r) = st
            .node_services
            .iter_mut()
            .find(|r| r.cell.as_ref().is_some_and(|c| c.get_id() == cell.get_id()))
        else {
            return false;
        };
        r.cell = None;
        let name = r.service.name();
        metrics::counter!("mxp_actor_restarts_total", "actor" => name).increment(1);
        let now = Instant::now();
        let window = Duration::from_millis(policy.restart_window_ms);
        while r
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            r.restarts.pop_front();
        }
        r.restarts.push_back(now);
        let restarted = if r.restarts.len() > policy.max_restarts as usize {
            error!(
                service = name,
                "{name} stopped ({why}); restart limit of {} in {} ms exceeded, it stays down",
                policy.max_restarts,
                policy.restart_window_ms
            );
            false
        } else {
            error!(service = name, "{name} stopped ({why}); restarting");
            match r.service.spawn(services.clone(), myself.get_cell()).await {
                Ok(c) => {
                    r.cell = Some(c);
                    true
                }
                Err(e) => {
                    error!(
                        service = name,
                        "{name} could not restart: {e}; it stays down"
                    );
                    false
                }
            }
        };
        services.auditor().record_detached(vec![crate::audit::event(
            crate::audit::EventKind::ActorRestart,
            serde_json::json!({
                "actor": name,
                "reason": why.chars().take(512).collect::<String>(),
                "restarted": restarted,
            }),
            None,
            None,
            0,
        )]);
        true
    }

    fn answer_retiring(st: &mut NodeSupervisorState) {
        let left = st.hosted.len();
        for port in st.retiring.drain(..) {
            let _ = port.send(left);
        }
    }
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeSupervisorState;
    type Arguments = NodeSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        a: NodeSupervisorArgs,
    ) -> Result<NodeSupervisorState, ActorProcessingErr> {
        let mailbox = a.bus.register(NODE_AGENT)?;
        let node_agent = Arc::new(Slot::empty());
        let bridge = tokio::spawn(bridge(
            mailbox,
            node_agent.clone(),
            64,
            None,
            |b| NodeAgentMsg::Deliver(b.envelopes),
            |m| match m {
                NodeAgentMsg::Deliver(envs) => envs,
                _ => Vec::new(),
            },
        ));
        // Services first: agents' tools may need them from their first Call.
        let mut node_services = Vec::with_capacity(a.node_services.len());
        for service in a.node_services {
            let cell = service
                .spawn(a.services.clone(), myself.get_cell())
                .await
                .map_err(|e| format!("{} did not start: {e}", service.name()))?;
            node_services.push(Running {
                service,
                cell: Some(cell),
                restarts: VecDeque::new(),
            });
        }
        let mut hosted = BTreeMap::new();
        for spec in a.agents {
            let (id, name, capabilities) = (spec.id, spec.name.clone(), spec.capabilities.clone());
            let replay = crate::replay::ReplayAgent {
                planner: spec.planner.clone(),
                tools: spec.tools.clone(),
            };
            let args = AgentArgs {
                spec,
                bus: a.bus.clone(),
                policy: a.policy.clone(),
                services: a.services.clone(),
            };
            let (actor, _) =
                Actor::spawn_linked(None, AgentSupervisor, args, myself.get_cell()).await?;
            let view = match actor
                .call(AgentMsg::View, Some(Duration::from_secs(5)))
                .await
            {
                Ok(ractor::rpc::CallResult::Success(v)) => v,
                _ => return Err(format!("agent {id} did not start").into()),
            };
            hosted.insert(
                id,
                Hosted {
                    actor,
                    view,
                    name,
                    capabilities,
                    replay,
                },
            );
        }
        let st = NodeSupervisorState {
            hosted,
            node_agent,
            node_args: a.node_args,
            bridge,
            retiring: Vec::new(),
            node_services,
            services: a.services,
            policy: a.policy,
        };
        NodeSupervisor::spawn_node_agent(&myself, &st).await?;
        Ok(st)
    }

    async fn post_stop(
        &self,
        _: ActorRef<NodeMsg>,
        st: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        st.bridge.abort();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        st: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Retire(grace, port) => {
                for h in st.hosted.values() {
                    let _ = h
                        .actor
                        .call(
                            |p| AgentMsg::Control(Transition::Retire, p),
                            Some(Duration::from_secs(2)),
                        )
                        .await;
                }
                st.retiring.push(port);
                if st.hosted.is_empty() {
                    NodeSupervisor::answer_retiring(st);
                } else {
                    myself.send_after(grace, || NodeMsg::RetireDeadline);
                }
            }
            NodeMsg::RetireDeadline => NodeSupervisor::answer_retiring(st),
            NodeMsg::Farewell(port) => {
                // If the node agent is restarting, the port is dropped and
                // the caller stops waiting: peers then learn it by the TTL.
                let _ = st.node_agent.cast(NodeAgentMsg::Farewell(port));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        evt: SupervisionEvent,
        st: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                reason
                    .filter(|r| r != "terminated")
                    .map(|r| format!("stopped: {r}")),
            ),
            _ => return Ok(()),
        };
        let why = failure.clone().unwrap_or_else(|| "stopped".into());
        if NodeSupervisor::restart_service(&myself, st, &cell, &why).await {
            return Ok(());
        }
        if st.node_agent.holds(&cell) {
            metrics::counter!("mxp_actor_restarts_total", "actor" => "node_agent").increment(1);
            error!(
                "node agent failed ({}); restarting",
                failure.unwrap_or_default()
            );
            NodeSupervisor::spawn_node_agent(&myself, st).await?;
            return Ok(());
        }
        let gone: Vec<AgentId> = st
            .hosted
            .iter()
            .filter(|(_, h)| h.actor.get_id() == cell.get_id())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            st.hosted.remove(&id);
            let _ = st.node_agent.cast(NodeAgentMsg::Gone(id));
            match &failure {
                Some(why) => {
                    metrics::counter!("mxp_actor_restarts_total", "actor" => "agent_supervisor")
                        .increment(1);
                    error!(agent = %id, "agent stopped: {why}");
                }
                None => info!(agent = %id, "agent retired"),
            }
        }
        if st.hosted.is_empty() && !st.retiring.is_empty() {
            NodeSupervisor::answer_retiring(st);
        }
        Ok(())
    }
}
