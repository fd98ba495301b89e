//! The agent kernel's lifecycle: a pure state machine.
//!
//! ```text
//!            Boot          Activate         Suspend
//!   Init ─────────▶ Ready ─────────▶ Active ─────────▶ Suspended
//!                     │                ▲  │    Resume      │
//!                     │                │  └────────────────┘ (Resume: Suspended ▶ Active)
//!                     │ Retire         │ Retire            │ Retire
//!                     ▼                ▼                   ▼
//!                  Retiring ◀──────────┴───────────────────┘
//!                     │ Terminate
//!                     ▼
//!                 Terminated ◀── Abort (from any state but Terminated)
//! ```
//!
//! Only `Active` handles Calls. `Suspended` answers with a retriable
//! `agent_unavailable`; `Init` and `Ready` likewise (the agent is starting);
//! `Retiring` and `Terminated` answer `agent_retired`.

use std::fmt;
use std::str::FromStr;

use mxp_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// Created; hooks not yet run.
    Init,
    /// Bootstrapped; not yet taking Calls.
    Ready,
    /// Taking Calls.
    Active,
    /// Paused by an operator; Calls are refused as retriable.
    Suspended,
    /// Finishing in-flight work before stopping; new Calls are refused.
    Retiring,
    /// Stopped for good.
    Terminated,
}

/// A request to move between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Init → Ready, after `on_bootstrap`.
    Boot,
    /// Ready → Active.
    Activate,
    /// Active → Suspended.
    Suspend,
    /// Suspended → Active.
    Resume,
    /// Ready, Active or Suspended → Retiring.
    Retire,
    /// Retiring → Terminated, once drained (or the drain deadline passed).
    Terminate,
    /// Any state but Terminated → Terminated, at once.
    Abort,
}

/// A transition the current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition} an agent that is {from}")]
pub struct InvalidTransition {
    /// The state.
    pub from: LifecycleState,
    /// The refused transition.
    pub transition: Transition,
}

impl LifecycleState {
    /// The state after `t`, or why `t` is not allowed here.
    ///
    /// ```
    /// use mxp_actors::{LifecycleState::*, Transition::*};
    /// assert_eq!(Active.apply(Suspend), Ok(Suspended));
    /// assert!(Terminated.apply(Resume).is_err());
    /// ```
    ///
    /// # Errors
    /// [`InvalidTransition`] naming the state and the transition.
    pub const fn apply(self, t: Transition) -> Result<LifecycleState, InvalidTransition> {
        use LifecycleState::*;
        use Transition::*;
        match (self, t) {
            (Init, Boot) => Ok(Ready),
            (Ready, Activate) => Ok(Active),
            (Active, Suspend) => Ok(Suspended),
            (Suspended, Resume) => Ok(Active),
            (Ready | Active | Suspended, Retire) => Ok(Retiring),
            (Retiring, Terminate) => Ok(Terminated),
            (Init | Ready | Active | Suspended | Retiring, Abort) => Ok(Terminated),
            (from, transition) => Err(InvalidTransition { from, transition }),
        }
    }

    /// Whether Calls are handled in this state.
    pub const fn accepts_calls(self) -> bool {
        matches!(self, LifecycleState::Active)
    }

    /// The Error a Call gets in this state, or `None` in `Active`.
    pub fn call_refusal(self) -> Option<(ErrorCode, String)> {
        let code = match self {
            LifecycleState::Active => return None,
            LifecycleState::Init | LifecycleState::Ready | LifecycleState::Suspended => {
                ErrorCode::AGENT_UNAVAILABLE
            }
            LifecycleState::Retiring | LifecycleState::Terminated => ErrorCode::AGENT_RETIRED,
        };
        Some((code, format!("agent is {self}")))
    }

