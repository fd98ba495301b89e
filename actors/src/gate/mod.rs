//! The one decision point every effect passes.
//!
//! Every plan step, hook reply, node control method and forward becomes an
//! [`Intent`] (who asked, for which agent, in which session, which tool with
//! which effect class and arguments). The [`Gate`] checks, in this order:
//!
//! 1. the [kill switch](KillSwitch): while it is on, every external-write
//!    intent is denied, whatever policy or approvals say;
//! 2. the [`Policy`] (the node's Cedar set, [`CedarPolicy`]): `allow`,
//!    `deny`, or `require_approval`, with the determining policy ids;
//! 3. for `require_approval`: an approval already given for this exact
//!    intent ([`Approvals`]), or a new pending one;
//! 4. the budgets of the agent and the session ([`Budgets`]);
//!
//! and only then returns an [`Allowed`], carrying a capability token for a
//! tool intent, minted here and nowhere else ([`Minter`]). A tool's execute
//! takes a [`Grant`], which only the [`Enforcer`] makes, after verifying that
//! token against the intent and re-checking the kill switch. Neither
//! `Allowed` nor `Grant` has a public constructor: nothing acts without
//! passing here.
//!
//! Decisions are synchronous and run in the calling task against an
//! immutable snapshot of the policy set; what changes the gate's state
//! (a reload, a vote, the kill switch) is done by the node agent, one
//! request at a time.

mod approvals;
mod budgets;
mod cedar;
mod denial;
mod flow;
mod killswitch;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests;
mod token;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mxp_protocol::{AgentId, Fingerprint, PrincipalId, SessionId};
use mxp_transport::Principal;
use serde_json::Value;

use approvals::Resolved;
pub use approvals::{ApprovalWait, Approvals, Pending, VoteError};
pub use budgets::Budgets;
pub(crate) use budgets::arg_bytes;
pub use cedar::{
    CedarPolicy, IntentView, PolicySource, flow_request, intent_request, view_request,
};
pub use denial::{BUDGET_EXCEEDED, Denial, KILL_SWITCH, Refusal, remedy_json, remedy_text};
pub use flow::{FLOW_NOT_PERMITTED, is_sink};
pub use killswitch::{InFlight, InFlightGuard, KillSwitch};
pub use mxp_governance::budget::BudgetLimits;
pub use mxp_governance::policy::{ApprovalRequirement, Decision, Outcome, Remedy, Zone};
pub(crate) use token::keys;
pub use token::{EnforceError, Enforcer, Grant, Minter};

use crate::tool::EffectClass;

/// The pseudo-tool a hook's reply is gated as (read-only).
pub const HOOK_REPLY: &str = "hook.reply";

/// Something a Call wants done, before it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// Who asked (authenticated; resolved to an operator where configured).
    pub principal: Principal,
    /// The agent acting (the node agent's nil id for control and forwards).
    pub agent: AgentId,
    /// The session, when the Call runs in one.
    pub session: Option<SessionId>,
    /// The tool, control method (`agent.retire`) or pseudo-tool
    /// (`hook.reply`, `mesh.forward`).
    pub tool: String,
    /// What it does to the world.
    pub effect: EffectClass,
    /// Its arguments.
    pub args: Value,
    /// The Call's trace id.
    pub trace_id: u64,
    /// The Call's message id.
    pub message_id: u64,
}

/// What a policy knows besides the intent: inputs, never read by the policy
/// itself (no clock, no payload fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// This node.
    pub node: Fingerprint,
    /// Now, unix seconds.
    pub now_unix_secs: i64,
    /// Tool calls already spent in the intent's session window.
    pub budget_spent: u64,
    /// The approvers, once the approval this intent needed was given.
    pub approved_by: Option<Vec<PrincipalId>>,
}

/// Decides intents. Pure and synchronous: it must not block.
pub trait Policy: Send + Sync + 'static {
    /// The decision for `intent`, given `facts`.
    fn decide(&self, intent: &Intent, facts: &Facts) -> Outcome;

    /// Whether labelled data from `source` may reach `intent`'s arguments
    /// (the flow rule, docs/BROKER.md). Denied unless a policy says
    /// otherwise: the default denies every flow.
    fn decide_flow(
        &self,
        _intent: &Intent,
        _source: &mxp_governance::flow::FlowSource,
        _facts: &Facts,
    ) -> Outcome {
        Outcome::deny(Vec::new(), None)
    }

    /// The decision for a recorded intent (replay, what-if): what
    /// [`Policy::decide`] answers for a live intent with this description.
    /// `None`: this policy cannot decide from a description alone (the
    /// default; [`CedarPolicy`] can).
    fn decide_recorded(&self, intent: &IntentView<'_>, facts: &Facts) -> Option<Outcome> {
        let _ = (intent, facts);
        None
    }
}

