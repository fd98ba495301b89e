//! The skill-runner actor: holds the runner of the verified skills, records
//! each quarantine in the audit log, and fails (to be restarted by the node
//! supervisor, which verifies the skills again) when an invocation panics.
//!
//! It is thin: invocations do not pass through it. A skill tool takes the
//! current runner from the shared slot and runs the skill on a blocking
//! thread, holding one of the pool's permits ([`crate::tool`]).

use std::sync::Arc;

use mxp_actors::Services;
use mxp_actors::audit::{self, EventKind};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::service::{Loaded, Quarantined, Shared, verify_and_load};

/// Messages to the skill runner.
pub(crate) enum SkillMsg {
    /// An invocation panicked: fail, so the node supervisor restarts the
    /// runner and it verifies the skills again.
    Crashed(String),
}

pub(crate) struct SkillActor;

pub(crate) struct SkillState {
    shared: Arc<Shared>,
}

/// The audit record of one quarantine.
fn quarantine_event(q: &Quarantined) -> mxp_governance::audit::AuditEvent {
    audit::event(
        EventKind::SkillQuarantine,
        serde_json::json!({
            "name": q.name,
            "expected": q.expected,
            "actual": q.actual,
            "quarantined_to": q.quarantined_to.display().to_string(),
        }),
        None,
        None,
        0,
    )
}

impl Actor for SkillActor {
    type Msg = SkillMsg;
    type State = SkillState;
    type Arguments = (Arc<Shared>, Arc<Services>);

    async fn pre_start(
        &self,
        myself: ActorRef<SkillMsg>,
        (shared, services): (Arc<Shared>, Arc<Services>),
    ) -> Result<SkillState, ActorProcessingErr> {
        let loaded: Loaded = match shared.take_first() {
            Some(first) => first,
            None => {
                // A restart: the folder may have changed since the last
                // verification; hashing and compiling are blocking work.
                let s = shared.clone();
                tokio::task::spawn_blocking(move || verify_and_load(&s.settings))
                    .await
                    .map_err(|e| format!("skill verification did not finish: {e}"))?
                    .map_err(|e| format!("skills could not be verified: {e}"))?
            }
        };
        if !loaded.quarantined.is_empty() {
            let events = loaded.quarantined.iter().map(quarantine_event).collect();
            // The modules are already refused and moved; a log that cannot
            // record it is reported, and the runner serves the others.
            if let Err(e) = services.auditor().record(events).await {
                tracing::error!("skill quarantines could not be recorded in the audit log: {e}");
            }
        }
        shared.set_runner(Some(Arc::new(loaded.runner)));
        shared.set_actor(Some(myself));
        Ok(SkillState { shared })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SkillMsg>,
        st: &mut SkillState,
    ) -> Result<(), ActorProcessingErr> {
        st.shared.set_runner(None);
        st.shared.set_actor(None);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SkillMsg>,
        msg: SkillMsg,
        st: &mut SkillState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SkillMsg::Crashed(why) => {
                // No more invocations on a runner that panicked: until the
                // restart verifies and compiles afresh, skill calls are
                // answered that the runner is restarting.
                st.shared.set_runner(None);
                Err(format!("a skill invocation panicked: {why}").into())
            }
        }
    }
}
