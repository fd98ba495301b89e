//! Node-wide services beside the agents (the skill runner): actors the node
//! supervisor starts before the hosted agents and restarts when they fail.
//!
//! A crate that provides such a component (it may depend on this one, as
//! `mxp-skills` does) implements [`NodeService`]; the node's settings list
//! them ([`crate::NodeSettings::node_services`]). A service that fails or is
//! killed is started again with a fresh state, its restart counted in
//! `mxp_actor_restarts_total{actor="<name>"}` and recorded in the audit log
//! (`actor_restart`), up to `supervision.max_restarts` within
//! `supervision.restart_window_ms`; past that it stays down and the node
//! goes on without it (its callers get errors saying so).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ractor::{ActorCell, SpawnErr};

use crate::services::Services;

/// A node-wide component run as a supervised actor.
pub trait NodeService: Send + Sync + 'static {
    /// Its name in logs, metrics and the audit log (e.g. `skill_runner`).
    fn name(&self) -> &'static str;

    /// Spawns its actor linked to `supervisor` (ractor's `spawn_linked`),
    /// with the node's `services` (the gate, the audit log); called at
    /// start and again after every failure. Returns the actor's cell.
    ///
    /// # Errors
    /// The actor could not start. At the node's start this stops the node
    /// from starting; at a restart the service stays down.
    ///
    /// # Cancel safety
    /// Not cancel safe: the node supervisor always awaits it.
    fn spawn(
        &self,
        services: Arc<Services>,
        supervisor: ActorCell,
    ) -> BoxFuture<'_, Result<ActorCell, SpawnErr>>;
}
