//! The registry's pure core: agents on this node and on the mesh, who owns
//! each, and when each was last heard of. Time is an input.
//!
//! Bounded and indexed: at most `max_agents_per_peer` agents per registering
//! identity and `max_remote_agents` in all; records live in an id-ordered
//! map with a capability index, so register, heartbeat, discover and a page
//! of the list cost O(log n) (plus the page), never a sort of the table. A
//! record offline for `forget_after` is forgotten, and its id is free again.
//! Each registering identity has one endpoint: Calls for its agents are
//! forwarded there, and only to a node presenting that identity.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::time::{Duration, Instant};

use mxp_protocol::{AgentId, AgentInfo, AgentRegister, Heartbeat};
use mxp_transport::{MxpUrl, PeerId};

use crate::LifecycleState;

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
    /// Name (chosen by its registrant: not a key).
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
    /// Whether it is considered reachable (for a local agent: Active).
    pub online: bool,
    /// For a local agent, its lifecycle state.
    pub local_state: Option<LifecycleState>,
}

impl AgentRecord {
    /// As a discovery answer lists it; `me` is this node's identity, the
    /// owner of its local agents.
    pub fn info(&self, me: &PeerId) -> AgentInfo {
        let (owner, local) = match self.owner {
            Owner::Local => (*me, true),
            Owner::Peer(p) => (p, false),
        };
        AgentInfo {
            agent_id: self.agent_id,
            name: self.name.clone(),
            capabilities: self.capabilities.clone(),
            endpoint: self.node.clone().with_agent(self.agent_id).to_string(),
            status: match self.local_state {
                Some(state) => state.discovery_status(),
                None if self.online => "online",
                None => "offline",
            }
            .to_owned(),
            owner: owner.to_string(),
            local,
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
    /// The registration names this node's own address.
    #[error("agent {0} is registered at this node's own address; a node never forwards to itself")]
    OwnEndpoint(AgentId),
    /// The registering peer holds as many agents as it may.
    #[error(
        "this peer has registered {0} agents, the most one peer may (mesh.max_agents_per_peer)"
    )]
    TooManyForPeer(usize),
    /// The table holds as many remote agents as it may.
    #[error("this node knows {0} remote agents, the most it holds (mesh.max_remote_agents)")]
    Full(usize),
    /// The remote records would hold more bytes than the registry may.
    #[error(
        "this node's registry holds {0} bytes of remote agents' names and capabilities, the most it holds (mesh.max_registry_bytes)"
    )]
    TooManyBytes(usize),
    /// The table knows as many mesh nodes as it may.
    #[error("this node knows {0} mesh nodes, the most it holds (mesh.max_nodes)")]
    TooManyNodes(usize),
}

/// Bounds of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Agents one registering identity may hold.
    pub max_agents_per_peer: usize,
    /// Remote agents in all.
    pub max_remote_agents: usize,
    /// Mesh nodes (registering identities) in all.
    pub max_nodes: usize,
    /// A record offline this long is forgotten; its id is free again.
    pub forget_after: Duration,
    /// Bytes of remote agents' names and capabilities held in all.
    pub max_bytes: usize,
}

impl Default for RegistryLimits {
    fn default() -> RegistryLimits {
        RegistryLimits {
            max_agents_per_peer: 1024,
            max_remote_agents: 65_536,
            max_nodes: 256,
            forget_after: Duration::from_secs(600),
            max_bytes: 64 << 20,
        }
    }
}

/// What a sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Agents that went offline.
    pub offline: Vec<AgentId>,
    /// Records forgotten (offline longer than `forget_after`).
    pub forgotten: Vec<AgentId>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The entries, in agent id order.
    pub items: Vec<T>,
    /// Where the next page starts (pass as `after`); `None`: this was the last.
    pub next: Option<AgentId>,
}

/// Bytes a record's name and capabilities count for.
fn record_bytes(name: &str, capabilities: &[String]) -> usize {
    name.len() + capabilities.iter().map(|c| c.len() + 8).sum::<usize>() + 64
}