    /// How discovery and `agents.list` show an agent in this state:
    /// `online` (Active), `suspended`, `starting` (Init, Ready) or
    /// `retiring` (Retiring, Terminated).
    pub const fn discovery_status(self) -> &'static str {
        match self {
            LifecycleState::Active => "online",
            LifecycleState::Suspended => "suspended",
            LifecycleState::Init | LifecycleState::Ready => "starting",
            LifecycleState::Retiring | LifecycleState::Terminated => "retiring",
        }
    }

    /// Every state, in lifecycle order.
    pub const ALL: [LifecycleState; 6] = [
        LifecycleState::Init,
        LifecycleState::Ready,
        LifecycleState::Active,
        LifecycleState::Suspended,
        LifecycleState::Retiring,
        LifecycleState::Terminated,
    ];

    /// The state's name, e.g. `active`.
    pub const fn name(self) -> &'static str {
        match self {
            LifecycleState::Init => "init",
            LifecycleState::Ready => "ready",
            LifecycleState::Active => "active",
            LifecycleState::Suspended => "suspended",
            LifecycleState::Retiring => "retiring",
            LifecycleState::Terminated => "terminated",
        }
    }
}

impl fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Transition {
    /// Every transition.
    pub const ALL: [Transition; 7] = [
        Transition::Boot,
        Transition::Activate,
        Transition::Suspend,
        Transition::Resume,
        Transition::Retire,
        Transition::Terminate,
        Transition::Abort,
    ];

    /// The transition's name, e.g. `suspend`.
    pub const fn name(self) -> &'static str {
        match self {
            Transition::Boot => "boot",
            Transition::Activate => "activate",
            Transition::Suspend => "suspend",
            Transition::Resume => "resume",
            Transition::Retire => "retire",
            Transition::Terminate => "terminate",
            Transition::Abort => "abort",
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Transition {
    type Err = String;

    fn from_str(s: &str) -> Result<Transition, String> {
        Transition::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown transition {s:?} (known: boot, activate, suspend, resume, retire, terminate, abort)"))
    }
}

#[cfg(test)]
mod tests {
    use super::LifecycleState::*;
    use super::Transition::*;
    use super::*;

    #[test]
    fn the_full_table() {
        // Every (state, transition) pair: exactly these are allowed.
        let allowed = [
            (Init, Boot, Ready),
            (Ready, Activate, Active),
            (Active, Suspend, Suspended),
            (Suspended, Resume, Active),
            (Ready, Retire, Retiring),
            (Active, Retire, Retiring),
            (Suspended, Retire, Retiring),
            (Retiring, Terminate, Terminated),
            (Init, Abort, Terminated),
            (Ready, Abort, Terminated),
            (Active, Abort, Terminated),
            (Suspended, Abort, Terminated),
            (Retiring, Abort, Terminated),
        ];
        for s in LifecycleState::ALL {
            for t in Transition::ALL {
                let expected = allowed
                    .iter()
                    .find(|(a, b, _)| *a == s && *b == t)
                    .map(|x| x.2);
                match (s.apply(t), expected) {
                    (Ok(got), Some(want)) => assert_eq!(got, want, "{s} {t}"),
                    (Err(e), None) => assert_eq!((e.from, e.transition), (s, t)),
                    (got, want) => panic!("{s} {t}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn only_active_takes_calls_and_refusals_are_coded() {
        for s in LifecycleState::ALL {
            assert_eq!(s.accepts_calls(), s == Active);
            assert_eq!(s.call_refusal().is_none(), s == Active);
        }
        assert!(Suspended.call_refusal().unwrap().0.retriable());
        assert_eq!(Retiring.call_refusal().unwrap().0, ErrorCode::AGENT_RETIRED);
        assert!(!Terminated.call_refusal().unwrap().0.retriable());
    }

    #[test]
    fn transitions_parse_by_name() {
        assert_eq!("Suspend".parse(), Ok(Suspend));
        assert!("pause".parse::<Transition>().unwrap_err().contains("known"));
        assert_eq!(
            Active.apply(Boot).unwrap_err().to_string(),
            "cannot boot an agent that is active"
        );
    }
}
