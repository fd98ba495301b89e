//! The registry's pure core: agents on this node and on the mesh, who owns
//! each, and when each was last heard of. Time is an input.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mxp_protocol::{AgentId, AgentInfo, AgentRegister, Heartbeat};
use mxp_transport::{MxpUrl, PeerId};

/// Who registered an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// It runs on this node.
    Local,
    /// A peer node registered it; the peer's TLS identity.
    Peer(PeerId),
}

/// One agent the registry knows.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    /// Id.
    pub agent_id: AgentId,
    /// Name.
    pub name: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// The node it runs on.
    pub node: MxpUrl,
    /// Who registered it.
    pub owner: Owner,
    /// When it was last registered or named in a heartbeat.
    pub last_seen: Instant,
    /// How long it stays online without news.
    pub ttl: Duration,
    /// Whether it is considered reachable.
    pub online: bool,
}

impl AgentRecord {
    /// As a discovery answer lists it.
    pub fn info(&self) -> AgentInfo {
        AgentInfo {
            agent_id: self.agent_id,
            name: self.name.clone(),
            capabilities: self.capabilities.clone(),
            endpoint: self.node.clone().with_agent(self.agent_id).to_string(),
            status: if self.online { "online" } else { "offline" }.to_owned(),
        }
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another peer registered this id first.
    #[error(
        "agent {agent} is registered by another peer ({owner}); a peer can only register its own agents"
    )]
    OwnedByAnotherPeer {
        /// The agent.
        agent: AgentId,
        /// Its owner's fingerprint.
        owner: PeerId,
    },
    /// The id belongs to an agent of this node (running, or retired).
    #[error("agent {0} belongs to this node; a peer cannot register it")]
    Local(AgentId),
    /// The nil id addresses a node's own agent.
    #[error("the nil agent id addresses a node itself and cannot be registered")]
    Reserved,
    /// The registration names no address to reach the agent at.
    #[error("agent {0} has no reachable endpoint (0.0.0.0:0); advertise the node's address")]
    NoEndpoint(AgentId),
}

/// The registry table.
#[derive(Debug, Default)]
pub struct RegistryTable {
    agents: HashMap<AgentId, AgentRecord>,
    /// Mesh nodes: URL by peer identity.
    nodes: HashMap<PeerId, MxpUrl>,
    /// Ids of agents this node hosted and retired: never claimable by a peer.
    retired: std::collections::HashSet<AgentId>,
}

impl RegistryTable {
    /// An empty table.
    pub fn new() -> RegistryTable {
        RegistryTable::default()
    }

    /// Adds or updates an agent of this node.
    pub fn upsert_local(
        &mut self,
        agent_id: AgentId,
        name: &str,
        capabilities: &[String],
        node: &MxpUrl,
        now: Instant,
    ) {
        self.agents.insert(
            agent_id,
            AgentRecord {
                agent_id,
                name: name.to_owned(),
                capabilities: capabilities.to_vec(),
                node: node.clone(),
                owner: Owner::Local,
                last_seen: now,
                ttl: Duration::MAX,
                online: true,
            },
        );
    }

    /// Removes an agent of this node. Its id stays this node's: no peer can
    /// register it afterwards (a retired agent's callers must not reach an
    /// impostor).
    pub fn remove_local(&mut self, agent_id: &AgentId) {
        if self
            .agents
            .get(agent_id)
            .is_some_and(|r| r.owner == Owner::Local)
        {
            self.agents.remove(agent_id);
            self.retired.insert(*agent_id);
        }
    }

    /// The record of `agent`, online or not.
    pub fn get(&self, agent: &AgentId) -> Option<&AgentRecord> {
        self.agents.get(agent)
    }

