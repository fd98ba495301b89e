//! The flow rule at the gate: labelled data (a file read, a secret) may
//! reach a sink's arguments only where policy permits that flow.
//!
//! Which labels reach a step is decided by [`mxp_governance::flow`]
//! (pure); this asks the policy about each one, before the step's own
//! decision, and denies the step naming the first source it may not take.

use mxp_governance::flow::FlowSource;
use mxp_governance::policy::{Decision, Outcome};

use super::{Denial, Facts, Gate, Intent};
use crate::tool::EffectClass;

/// The reason a flow denial names when no policy decided it.
pub const FLOW_NOT_PERMITTED: &str = "flow_not_permitted";

/// Whether a tool of this effect class is a sink: its arguments leave the
/// node (`http.fetch`, `shell.exec`, any external write).
pub fn is_sink(effect: EffectClass) -> bool {
    effect == EffectClass::ExternalWrite
}

impl Gate {
    /// Decides whether each of `sources` may flow into `intent`'s
    /// arguments, in order; the first that may not is the denial.
    ///
    /// # Errors
    /// [`Denial`] naming the source (its plan step) and the determining
    /// policies, with the permit that would allow it as the remedy.
    pub fn check_flow(
        &self,
        intent: &Intent,
        sources: &[FlowSource],
        node: mxp_protocol::Fingerprint,
        now_unix_ms: u64,
    ) -> Result<(), Denial> {
        if sources.is_empty() {
            return Ok(());
        }
        let facts = Facts {
            node,
            now_unix_secs: i64::try_from(now_unix_ms / 1000).unwrap_or(i64::MAX),
            budget_spent: 0,
            approved_by: None,
        };
        let policy = self.policy();
        for source in sources {
            let outcome = policy.decide_flow(intent, source, &facts);
            let decision = if outcome.decision == Decision::Allow {
                "allow"
            } else {
                "deny"
            };
            metrics::counter!("mxp_flow_decisions_total", "decision" => decision).increment(1);
            if outcome.decision != Decision::Allow {
                return Err(denial(intent, source, outcome));
            }
        }
        Ok(())
    }
}

fn denial(intent: &Intent, source: &FlowSource, outcome: Outcome) -> Denial {
    let why = match (outcome.decision, outcome.reasons.is_empty()) {
        (Decision::RequireApproval, _) => format!(
            "the flow needs an approval ({}), which a flow cannot wait for",
            outcome.reasons.join(", ")
        ),
        (_, true) => format!(
            "no policy permits the flow from {} into {} (deny by default)",
            source.entity_id(),
            intent.tool
        ),
        (_, false) => format!("forbidden by {}", outcome.reasons.join(", ")),
    };
    let reasons = if outcome.reasons.is_empty() {
        vec![FLOW_NOT_PERMITTED.to_owned()]
    } else {
        outcome.reasons
    };
    Denial {
        tool: intent.tool.clone(),
        effect: intent.effect,
        reasons,
        message: format!("{source} reaches its arguments: {why}"),
        remedy: outcome.remedy.map(Box::new),
    }
}