/// The registry table.
#[derive(Debug)]
pub struct RegistryTable {
    agents: BTreeMap<AgentId, AgentRecord>,
    by_capability: BTreeMap<String, BTreeSet<AgentId>>,
    /// Each registering peer's agents (what bounds it, and what moves with
    /// it to a new endpoint).
    per_peer: HashMap<PeerId, BTreeSet<AgentId>>,
    /// Remote records in all (the sizes of `per_peer` summed).
    remote: usize,
    /// Bytes of remote records' names and capabilities.
    remote_bytes: usize,
    /// Mesh nodes: one endpoint per registering identity.
    nodes: BTreeMap<PeerId, MxpUrl>,
    /// Ids of agents this node hosted and retired: never claimable by a peer.
    retired: HashSet<AgentId>,
    /// This node's identity, and its own URL (never a registered endpoint).
    me: PeerId,
    own_url: Option<MxpUrl>,
    limits: RegistryLimits,
}

impl Default for RegistryTable {
    fn default() -> RegistryTable {
        RegistryTable::new()
    }
}

impl RegistryTable {
    /// An empty table with default limits, for a node whose identity is
    /// not known (tests); see [`RegistryTable::for_node`].
    pub fn new() -> RegistryTable {
        RegistryTable::for_node(PeerId::from_spki(&[]), None, RegistryLimits::default())
    }

    /// An empty table of the node `me`, reachable at `own_url`.
    pub fn for_node(me: PeerId, own_url: Option<MxpUrl>, limits: RegistryLimits) -> RegistryTable {
        RegistryTable {
            agents: BTreeMap::new(),
            by_capability: BTreeMap::new(),
            per_peer: HashMap::new(),
            remote: 0,
            remote_bytes: 0,
            nodes: BTreeMap::new(),
            retired: HashSet::new(),
            me,
            own_url,
            limits,
        }
    }

    fn index(&mut self, r: &AgentRecord) {
        for c in &r.capabilities {
            self.by_capability
                .entry(c.clone())
                .or_default()
                .insert(r.agent_id);
        }
    }

    fn unindex(&mut self, r: &AgentRecord) {
        for c in &r.capabilities {
            if let Some(set) = self.by_capability.get_mut(c) {
                set.remove(&r.agent_id);
                if set.is_empty() {
                    self.by_capability.remove(c);
                }
            }
        }
    }

    /// Removes a record and everything that points at it.
    fn forget(&mut self, id: &AgentId) -> Option<AgentRecord> {
        let r = self.agents.remove(id)?;
        self.unindex(&r);
        if let Owner::Peer(p) = r.owner {
            self.remote = self.remote.saturating_sub(1);
            self.remote_bytes = self
                .remote_bytes
                .saturating_sub(record_bytes(&r.name, &r.capabilities));
            let left = self.per_peer.get_mut(&p).map(|ids| {
                ids.remove(&r.agent_id);
                ids.len()
            });
            if left == Some(0) {
                self.per_peer.remove(&p);
                self.nodes.remove(&p);
            }
        }
        Some(r)
    }

    fn insert(&mut self, r: AgentRecord) {
        self.index(&r);
        if let Owner::Peer(p) = r.owner {
            self.per_peer.entry(p).or_default().insert(r.agent_id);
            self.remote += 1;
            self.remote_bytes += record_bytes(&r.name, &r.capabilities);
        }
        self.agents.insert(r.agent_id, r);
    }