    /// Records a registration from peer `from`. The node URL is the
    /// registration's endpoint; identity comes from `from`, never from the
    /// payload, and an id another peer owns is refused.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub fn register_remote(
        &mut self,
        reg: &AgentRegister,
        from: PeerId,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), RegistryError> {
        if reg.agent_id == mxp_transport::NODE_AGENT {
            return Err(RegistryError::Reserved);
        }
        if reg.endpoint.port() == 0 || reg.endpoint.ip().is_unspecified() {
            return Err(RegistryError::NoEndpoint(reg.agent_id));
        }
        if self.retired.contains(&reg.agent_id) {
            return Err(RegistryError::Local(reg.agent_id));
        }
        match self.agents.get(&reg.agent_id).map(|r| r.owner) {
            Some(Owner::Local) => return Err(RegistryError::Local(reg.agent_id)),
            Some(Owner::Peer(owner)) if owner != from => {
                return Err(RegistryError::OwnedByAnotherPeer {
                    agent: reg.agent_id,
                    owner,
                });
            }
            _ => {}
        }
        let node = MxpUrl::new(reg.endpoint.ip().to_string(), reg.endpoint.port(), None);
        self.nodes.insert(from, node.clone());
        self.agents.insert(
            reg.agent_id,
            AgentRecord {
                agent_id: reg.agent_id,
                name: reg.name.clone(),
                capabilities: reg.capabilities.clone(),
                node,
                owner: Owner::Peer(from),
                last_seen: now,
                ttl,
                online: true,
            },
        );
        Ok(())
    }

    /// Refreshes the agents a heartbeat from `from` names (only those `from`
    /// owns). Returns how many were refreshed.
    pub fn heartbeat(&mut self, hb: &Heartbeat, from: PeerId, now: Instant) -> usize {
        let ttl = Duration::from_secs(u64::from(hb.ttl_secs.max(1)));
        let mut n = 0;
        for id in &hb.agents {
            if let Some(r) = self.agents.get_mut(id)
                && r.owner == Owner::Peer(from)
            {
                r.last_seen = now;
                r.ttl = ttl;
                r.online = true;
                n += 1;
            }
        }
        n
    }

    /// Marks agents not heard of within their TTL offline; returns them.
    pub fn sweep(&mut self, now: Instant) -> Vec<AgentId> {
        let mut gone = Vec::new();
        for r in self.agents.values_mut() {
            if r.online
                && r.owner != Owner::Local
                && now.saturating_duration_since(r.last_seen) > r.ttl
            {
                r.online = false;
                gone.push(r.agent_id);
            }
        }
        gone
    }

    /// Agents with `capability`, online ones first, at most `limit`.
    pub fn discover(&self, capability: &str, limit: usize) -> Vec<AgentInfo> {
        let mut found: Vec<&AgentRecord> = self
            .agents
            .values()
            .filter(|r| r.capabilities.iter().any(|c| c == capability))
            .collect();
        found.sort_by_key(|r| (!r.online, r.name.clone(), r.agent_id));
        found
            .into_iter()
            .take(limit)
            .map(AgentRecord::info)
            .collect()
    }

    /// Where to forward a Call for `agent`: the node of an online remote agent.
    pub fn route(&self, agent: &AgentId) -> Option<&MxpUrl> {
        self.agents
            .get(agent)
            .filter(|r| r.online && r.owner != Owner::Local)
            .map(|r| &r.node)
    }

    /// Whether `peer` is a known mesh node.
    pub fn is_node(&self, peer: &PeerId) -> bool {
        self.nodes.contains_key(peer)
    }

    /// Mesh nodes known (URLs).
    pub fn node_urls(&self) -> Vec<MxpUrl> {
        let mut v: Vec<MxpUrl> = self.nodes.values().cloned().collect();
        v.sort_by_key(MxpUrl::to_string);
        v.dedup();
        v
    }

    /// Every record, sorted by name.
    pub fn records(&self) -> Vec<&AgentRecord> {
        let mut v: Vec<&AgentRecord> = self.agents.values().collect();
        v.sort_by_key(|r| (r.name.clone(), r.agent_id));
        v
    }

    /// Remote agents online and offline.
    pub fn remote_counts(&self) -> (usize, usize) {
        let remote = self.agents.values().filter(|r| r.owner != Owner::Local);
        remote.fold((0, 0), |(on, off), r| {
            if r.online {
                (on + 1, off)
            } else {
                (on, off + 1)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV4;

    fn peer(n: u8) -> PeerId {
        PeerId::from_spki(&[n])
    }

    fn reg(id: u8, caps: &[&str]) -> AgentRegister {
        AgentRegister {
            agent_id: AgentId::from_bytes([id; 16]),
            name: format!("agent-{id}"),
            capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
            endpoint: SocketAddrV4::new([127, 0, 0, 1].into(), 9001),
        }
    }

    #[test]
    fn a_peer_cannot_take_an_id_another_peer_or_this_node_owns() {
        let now = Instant::now();
        let mut t = RegistryTable::new();
        let ttl = Duration::from_secs(10);
        t.register_remote(&reg(1, &["x"]), peer(1), ttl, now)
            .unwrap();
        // The owner may re-register.
        t.register_remote(&reg(1, &["x", "y"]), peer(1), ttl, now)
            .unwrap();
        assert!(matches!(
            t.register_remote(&reg(1, &["x"]), peer(2), ttl, now),
            Err(RegistryError::OwnedByAnotherPeer { .. })
        ));
        let url: MxpUrl = "mxp://127.0.0.1:9000".parse().unwrap();
        t.upsert_local(AgentId::from_bytes([5; 16]), "local", &[], &url, now);
        assert_eq!(
            t.register_remote(&reg(5, &[]), peer(2), ttl, now),
            Err(RegistryError::Local(AgentId::from_bytes([5; 16])))
        );
        let mut no_ep = reg(6, &[]);
        no_ep.endpoint = SocketAddrV4::new([0, 0, 0, 0].into(), 0);
        assert!(matches!(
            t.register_remote(&no_ep, peer(2), ttl, now),
            Err(RegistryError::NoEndpoint(_))
        ));
    }

    #[test]
    fn a_retired_local_id_and_the_nil_id_cannot_be_claimed() {
        let now = Instant::now();
        let mut t = RegistryTable::new();
        let ttl = Duration::from_secs(10);
        let url: MxpUrl = "mxp://127.0.0.1:9000".parse().unwrap();
        t.upsert_local(AgentId::from_bytes([5; 16]), "local", &[], &url, now);
        t.remove_local(&AgentId::from_bytes([5; 16]));
        assert!(t.get(&AgentId::from_bytes([5; 16])).is_none());
        assert_eq!(
            t.register_remote(&reg(5, &[]), peer(2), ttl, now),
            Err(RegistryError::Local(AgentId::from_bytes([5; 16])))
        );
        assert_eq!(
            t.register_remote(&reg(0, &[]), peer(2), ttl, now),
            Err(RegistryError::Reserved)
        );
    }

    #[test]
    fn heartbeats_keep_agents_online_until_the_ttl_passes() {
        let t0 = Instant::now();
        let mut t = RegistryTable::new();
        t.register_remote(&reg(1, &["x"]), peer(1), Duration::from_secs(3), t0)
            .unwrap();
        t.register_remote(&reg(2, &["x"]), peer(2), Duration::from_secs(3), t0)
            .unwrap();
        // A heartbeat from peer 2 naming agent 1 does not refresh it.
        let hb = Heartbeat {
            agents: vec![AgentId::from_bytes([1; 16]), AgentId::from_bytes([2; 16])],
            ttl_secs: 3,
        };
        assert_eq!(t.heartbeat(&hb, peer(2), t0 + Duration::from_secs(2)), 1);
        assert!(t.sweep(t0 + Duration::from_secs(3)).is_empty());
        assert_eq!(
            t.sweep(t0 + Duration::from_secs(4)),
            vec![AgentId::from_bytes([1; 16])]
        );
        assert_eq!(t.route(&AgentId::from_bytes([1; 16])), None);
        assert!(t.route(&AgentId::from_bytes([2; 16])).is_some());
        assert_eq!(t.remote_counts(), (1, 1));
        // Offline agents are still discoverable, listed after online ones.
        let found = t.discover("x", 10);
        assert_eq!(
            found.iter().map(|a| a.status.as_str()).collect::<Vec<_>>(),
            vec!["online", "offline"]
        );
        assert_eq!(
            found[0].endpoint,
            format!("mxp://127.0.0.1:9001/{}", AgentId::from_bytes([2; 16]))
        );
        // A later heartbeat brings it back.
        t.heartbeat(
            &Heartbeat {
                agents: vec![AgentId::from_bytes([1; 16])],
                ttl_secs: 3,
            },
            peer(1),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(t.remote_counts(), (2, 0));
    }

    #[test]
    fn discover_filters_by_capability_and_limits() {
        let now = Instant::now();
        let mut t = RegistryTable::new();
        for i in 1..=5 {
            t.register_remote(
                &reg(i, if i % 2 == 0 { &["even"] } else { &["odd"] }),
                peer(i),
                Duration::from_secs(9),
                now,
            )
            .unwrap();
        }
        assert_eq!(t.discover("odd", 10).len(), 3);
        assert_eq!(t.discover("odd", 2).len(), 2);
        assert!(t.discover("none", 10).is_empty());
        assert!(t.is_node(&peer(3)));
        assert_eq!(
            t.node_urls().len(),
            1,
            "all five registered from the same endpoint"
        );
    }
}