/// How to make this machine's CLI an operator, for denial messages.
pub const OPERATOR_REMEDY: &str = "add the caller's fingerprint to node.operators (`mxp identity` prints the setting to paste) and restart the node";

/// Proof that the gate allowed this exact intent. Only [`Gate::check`]
/// makes one. A tool intent's carries the capability token the
/// [`Enforcer`] verifies before the tool runs.
#[derive(Debug)]
pub struct Allowed {
    intent: Intent,
    token: Option<mxp_governance::token::Token>,
    reasons: Vec<String>,
    facts: Facts,
}

impl Allowed {
    /// The intent that was allowed: a tool acts on these arguments only.
    pub fn intent(&self) -> &Intent {
        &self.intent
    }

    /// The allowed intent, to act on.
    pub fn into_intent(self) -> Intent {
        self.intent
    }

    /// The determining policies.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// The capability token minted for this intent (tool intents only).
    pub fn token(&self) -> Option<&mxp_governance::token::Token> {
        self.token.as_ref()
    }

    /// The facts the policy decided with (time, budget spent, approvers):
    /// the inputs a replay needs to decide again.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }
}

/// The settings of a gate.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    /// How long a minted token is valid.
    pub token_ttl: Duration,
    /// How long a Call waits for an approval before it is answered
    /// `approval_required` (the approval stays pending).
    pub approval_wait: Duration,
    /// How long a pending approval may be decided (and an approved one
    /// used) before it expires.
    pub approval_ttl: Duration,
    /// Pending approvals held at most.
    pub max_pending_approvals: usize,
    /// Per-agent budgets.
    pub agent_budget: BudgetLimits,
    /// Per-session budgets.
    pub session_budget: BudgetLimits,
    /// Agents and sessions whose budgets are tracked at once, at most.
    pub max_budget_entries: usize,
    /// Token nonces remembered for replay protection, at most.
    pub max_nonces: usize,
    /// How the flow rule finds labelled data in a sink's arguments.
    pub flow_mode: mxp_governance::flow::FlowMode,
}

impl Default for GateSettings {
    fn default() -> GateSettings {
        GateSettings {
            token_ttl: Duration::from_secs(30),
            approval_wait: Duration::from_secs(30),
            approval_ttl: Duration::from_secs(3600),
            max_pending_approvals: 1024,
            agent_budget: BudgetLimits::default(),
            session_budget: BudgetLimits::default(),
            max_budget_entries: 65_536,
            max_nonces: 1 << 20,
            flow_mode: mxp_governance::flow::FlowMode::Content,
        }
    }
}

struct Inner {
    policy: RwLock<Arc<dyn Policy>>,
    kill: KillSwitch,
    approvals: Approvals,
    budgets: Budgets,
    settings: GateSettings,
}

/// The decision point: a policy (swappable at once), the kill switch,
/// approvals and budgets, and the only maker of [`Allowed`].
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("kill_switch", &self.inner.kill.is_on())
            .finish_non_exhaustive()
    }
}

impl Default for Gate {
    /// The shipped default Cedar set, default settings, nothing persisted.
    fn default() -> Gate {
        Gate::with_policy(Arc::new(CedarPolicy::default_set()))
    }
}