    /// Adds or updates an agent of this node, in lifecycle `state`.
    pub fn upsert_local(
        &mut self,
        agent_id: AgentId,
        name: &str,
        capabilities: &[String],
        node: &MxpUrl,
        state: LifecycleState,
        now: Instant,
    ) {
        let online = state == LifecycleState::Active;
        if let Some(r) = self.agents.get_mut(&agent_id)
            && r.owner == Owner::Local
            && r.name == name
            && r.capabilities == capabilities
            && r.node == *node
        {
            r.last_seen = now;
            r.online = online;
            r.local_state = Some(state);
            return;
        }
        self.forget(&agent_id);
        self.insert(AgentRecord {
            agent_id,
            name: name.to_owned(),
            capabilities: capabilities.to_vec(),
            node: node.clone(),
            owner: Owner::Local,
            last_seen: now,
            ttl: Duration::MAX,
            online,
            local_state: Some(state),
        });
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
            self.forget(agent_id);
            self.retired.insert(*agent_id);
        }
    }

    /// The record of `agent`, online or not.
    pub fn get(&self, agent: &AgentId) -> Option<&AgentRecord> {
        self.agents.get(agent)
    }

    /// Records a registration from peer `from`. Identity comes from `from`,
    /// never from the payload; the registration's endpoint becomes `from`'s
    /// endpoint for all its agents.
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
        let node = MxpUrl::new(reg.endpoint.ip().to_string(), reg.endpoint.port(), None);
        if from == self.me || self.own_url.as_ref() == Some(&node) {
            return Err(RegistryError::OwnEndpoint(reg.agent_id));
        }
        if self.retired.contains(&reg.agent_id) {
            return Err(RegistryError::Local(reg.agent_id));
        }
        match self.agents.get(&reg.agent_id) {
            Some(r) if r.owner == Owner::Local => return Err(RegistryError::Local(reg.agent_id)),
            Some(r) if r.owner != Owner::Peer(from) => {
                let expired = !r.online
                    && now.saturating_duration_since(r.last_seen)
                        > r.ttl.saturating_add(self.limits.forget_after);
                if !expired {
                    let Owner::Peer(owner) = r.owner else {
                        return Err(RegistryError::Local(reg.agent_id));
                    };
                    return Err(RegistryError::OwnedByAnotherPeer {
                        agent: reg.agent_id,
                        owner,
                    });
                }
            }
            _ => {}
        }
        let existing = self
            .agents
            .get(&reg.agent_id)
            .is_some_and(|r| r.owner == Owner::Peer(from));
        if !existing {
            let held = self.per_peer.get(&from).map_or(0, BTreeSet::len);
            if held >= self.limits.max_agents_per_peer {
                return Err(RegistryError::TooManyForPeer(held));
            }
            if self.remote >= self.limits.max_remote_agents {
                return Err(RegistryError::Full(self.remote));
            }
            if !self.nodes.contains_key(&from) && self.nodes.len() >= self.limits.max_nodes {
                return Err(RegistryError::TooManyNodes(self.nodes.len()));
            }
        }
        let replaced = self
            .agents
            .get(&reg.agent_id)
            .map_or(0, |r| record_bytes(&r.name, &r.capabilities));
        let bytes = self.remote_bytes - replaced.min(self.remote_bytes)
            + record_bytes(&reg.name, &reg.capabilities);
        if bytes > self.limits.max_bytes {
            return Err(RegistryError::TooManyBytes(self.remote_bytes));
        }
        // An expired record of another owner, or this peer's own: replaced.
        self.forget(&reg.agent_id);
        if self.nodes.get(&from) != Some(&node) {
            // The peer moved: all its agents (at most max_agents_per_peer,
            // found by its own index, not a scan of the table) are reached
            // at the new endpoint.
            let moved: Vec<AgentId> = self
                .per_peer
                .get(&from)
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default();
            for id in moved {
                if let Some(r) = self.agents.get_mut(&id) {
                    r.node = node.clone();
                }
            }
            self.nodes.insert(from, node.clone());
        }
        self.insert(AgentRecord {
            agent_id: reg.agent_id,
            name: reg.name.clone(),
            capabilities: reg.capabilities.clone(),
            node,
            owner: Owner::Peer(from),
            last_seen: now,
            ttl,
            online: true,
            local_state: None,
        });
        Ok(())
    }

    /// Refreshes the agents a heartbeat from `from` names (only those `from`
    /// owns). A heartbeat with `ttl_secs` 0 (sent by a node that is shutting
    /// down) marks them offline at once. Returns how many were refreshed.
    pub fn heartbeat(&mut self, hb: &Heartbeat, from: PeerId, now: Instant) -> usize {
        let leaving = hb.ttl_secs == 0;
        let ttl = Duration::from_secs(u64::from(hb.ttl_secs.max(1)));
        let mut n = 0;
        for id in &hb.agents {
            if let Some(r) = self.agents.get_mut(id)
                && r.owner == Owner::Peer(from)
            {
                r.last_seen = now;
                r.ttl = ttl;
                r.online = !leaving;
                n += 1;
            }
        }
        n
    }

    /// Marks agents not heard of within their TTL offline, and forgets those
    /// offline for longer than `forget_after`. O(n) in the table: run once
    /// per heartbeat interval, not per frame.
    pub fn sweep(&mut self, now: Instant) -> Swept {
        let mut swept = Swept::default();
        for r in self.agents.values_mut() {
            if r.owner == Owner::Local {
                continue;
            }
            let quiet = now.saturating_duration_since(r.last_seen);
            if r.online && quiet > r.ttl {
                r.online = false;
                swept.offline.push(r.agent_id);
            } else if !r.online && quiet > r.ttl.saturating_add(self.limits.forget_after) {
                swept.forgotten.push(r.agent_id);
            }
        }
        for id in &swept.forgotten {
            self.forget(id);
        }
        swept
    }

    /// Agents with `capability` after `after` (exclusive), in id order, at
    /// most `limit`.
    pub fn discover(
        &self,
        capability: &str,
        after: Option<AgentId>,
        limit: usize,
    ) -> Page<AgentInfo> {
        let Some(ids) = self.by_capability.get(capability) else {
            return Page {
                items: Vec::new(),
                next: None,
            };
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut items = Vec::new();
        let mut next = None;
        for id in ids.range((start, Bound::Unbounded)) {
            if items.len() == limit {
                next = items.last().map(|i: &AgentInfo| i.agent_id);
                break;
            }
            if let Some(r) = self.agents.get(id) {
                items.push(r.info(&self.me));
            }
        }
        Page { items, next }
    }

    /// Records after `after` (exclusive), in id order, at most `limit`.
    pub fn page(&self, after: Option<AgentId>, limit: usize) -> Page<&AgentRecord> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut items: Vec<&AgentRecord> = Vec::new();
        let mut next = None;
        for (_, r) in self.agents.range((start, Bound::Unbounded)) {
            if items.len() == limit {
                next = items.last().map(|i| i.agent_id);
                break;
            }
            items.push(r);
        }
        Page { items, next }
    }

    /// The node to forward a Call for `agent` to, and the identity it must
    /// present: an online remote agent's registrant.
    pub fn route(&self, agent: &AgentId) -> Option<(&MxpUrl, PeerId)> {
        let r = self.agents.get(agent).filter(|r| r.online)?;
        match r.owner {
            Owner::Peer(p) => self.nodes.get(&p).map(|url| (url, p)),
            Owner::Local => None,
        }
    }

    /// Whether `peer` is a known mesh node.
    pub fn is_node(&self, peer: &PeerId) -> bool {
        self.nodes.contains_key(peer)
    }

    /// Mesh nodes known (URLs), each once.
    pub fn node_urls(&self) -> Vec<MxpUrl> {
        let mut v: Vec<MxpUrl> = self.nodes.values().cloned().collect();
        v.sort_by_key(MxpUrl::to_string);
        v.dedup();
        v
    }

    /// Every record, in id order (for tests and small tables; pages for peers).
    pub fn records(&self) -> Vec<&AgentRecord> {
        self.agents.values().collect()
    }

    /// Remote agents held.
    pub fn remote_len(&self) -> usize {
        self.remote
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

    fn id(n: u8) -> AgentId {
        AgentId::from_bytes([n; 16])
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
        t.upsert_local(id(5), "local", &[], &url, LifecycleState::Active, now);
        assert_eq!(
            t.register_remote(&reg(5, &[]), peer(2), ttl, now),
            Err(RegistryError::Local(id(5)))
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
        t.upsert_local(id(5), "local", &[], &url, LifecycleState::Active, now);
        t.remove_local(&id(5));
        assert!(t.get(&id(5)).is_none());
        assert_eq!(
            t.register_remote(&reg(5, &[]), peer(2), ttl, now),
            Err(RegistryError::Local(id(5)))
        );
        assert_eq!(
            t.register_remote(&reg(0, &[]), peer(2), ttl, now),
            Err(RegistryError::Reserved)
        );
    }

    #[test]
    fn own_address_and_own_identity_are_refused() {
        let now = Instant::now();
        let me = peer(9);
        let own: MxpUrl = "mxp://127.0.0.1:9001".parse().unwrap();
        let mut t = RegistryTable::for_node(me, Some(own), RegistryLimits::default());
        let ttl = Duration::from_secs(10);
        assert_eq!(
            t.register_remote(&reg(1, &[]), peer(1), ttl, now),
            Err(RegistryError::OwnEndpoint(id(1)))
        );
        let mut elsewhere = reg(2, &[]);
        elsewhere.endpoint = SocketAddrV4::new([127, 0, 0, 1].into(), 9002);
        assert_eq!(
            t.register_remote(&elsewhere, me, ttl, now),
            Err(RegistryError::OwnEndpoint(id(2)))
        );
    }

    #[test]
    fn registrations_are_bounded_per_peer_in_all_and_in_nodes() {
        let now = Instant::now();
        let limits = RegistryLimits {
            max_agents_per_peer: 2,
            max_remote_agents: 3,
            max_nodes: 2,
            forget_after: Duration::from_secs(60),
            max_bytes: 1 << 20,
        };
        let mut t = RegistryTable::for_node(peer(0), None, limits);
        let ttl = Duration::from_secs(10);
        t.register_remote(&reg(1, &[]), peer(1), ttl, now).unwrap();
        t.register_remote(&reg(2, &[]), peer(1), ttl, now).unwrap();
        assert_eq!(
            t.register_remote(&reg(3, &[]), peer(1), ttl, now),
            Err(RegistryError::TooManyForPeer(2))
        );
        // Re-registering what it holds is not a new agent.
        t.register_remote(&reg(2, &["z"]), peer(1), ttl, now)
            .unwrap();
        t.register_remote(&reg(3, &[]), peer(2), ttl, now).unwrap();
        assert_eq!(
            t.register_remote(&reg(4, &[]), peer(2), ttl, now),
            Err(RegistryError::Full(3))
        );
        let limits = RegistryLimits {
            max_nodes: 2,
            ..RegistryLimits::default()
        };
        let mut t = RegistryTable::for_node(peer(0), None, limits);
        t.register_remote(&reg(1, &[]), peer(1), ttl, now).unwrap();
        t.register_remote(&reg(2, &[]), peer(2), ttl, now).unwrap();
        assert_eq!(
            t.register_remote(&reg(3, &[]), peer(3), ttl, now),
            Err(RegistryError::TooManyNodes(2))
        );
        // Bytes of names and capabilities are bounded too.
        let limits = RegistryLimits {
            max_bytes: 1000,
            ..RegistryLimits::default()
        };
        let mut t = RegistryTable::for_node(peer(0), None, limits);
        let big: Vec<&str> = vec!["c"; 100];
        t.register_remote(&reg(1, &big), peer(1), ttl, now).unwrap();
        assert!(matches!(
            t.register_remote(&reg(2, &big), peer(1), ttl, now),
            Err(RegistryError::TooManyBytes(_))
        ));
    }

    #[test]
    fn a_peer_that_moves_takes_all_its_agents_and_no_others() {
        let now = Instant::now();
        let mut t = RegistryTable::new();
        let ttl = Duration::from_secs(10);
        t.register_remote(&reg(1, &[]), peer(1), ttl, now).unwrap();
        t.register_remote(&reg(2, &[]), peer(1), ttl, now).unwrap();
        t.register_remote(&reg(3, &[]), peer(2), ttl, now).unwrap();
        let mut moved = reg(4, &[]);
        moved.endpoint = SocketAddrV4::new([127, 0, 0, 1].into(), 9100);
        t.register_remote(&moved, peer(1), ttl, now).unwrap();
        for n in [1, 2, 4] {
            assert_eq!(t.get(&id(n)).unwrap().node.port(), 9100, "agent {n}");
            assert_eq!(t.route(&id(n)).unwrap().0.port(), 9100);
        }
        assert_eq!(t.get(&id(3)).unwrap().node.port(), 9001);
    }

    #[test]
    fn offline_ownership_expires_and_the_id_is_free_again() {
        let t0 = Instant::now();
        let limits = RegistryLimits {
            forget_after: Duration::from_secs(30),
            ..RegistryLimits::default()
        };
        let mut t = RegistryTable::for_node(peer(0), None, limits);
        let ttl = Duration::from_secs(10);
        t.register_remote(&reg(1, &["x"]), peer(1), ttl, t0)
            .unwrap();
        let later = t0 + Duration::from_secs(11);
        assert_eq!(t.sweep(later).offline, vec![id(1)]);
        // Offline, but not yet forgotten: still the first owner's.
        assert!(matches!(
            t.register_remote(&reg(1, &["x"]), peer(2), ttl, later),
            Err(RegistryError::OwnedByAnotherPeer { .. })
        ));
        let much_later = t0 + Duration::from_secs(45);
        assert_eq!(t.sweep(much_later).forgotten, vec![id(1)]);
        assert!(!t.is_node(&peer(1)), "a node with no agents left is pruned");
        t.register_remote(&reg(1, &["x"]), peer(2), ttl, much_later)
            .unwrap();
        assert_eq!(t.get(&id(1)).unwrap().owner, Owner::Peer(peer(2)));
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
            agents: vec![id(1), id(2)],
            ttl_secs: 3,
        };
        assert_eq!(t.heartbeat(&hb, peer(2), t0 + Duration::from_secs(2)), 1);
        assert!(t.sweep(t0 + Duration::from_secs(3)).offline.is_empty());
        assert_eq!(t.sweep(t0 + Duration::from_secs(4)).offline, vec![id(1)]);
        assert_eq!(t.route(&id(1)), None);
        assert_eq!(t.route(&id(2)).map(|(_, p)| p), Some(peer(2)));
        assert_eq!(t.remote_counts(), (1, 1));
        // Offline agents are still discoverable, in id order, marked.
        let found = t.discover("x", None, 10).items;
        assert_eq!(
            found.iter().map(|a| a.status.as_str()).collect::<Vec<_>>(),
            vec!["offline", "online"]
        );
        assert_eq!(found[1].endpoint, format!("mxp://127.0.0.1:9001/{}", id(2)));
        assert_eq!(found[1].owner, peer(2).to_string());
        assert!(!found[1].local);
        // A later heartbeat brings it back; one with TTL 0 takes it down at once.
        let back = |ttl_secs| Heartbeat {
            agents: vec![id(1)],
            ttl_secs,
        };
        t.heartbeat(&back(3), peer(1), t0 + Duration::from_secs(5));
        assert_eq!(t.remote_counts(), (2, 0));
        t.heartbeat(&back(0), peer(1), t0 + Duration::from_secs(5));
        assert_eq!(t.remote_counts(), (1, 1));
    }

    #[test]
    fn discover_and_page_walk_in_id_order_by_cursor() {
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
        let first = t.discover("odd", None, 2);
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.next, Some(id(3)));
        let rest = t.discover("odd", first.next, 2);
        assert_eq!(
            rest.items.iter().map(|a| a.agent_id).collect::<Vec<_>>(),
            vec![id(5)]
        );
        assert_eq!(rest.next, None);
        assert!(t.discover("none", None, 10).items.is_empty());
        let p = t.page(Some(id(2)), 2);
        assert_eq!(
            p.items.iter().map(|r| r.agent_id).collect::<Vec<_>>(),
            vec![id(3), id(4)]
        );
        assert_eq!(p.next, Some(id(4)));
        assert!(t.is_node(&peer(3)));
        assert_eq!(
            t.node_urls().len(),
            1,
            "all five registered from the same endpoint"
        );
    }
}
