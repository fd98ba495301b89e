//! Budgets and rate limits per agent and per session, shared by the node's
//! gate (the pure book is `mxp_governance::budget`).

use std::sync::Mutex;

use mxp_governance::budget::{BudgetBook, BudgetError};
use mxp_protocol::{AgentId, SessionId};
use serde_json::Value;

use super::GateSettings;

/// The node's budget book.
pub struct Budgets {
    book: Mutex<BudgetBook>,
    /// Whether any limit is set: with none, nothing is tracked (so Calls
    /// that each start a session cannot fill the book).
    enabled: bool,
}

fn unlimited(l: &mxp_governance::budget::BudgetLimits) -> bool {
    l.calls.is_none() && l.bytes.is_none() && l.wall_ms.is_none() && l.fuel.is_none()
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets").finish_non_exhaustive()
    }
}

/// The bytes an intent's arguments count for (their JSON length, bounded
/// by the body limits the Call was parsed within).
pub(crate) fn arg_bytes(args: &Value) -> u64 {
    match args {
        Value::Null => 0,
        other => serde_json::to_vec(other).map_or(0, |v| v.len() as u64),
    }
}

impl Budgets {
    pub(crate) fn new(settings: &GateSettings) -> Budgets {
        Budgets {
            enabled: !(unlimited(&settings.agent_budget) && unlimited(&settings.session_budget)),
            book: Mutex::new(BudgetBook::new(
                settings.agent_budget,
                settings.session_budget,
                settings.max_budget_entries,
            )),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, BudgetBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any limit is set (with none, nothing is tracked and nothing
    /// need be measured).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Tool calls spent in the session's window (Cedar's `budget_spent`).
    pub fn spent(&self, agent: AgentId, session: &SessionId, now_ms: u64) -> u64 {
        if !self.enabled {
            return 0;
        }
        self.book().spent(agent, session, now_ms)
    }

    /// Charges one tool call of `bytes` argument bytes, or refuses.
    ///
    /// # Errors
    /// [`BudgetError`] naming the budget and when it resets.
    pub fn admit(
        &self,
        agent: AgentId,
        session: &SessionId,
        bytes: u64,
        now_ms: u64,
    ) -> Result<(), BudgetError> {
        if !self.enabled {
            return Ok(());
        }
        self.book().admit(agent, session, bytes, now_ms)
    }

    /// Charges what a finished tool call used.
    pub fn record(
        &self,
        agent: AgentId,
        session: &SessionId,
        output_bytes: u64,
        wall_ms: u64,
        fuel: u64,
        now_ms: u64,
    ) {
        if !self.enabled {
            return;
        }
        self.book()
            .record(agent, session, output_bytes, wall_ms, fuel, now_ms);
    }
}
