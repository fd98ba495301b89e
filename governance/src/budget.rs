//! Budgets and rate limits: how many tool calls, bytes, milliseconds of
//! wall time and units of skill fuel an agent, and one session of an
//! agent, may spend in a fixed window.
//!
//! Two scopes, each with its own [`BudgetLimits`]: per agent, and per
//! (agent, session). Before a tool call the caller asks
//! [`BudgetBook::admit`] (one more call and its argument bytes must fit in
//! both scopes, and neither may have spent its wall time or fuel); after
//! the call it reports what the call used with [`BudgetBook::record`]
//! (output bytes, wall time, fuel: these may overshoot, and the next admit
//! is refused). [`BudgetBook::spent`] is the session's call count for
//! Cedar's `context.budget_spent`
//! ([`RequestContext::with_budget_spent`](crate::policy::RequestContext::with_budget_spent)),
//! and a refusal feeds
//! [`Outcome::budget_exceeded`](crate::policy::Outcome::budget_exceeded)
//! (see [`BudgetExceeded::resets_at_unix_secs`]).
//!
//! # Windows
//!
//! A key's window opens at its first charge (time `t`) and ends at
//! `t + window_ms`: from then on (`now >= t + window_ms`) the key's counts
//! are zero again, and the next charge opens a new window. Time is an input
//! and may go backwards (a time before the window's start counts in the
//! window).
//!
//! # Memory bound
//!
//! At most `max_entries` keys (agents plus (agent, session) pairs) are
//! tracked. A key whose window has ended holds nothing a fresh key would
//! not, so when a new key needs room the book first forgets ended entries,
//! earliest-ended first (O(log n) each; which ended entry goes makes no
//! difference to any decision). If every tracked key is in a live window,
//! [`BudgetBook::admit`] refuses with [`BudgetError::TooManyTracked`]: a
//! caller opening sessions cannot grow the book, and cannot reset a live
//! session's or agent's counts by pushing it out.
//!
//! ```
//! use mxp_governance::budget::{BudgetBook, BudgetError, BudgetLimits, Resource, Scope};
//! use mxp_protocol::{AgentId, SessionId};
//!
//! let per_session = BudgetLimits { calls: Some(2), ..BudgetLimits::default() };
//! let mut book = BudgetBook::new(BudgetLimits::default(), per_session, 10_000);
//! let (agent, session) = (AgentId::from_bytes([1; 16]), "s-1".parse::<SessionId>()?);
//! book.admit(agent, &session, 100, 0)?;
//! book.admit(agent, &session, 100, 1_000)?;
//! let Err(BudgetError::Exceeded(e)) = book.admit(agent, &session, 100, 2_000) else {
//!     panic!("a third call in the window is refused");
//! };
//! assert_eq!((e.scope, e.resource, e.limit, e.spent), (Scope::Session, Resource::Calls, 2, 2));
//! assert_eq!(e.to_string(), "budget_exceeded: session tool calls 2/2, resets at 60000 ms");
//! book.admit(agent, &session, 100, 60_000)?; // a new window
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod book;

use std::fmt;

pub use book::{BudgetBook, Usage};

/// What one scope may spend in one window. `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BudgetLimits {
    /// Tool calls admitted.
    pub calls: Option<u64>,
    /// Argument bytes (charged at admit) plus output bytes (at record).
    pub bytes: Option<u64>,
    /// Milliseconds of wall time the calls took.
    pub wall_ms: Option<u64>,
    /// Skill fuel the calls burnt.
    pub fuel: Option<u64>,
    /// The window's length in milliseconds (0 is taken as 1).
    pub window_ms: u64,
}

impl BudgetLimits {
    /// The default window: one minute.
    pub const DEFAULT_WINDOW_MS: u64 = 60_000;

    /// No limit on anything, in windows of `window_ms`.
    pub const fn unlimited(window_ms: u64) -> BudgetLimits {
        BudgetLimits {
            calls: None,
            bytes: None,
            wall_ms: None,
            fuel: None,
            window_ms,
        }
    }

    /// The limit on `resource`.
    pub const fn limit(&self, resource: Resource) -> Option<u64> {
        match resource {
            Resource::Calls => self.calls,
            Resource::Bytes => self.bytes,
            Resource::WallTime => self.wall_ms,
            Resource::Fuel => self.fuel,
        }
    }
}

impl Default for BudgetLimits {
    /// Everything unlimited, windows of [`DEFAULT_WINDOW_MS`](Self::DEFAULT_WINDOW_MS).
    fn default() -> BudgetLimits {
        BudgetLimits::unlimited(BudgetLimits::DEFAULT_WINDOW_MS)
    }
}

/// Whose budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The agent's, over all its sessions.
    Agent,
    /// One session's of the agent.
    Session,
}

impl Scope {
    /// `agent` or `session`.
    pub const fn name(self) -> &'static str {
        match self {
            Scope::Agent => "agent",
            Scope::Session => "session",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Resource {
    /// Tool calls.
    Calls,
    /// Argument and output bytes.
    Bytes,
    /// Wall time, in milliseconds.
    WallTime,
    /// Skill fuel.
    Fuel,
}

impl Resource {
    /// `tool calls`, `bytes`, `wall time ms`, `fuel`.
    pub const fn name(self) -> &'static str {
        match self {
            Resource::Calls => "tool calls",
            Resource::Bytes => "bytes",
            Resource::WallTime => "wall time ms",
            Resource::Fuel => "fuel",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A budget that does not admit the call: which, how much is spent, and
/// when its window ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct BudgetExceeded {
    /// Whose budget.
    pub scope: Scope,
    /// Which resource.
    pub resource: Resource,
    /// The limit.
    pub limit: u64,
    /// What the window has spent so far (before this call).
    pub spent: u64,
    /// What this call asks for on top: 1 call, its argument bytes, or 0
    /// for wall time and fuel (refused once spent up to the limit).
    pub requested: u64,
    /// When the window ends and the counts reset.
    pub resets_at_unix_ms: u64,
}

impl BudgetExceeded {
    /// [`resets_at_unix_ms`](Self::resets_at_unix_ms) in unix seconds,
    /// rounded up (for
    /// [`Outcome::budget_exceeded`](crate::policy::Outcome::budget_exceeded)).
    pub fn resets_at_unix_secs(&self) -> i64 {
        i64::try_from(self.resets_at_unix_ms.div_ceil(1000)).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "budget_exceeded: {} {} {}/{}",
            self.scope, self.resource, self.spent, self.limit
        )?;
        if self.resource == Resource::Bytes {
            write!(f, " (+{} asked)", self.requested)?;
        }
        write!(f, ", resets at {} ms", self.resets_at_unix_ms)
    }
}

/// Why [`BudgetBook::admit`] refuses a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// A budget is spent.
    #[error(transparent)]
    Exceeded(#[from] BudgetExceeded),
    /// The book tracks `limit` keys, every one in a live window: a new
    /// agent or session cannot be tracked until a window ends.
    #[error(
        "budget_tracking_full: {limit} agents and sessions have live budget windows; retry when one ends"
    )]
    TooManyTracked {
        /// The book's `max_entries`.
        limit: usize,
    },
}