/// Unix milliseconds now.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Gate {
    /// A gate deciding with `policy`. With a `store`, the kill switch and
    /// approvals are read from it now and written to it on every change.
    ///
    /// # Errors
    /// [`crate::store::StoreError`] when the store cannot be read.
    pub fn new(
        policy: Arc<dyn Policy>,
        settings: GateSettings,
        store: Option<Arc<crate::store::Store>>,
    ) -> Result<Gate, crate::store::StoreError> {
        let kill = KillSwitch::new(store.clone());
        kill.load()?;
        let approvals = Approvals::open(store, settings.max_pending_approvals)?;
        Ok(Gate {
            inner: Arc::new(Inner {
                policy: RwLock::new(policy),
                kill,
                approvals,
                budgets: Budgets::new(&settings),
                settings,
            }),
        })
    }

    /// A gate deciding with `policy`, default settings, nothing persisted.
    pub fn with_policy(policy: Arc<dyn Policy>) -> Gate {
        let settings = GateSettings::default();
        Gate {
            inner: Arc::new(Inner {
                policy: RwLock::new(policy),
                kill: KillSwitch::new(None),
                approvals: Approvals::in_memory(settings.max_pending_approvals),
                budgets: Budgets::new(&settings),
                settings,
            }),
        }
    }

    /// Sets the gate's gauges (kill switch, approvals pending) from its
    /// state: the node calls it at start, once a metrics recorder may be
    /// installed.
    pub fn publish_metrics(&self) {
        let on = self.inner.kill.is_on();
        metrics::gauge!("mxp_kill_switch").set(if on { 1.0 } else { 0.0 });
        metrics::gauge!("mxp_approvals_pending").set(self.inner.approvals.pending_count() as f64);
    }

    /// The settings.
    pub fn settings(&self) -> &GateSettings {
        &self.inner.settings
    }

    /// The kill switch.
    pub fn kill_switch(&self) -> &KillSwitch {
        &self.inner.kill
    }

    /// The approvals.
    pub fn approvals(&self) -> &Approvals {
        &self.inner.approvals
    }

    /// The budgets.
    pub fn budgets(&self) -> &Budgets {
        &self.inner.budgets
    }

    /// Replaces the policy at once: a decision sees the old set or the new
    /// one, never a mix.
    pub fn replace_policy(&self, policy: Arc<dyn Policy>) {
        *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// The policy deciding now (a snapshot: a reload afterwards does not
    /// change it).
    pub fn current_policy(&self) -> Arc<dyn Policy> {
        self.policy()
    }

    fn policy(&self) -> Arc<dyn Policy> {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Decides `intent` for node `node`: the proof to act on it (with a
    /// token from `minter` for a tool intent in a session), or why not.
    ///
    /// # Errors
    /// [`Refusal::Denied`] when the kill switch, the policy or a budget
    /// refuses; [`Refusal::NeedsApproval`] when the policy asks for an
    /// approval not yet given (the pending approval is created).
    pub fn check(&self, intent: Intent, minter: &Minter) -> Result<Allowed, Refusal> {
        let now_ms = now_unix_ms();
        let now_secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        if intent.effect == EffectClass::ExternalWrite && self.inner.kill.is_on() {
            return Err(count(Refusal::Denied(Denial::kill_switch(&intent))));
        }
        // Only with a limit set: measuring arguments costs a serialisation.
        let budgeted =
            self.inner.budgets.is_enabled() && intent.session.is_some() && is_tool(&intent);
        let spent = match (&intent.session, budgeted) {
            (Some(s), true) => self.inner.budgets.spent(intent.agent, s, now_ms),
            _ => 0,
        };
        let mut facts = Facts {
            node: minter.node(),
            now_unix_secs: now_secs,
            budget_spent: spent,
            approved_by: None,
        };
        let policy = self.policy();
        let mut outcome = policy.decide(&intent, &facts);
        if outcome.decision == Decision::RequireApproval {
            let requirements = match &outcome.remedy {
                Some(Remedy::Approval { requirements }) => requirements.clone(),
                _ => Vec::new(),
            };
            match self.inner.approvals.resolve(
                &intent,
                &outcome.reasons,
                requirements,
                now_ms,
                &self.inner.settings,
            ) {
                Resolved::Approved(approvers) => {
                    facts.approved_by = Some(approvers);
                    outcome = policy.decide(&intent, &facts);
                }
                Resolved::Pending(pending) => {
                    return Err(count(Refusal::NeedsApproval {
                        pending,
                        intent: Box::new(intent),
                    }));
                }
                Resolved::Denied(d) => return Err(count(Refusal::Denied(d))),
            }
        }
        match outcome.decision {
            Decision::Allow => {}
            Decision::RequireApproval => {
                // Approved, and still asking: the policy is not satisfied
                // by these approvers. Fail closed.
                return Err(count(Refusal::Denied(Denial::from_outcome(
                    &intent, outcome,
                ))));
            }
            _ => {
                return Err(count(Refusal::Denied(Denial::from_outcome(
                    &intent, outcome,
                ))));
            }
        }
        if let (Some(session), true) = (&intent.session, budgeted) {
            let bytes = arg_bytes(&intent.args);
            if let Err(e) = self
                .inner
                .budgets
                .admit(intent.agent, session, bytes, now_ms)
            {
                return Err(count(Refusal::Denied(Denial::budget(&intent, &e))));
            }
        }
        let token = match (&intent.session, is_tool(&intent)) {
            (Some(session), true) => Some(
                minter
                    .mint(&intent, session, now_ms, self.inner.settings.token_ttl)
                    .map_err(|e| count(Refusal::Denied(Denial::token(&intent, &e))))?,
            ),
            _ => None,
        };
        metrics::counter!("mxp_policy_decisions_total", "decision" => "allow", "effect" => intent.effect.name())
            .increment(1);
        Ok(Allowed {
            intent,
            token,
            reasons: outcome.reasons,
            facts,
        })
    }
}

/// Whether the intent runs a tool (not node control and not a forward).
fn is_tool(intent: &Intent) -> bool {
    intent.agent != mxp_transport::NODE_AGENT && intent.tool != HOOK_REPLY
}

fn count(r: Refusal) -> Refusal {
    let (decision, effect) = match &r {
        Refusal::Denied(d) => ("deny", d.effect),
        Refusal::NeedsApproval { intent, .. } => ("require_approval", intent.effect),
    };
    metrics::counter!("mxp_policy_decisions_total", "decision" => decision, "effect" => effect.name())
        .increment(1);
    r
}
