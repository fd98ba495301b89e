//! Why the gate refused: typed, with the determining policies and a remedy
//! the planner (or a person) can act on.

use mxp_governance::budget::BudgetError;
use mxp_governance::policy::{Outcome, Remedy};
use mxp_governance::token::TokenError;
use serde_json::{Value, json};

use super::{Intent, Pending};
use crate::tool::EffectClass;

/// The reason a kill-switch denial names.
pub const KILL_SWITCH: &str = "kill_switch";
/// The reason a budget denial names.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

/// Why the gate refused an intent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{tool} ({effect}) denied: {message}{}", remedy.as_ref().map(|r| format!("; {}", remedy_text(r))).unwrap_or_default())]
pub struct Denial {
    /// The tool or method refused.
    pub tool: String,
    /// Its effect class.
    pub effect: EffectClass,
    /// The determining policy ids, or `kill_switch`, `budget_exceeded`, ….
    pub reasons: Vec<String>,
    /// Why, for a person.
    pub message: String,
    /// What would change the answer.
    pub remedy: Option<Box<Remedy>>,
}

/// The gate's refusal.
#[derive(Debug)]
#[non_exhaustive]
pub enum Refusal {
    /// Denied.
    Denied(Denial),
    /// Allowed once approved: the pending approval, and the intent back,
    /// to ask again once it is decided.
    NeedsApproval {
        /// The pending approval.
        pending: Pending,
        /// The intent.
        intent: Box<Intent>,
    },
}

/// A remedy in words.
pub fn remedy_text(r: &Remedy) -> String {
    match r {
        Remedy::MissingPermission { action, resource } => {
            format!("no policy permits action {action} on {resource}: an operator may add a permit")
        }
        Remedy::Approval { requirements } => {
            let who: Vec<String> = requirements.iter().map(ToString::to_string).collect();
            format!("needs approval by {}", who.join(" and "))
        }
        Remedy::BudgetExceeded { resets_at } => {
            format!("the budget resets at unix time {resets_at}")
        }
        _ => "no remedy known".to_owned(),
    }
}

/// A remedy as the Error's `details.remedy`.
pub fn remedy_json(r: &Remedy) -> Value {
    match r {
        Remedy::MissingPermission { action, resource } => {
            json!({"kind": "missing_permission", "action": action, "resource": resource})
        }
        Remedy::Approval { requirements } => json!({
            "kind": "approval",
            "approvers": requirements
                .iter()
                .map(|q| json!({"kind": q.approver().name(), "count": q.count()}))
                .collect::<Vec<_>>(),
        }),
        Remedy::BudgetExceeded { resets_at } => {
            json!({"kind": "budget_exceeded", "resets_at": resets_at})
        }
        _ => json!({"kind": "unknown"}),
    }
}

impl Denial {
    /// The denial of a policy outcome.
    pub fn from_outcome(intent: &Intent, outcome: Outcome) -> Denial {
        let message = if outcome.reasons.is_empty() {
            "no policy permits it (deny by default)".to_owned()
        } else if outcome.remedy.is_none() && outcome.reasons.iter().any(|r| r.contains(' ')) {
            format!(
                "policy evaluation failed, so it is denied: {}",
                outcome.reasons.join("; ")
            )
        } else {
            format!("forbidden by {}", outcome.reasons.join(", "))
        };
        Denial {
            tool: intent.tool.clone(),
            effect: intent.effect,
            reasons: outcome.reasons,
            message,
            remedy: outcome.remedy.map(Box::new),
        }
    }

    /// The kill switch is on.
    pub fn kill_switch(intent: &Intent) -> Denial {
        Denial {
            tool: intent.tool.clone(),
            effect: intent.effect,
            reasons: vec![KILL_SWITCH.to_owned()],
            message: "the kill switch is on: every external write is denied (`mxp killswitch off` releases it)".to_owned(),
            remedy: None,
        }
    }

    /// A budget is spent.
    pub fn budget(intent: &Intent, e: &BudgetError) -> Denial {
        let resets_at = match e {
            BudgetError::Exceeded(x) => x.resets_at_unix_secs(),
            _ => 0,
        };
        Denial {
            tool: intent.tool.clone(),
            effect: intent.effect,
            reasons: vec![BUDGET_EXCEEDED.to_owned()],
            message: e.to_string(),
            remedy: matches!(e, BudgetError::Exceeded(_))
                .then(|| Box::new(Remedy::BudgetExceeded { resets_at })),
        }
    }

    /// No token could be minted (fails closed).
    pub fn token(intent: &Intent, e: &TokenError) -> Denial {
        Denial {
            tool: intent.tool.clone(),
            effect: intent.effect,
            reasons: vec!["token_refused".to_owned()],
            message: format!("no capability token could be minted: {e}"),
            remedy: None,
        }
    }

    /// The Error's `details`: `{"reasons": [...], "remedy": {...}}`.
    pub fn details(&self) -> Value {
        let mut d =
            json!({ "reasons": self.reasons, "tool": self.tool, "effect": self.effect.name() });
        if let (Some(r), Some(map)) = (&self.remedy, d.as_object_mut()) {
            map.insert("remedy".to_owned(), remedy_json(r));
        }
        d
    }
}
