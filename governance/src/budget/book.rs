//! The budget book: fixed windows per agent and per (agent, session), with
//! a bounded number of tracked keys.

use std::collections::{BTreeMap, BTreeSet};

use mxp_protocol::{AgentId, SessionId};

use super::{BudgetError, BudgetExceeded, BudgetLimits, Resource, Scope};

/// A tracked key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Agent(AgentId),
    Session(AgentId, SessionId),
}

/// One key's current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// When it ends (`start + window_ms`, saturating); `now >= end` is ended.
    end: u64,
    calls: u64,
    bytes: u64,
    wall_ms: u64,
    fuel: u64,
}

impl Window {
    fn fresh(now_unix_ms: u64, window_ms: u64) -> Window {
        Window {
            end: now_unix_ms.saturating_add(window_ms),
            calls: 0,
            bytes: 0,
            wall_ms: 0,
            fuel: 0,
        }
    }

    const fn ended(&self, now_unix_ms: u64) -> bool {
        now_unix_ms >= self.end
    }

    const fn spent(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Calls => self.calls,
            Resource::Bytes => self.bytes,
            Resource::WallTime => self.wall_ms,
            Resource::Fuel => self.fuel,
        }
    }
}

/// What a scope has spent in its current window
/// ([`BudgetBook::session_usage`], [`BudgetBook::agent_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Usage {
    /// Tool calls admitted.
    pub calls: u64,
    /// Argument and output bytes.
    pub bytes: u64,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// Skill fuel.
    pub fuel: u64,
    /// When the window ends; `None` when no window is open (nothing spent).
    pub resets_at_unix_ms: Option<u64>,
}

/// Per-agent and per-session budgets in fixed windows; see the module
/// documentation for the windows and the memory bound.
#[derive(Debug, Clone)]
pub struct BudgetBook {
    per_agent: BudgetLimits,
    per_session: BudgetLimits,
    max_entries: usize,
    windows: BTreeMap<Key, Window>,
    /// (window end, key) of every tracked key, in step with `windows`.
    by_end: BTreeSet<(u64, Key)>,
}

impl BudgetBook {
    /// An empty book with these limits, tracking at most `max_entries` keys
    /// (agents plus sessions; raised to 2, what one call needs). A
    /// `window_ms` of 0 is taken as 1.
    pub fn new(
        per_agent: BudgetLimits,
        per_session: BudgetLimits,
        max_entries: usize,
    ) -> BudgetBook {
        let fix = |mut l: BudgetLimits| {
            l.window_ms = l.window_ms.max(1);
            l
        };
        BudgetBook {
            per_agent: fix(per_agent),
            per_session: fix(per_session),
            max_entries: max_entries.max(2),
            windows: BTreeMap::new(),
            by_end: BTreeSet::new(),
        }
    }

    /// The per-agent limits.
    pub const fn per_agent(&self) -> &BudgetLimits {
        &self.per_agent
    }

    /// The per-session limits.
    pub const fn per_session(&self) -> &BudgetLimits {
        &self.per_session
    }

    /// The most keys tracked.
    pub const fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Keys tracked now (some windows may have ended).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Admits one tool call of `agent` in `session` with `bytes` argument
    /// bytes at `now_unix_ms`, and charges it (1 call and `bytes`, in both
    /// scopes), if: in both scopes one more call and `bytes` more bytes fit
    /// their limits, and wall time and fuel are below theirs. A refusal
    /// charges nothing. The session scope is checked first.
    ///
    /// # Errors
    /// [`BudgetError::Exceeded`] naming the first budget that does not
    /// admit the call; [`BudgetError::TooManyTracked`] when the agent or the
    /// session is not tracked and every tracked key is in a live window.
    pub fn admit(
        &mut self,
        agent: AgentId,
        session: &SessionId,
        bytes: u64,
        now_unix_ms: u64,
    ) -> Result<(), BudgetError> {
        let agent_key = Key::Agent(agent);
        let session_key = Key::Session(agent, session.clone());
        let mut session_window =
            self.current(&session_key, self.per_session.window_ms, now_unix_ms);
        let mut agent_window = self.current(&agent_key, self.per_agent.window_ms, now_unix_ms);
        check(Scope::Session, &self.per_session, &session_window, bytes)?;
        check(Scope::Agent, &self.per_agent, &agent_window, bytes)?;
        let keys = [&agent_key, &session_key];
        let new = keys
            .iter()
            .filter(|k| !self.windows.contains_key(k))
            .count();
        if !self.make_room(new, now_unix_ms, &keys) {
            return Err(BudgetError::TooManyTracked {
                limit: self.max_entries,
            });
        }
        for w in [&mut session_window, &mut agent_window] {
            w.calls = w.calls.saturating_add(1);
            w.bytes = w.bytes.saturating_add(bytes);
        }
        self.put(agent_key, agent_window);
        self.put(session_key, session_window);
        Ok(())
    }

    /// Charges what an admitted call used, in both scopes' windows at
    /// `now_unix_ms` (a window that ended during the call is replaced by a
    /// new one holding the charge). The charge may overshoot a limit: the
    /// next [`admit`](Self::admit) is then refused.
    ///
    /// If a key is no longer tracked (its window ended during the call and
    /// was forgotten for room) and every tracked key is live, its charge is
    /// dropped; its next admit needs room too, so is refused while the book
    /// stays full.
    pub fn record(
        &mut self,
        agent: AgentId,
        session: &SessionId,
        output_bytes: u64,
        wall_ms: u64,
        fuel: u64,
        now_unix_ms: u64,
    ) {
        let keys = [
            (
                Key::Session(agent, session.clone()),
                self.per_session.window_ms,
            ),
            (Key::Agent(agent), self.per_agent.window_ms),
        ];
        for (key, window_ms) in keys {
            let tracked = self.windows.contains_key(&key);
            if !tracked && !self.make_room(1, now_unix_ms, &[&key]) {
                continue;
            }
            let mut w = self.current(&key, window_ms, now_unix_ms);
            w.bytes = w.bytes.saturating_add(output_bytes);
            w.wall_ms = w.wall_ms.saturating_add(wall_ms);
            w.fuel = w.fuel.saturating_add(fuel);
            self.put(key, w);
        }
    }

    /// The tool calls spent in the session's current window: Cedar's
    /// `context.budget_spent`.
    pub fn spent(&self, agent: AgentId, session: &SessionId, now_unix_ms: u64) -> u64 {
        self.session_usage(agent, session, now_unix_ms).calls
    }

    /// What the session has spent in its current window.
    pub fn session_usage(&self, agent: AgentId, session: &SessionId, now_unix_ms: u64) -> Usage {
        self.usage(&Key::Session(agent, session.clone()), now_unix_ms)
    }

    /// What the agent has spent in its current window, over its sessions.
    pub fn agent_usage(&self, agent: AgentId, now_unix_ms: u64) -> Usage {
        self.usage(&Key::Agent(agent), now_unix_ms)
    }

    fn usage(&self, key: &Key, now_unix_ms: u64) -> Usage {
        match self.windows.get(key) {
            Some(w) if !w.ended(now_unix_ms) => Usage {
                calls: w.calls,
                bytes: w.bytes,
                wall_ms: w.wall_ms,
                fuel: w.fuel,
                resets_at_unix_ms: Some(w.end),
            },
            _ => Usage::default(),
        }
    }

    /// `key`'s window at `now_unix_ms`: the tracked one, or a fresh one if
    /// none is tracked or it has ended.
    fn current(&self, key: &Key, window_ms: u64, now_unix_ms: u64) -> Window {
        match self.windows.get(key) {
            Some(w) if !w.ended(now_unix_ms) => *w,
            _ => Window::fresh(now_unix_ms, window_ms),
        }
    }

    /// Tracks `key` with window `w`.
    fn put(&mut self, key: Key, w: Window) {
        if let Some(old) = self.windows.get(&key) {
            if old.end != w.end {
                self.by_end.remove(&(old.end, key.clone()));
                self.by_end.insert((w.end, key.clone()));
            }
        } else {
            self.by_end.insert((w.end, key.clone()));
        }
        self.windows.insert(key, w);
    }

    /// Makes room for `new` more keys by forgetting ended windows (earliest
    /// ended first) other than `keep`'s; whether there is room.
    fn make_room(&mut self, new: usize, now_unix_ms: u64, keep: &[&Key]) -> bool {
        let over = (self.windows.len() + new).saturating_sub(self.max_entries);
        if over == 0 {
            return true;
        }
        let forget: Vec<(u64, Key)> = self
            .by_end
            .iter()
            .take_while(|(end, _)| *end <= now_unix_ms)
            .filter(|(_, k)| !keep.contains(&k))
            .take(over)
            .cloned()
            .collect();
        if forget.len() < over {
            return false;
        }
        for entry in forget {
            self.windows.remove(&entry.1);
            self.by_end.remove(&entry);
        }
        true
    }
}

/// Whether `limits` admit one more call of `bytes` on top of `w`.
fn check(
    scope: Scope,
    limits: &BudgetLimits,
    w: &Window,
    bytes: u64,
) -> Result<(), BudgetExceeded> {
    for (resource, requested) in [
        (Resource::Calls, 1),
        (Resource::Bytes, bytes),
        (Resource::WallTime, 0),
        (Resource::Fuel, 0),
    ] {
        let Some(limit) = limits.limit(resource) else {
            continue;
        };
        let spent = w.spent(resource);
        // Calls and bytes must fit with this call's; wall time and fuel are
        // known only afterwards, so they must not be spent already.
        let refused = match resource {
            Resource::Calls | Resource::Bytes => spent.saturating_add(requested) > limit,
            Resource::WallTime | Resource::Fuel => spent >= limit,
        };
        if refused {
            return Err(BudgetExceeded {
                scope,
                resource,
                limit,
                spent,
                requested,
                resets_at_unix_ms: w.end,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn agent(n: u8) -> AgentId {
        AgentId::from_bytes([n; 16])
    }

    fn session(n: u8) -> SessionId {
        format!("s-{n}").parse().unwrap()
    }

    fn exceeded(r: Result<(), BudgetError>) -> BudgetExceeded {
        match r {
            Err(BudgetError::Exceeded(e)) => e,
            other => panic!("expected a spent budget, got {other:?}"),
        }
    }

    fn calls(n: u64, window_ms: u64) -> BudgetLimits {
        BudgetLimits {
            calls: Some(n),
            ..BudgetLimits::unlimited(window_ms)
        }
    }

    #[test]
    fn defaults_are_unlimited() {
        let d = BudgetLimits::default();
        assert_eq!(d, BudgetLimits::unlimited(60_000));
        assert_eq!(
            (d.calls, d.bytes, d.wall_ms, d.fuel),
            (None, None, None, None)
        );
        let mut book = BudgetBook::new(d, d, 10);
        for t in 0..1_000 {
            book.admit(agent(1), &session(1), u64::MAX, t).unwrap();
            book.record(agent(1), &session(1), u64::MAX, u64::MAX, u64::MAX, t);
        }
        assert_eq!(book.spent(agent(1), &session(1), 999), 1_000);
        assert_eq!(
            book.session_usage(agent(1), &session(1), 999).bytes,
            u64::MAX
        );
    }

    #[test]
    fn calls_run_out_and_reset_at_the_window_end() {
        let mut book = BudgetBook::new(BudgetLimits::default(), calls(10, 1_000), 100);
        for t in 0..10 {
            book.admit(agent(1), &session(1), 0, 500 + t).unwrap();
        }
        assert_eq!(book.spent(agent(1), &session(1), 600), 10);
        let e = exceeded(book.admit(agent(1), &session(1), 0, 1_499));
        assert_eq!(
            (
                e.scope,
                e.resource,
                e.limit,
                e.spent,
                e.requested,
                e.resets_at_unix_ms
            ),
            (Scope::Session, Resource::Calls, 10, 10, 1, 1_500)
        );
        assert_eq!(
            e.to_string(),
            "budget_exceeded: session tool calls 10/10, resets at 1500 ms"
        );
        assert_eq!(e.resets_at_unix_secs(), 2);
        // A refusal charges nothing.
        assert_eq!(book.spent(agent(1), &session(1), 1_499), 10);
        // The window ends at start + window_ms exactly.
        assert_eq!(book.spent(agent(1), &session(1), 1_500), 0);
        book.admit(agent(1), &session(1), 0, 1_500).unwrap();
        assert_eq!(book.spent(agent(1), &session(1), 1_500), 1);
        assert_eq!(
            book.session_usage(agent(1), &session(1), 1_500)
                .resets_at_unix_ms,
            Some(2_500)
        );
        assert_eq!(book.agent_usage(agent(1), 1_500).calls, 11);
    }

    #[test]
    fn sessions_and_agents_are_separate_scopes() {
        let mut book = BudgetBook::new(calls(3, 10_000), calls(2, 10_000), 100);
        let (a, b) = (agent(1), agent(2));
        book.admit(a, &session(1), 0, 0).unwrap();
        book.admit(a, &session(1), 0, 1).unwrap();
        let e = exceeded(book.admit(a, &session(1), 0, 2));
        assert_eq!((e.scope, e.resource), (Scope::Session, Resource::Calls));
        // Another session of the agent has its own session budget ...
        book.admit(a, &session(2), 0, 3).unwrap();
        // ... but shares the agent's.
        let e = exceeded(book.admit(a, &session(2), 0, 4));
        assert_eq!(
            (e.scope, e.resource, e.spent, e.limit),
            (Scope::Agent, Resource::Calls, 3, 3)
        );
        assert_eq!(
            e.to_string(),
            "budget_exceeded: agent tool calls 3/3, resets at 10000 ms"
        );
        assert_eq!(book.spent(a, &session(2), 4), 1);
        // The same session id under another agent is another session.
        book.admit(b, &session(1), 0, 5).unwrap();
        book.admit(b, &session(1), 0, 6).unwrap();
        assert_eq!(book.spent(b, &session(1), 6), 2);
        assert_eq!(book.agent_usage(a, 6).calls, 3);
        assert_eq!(book.agent_usage(b, 6).calls, 2);
        // The agent's window opened at 0 and the session's window at 3.
        assert!(book.admit(a, &session(2), 0, 10_000).is_ok());
    }

    #[test]
    fn bytes_must_fit() {
        let limits = BudgetLimits {
            bytes: Some(100),
            ..BudgetLimits::default()
        };
        let mut book = BudgetBook::new(BudgetLimits::default(), limits, 100);
        book.admit(agent(1), &session(1), 60, 0).unwrap();
        let e = exceeded(book.admit(agent(1), &session(1), 50, 1));
        assert_eq!(
            (e.resource, e.spent, e.requested, e.limit),
            (Resource::Bytes, 60, 50, 100)
        );
        assert_eq!(
            e.to_string(),
            "budget_exceeded: session bytes 60/100 (+50 asked), resets at 60000 ms"
        );
        book.admit(agent(1), &session(1), 40, 2).unwrap();
        // Exactly at the limit, a call without arguments still fits.
        book.admit(agent(1), &session(1), 0, 3).unwrap();
        assert!(book.admit(agent(1), &session(1), 1, 4).is_err());
        // A call larger than the whole budget never fits.
        assert!(book.admit(agent(1), &session(9), 101, 5).is_err());
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn recorded_use_refuses_the_next_call() {
        let per_agent = BudgetLimits {
            wall_ms: Some(1_000),
            fuel: Some(500),
            bytes: Some(10_000),
            ..BudgetLimits::unlimited(60_000)
        };
        let mut book = BudgetBook::new(per_agent, BudgetLimits::default(), 100);
        book.admit(agent(1), &session(1), 10, 0).unwrap();
        book.record(agent(1), &session(1), 100, 999, 499, 10);
        book.admit(agent(1), &session(1), 10, 20).unwrap();
        book.record(agent(1), &session(1), 100, 1_500, 0, 30);
        let e = exceeded(book.admit(agent(1), &session(2), 10, 40));
        assert_eq!(
            (e.scope, e.resource, e.spent, e.limit, e.requested),
            (Scope::Agent, Resource::WallTime, 2_499, 1_000, 0)
        );
        assert_eq!(
            e.to_string(),
            "budget_exceeded: agent wall time ms 2499/1000, resets at 60000 ms"
        );
        let usage = book.agent_usage(agent(1), 40);
        assert_eq!(
            (usage.calls, usage.bytes, usage.wall_ms, usage.fuel),
            (2, 220, 2_499, 499)
        );
        assert_eq!(book.session_usage(agent(1), &session(1), 40).wall_ms, 2_499);
        // Fuel alone.
        let per_session = BudgetLimits {
            fuel: Some(500),
            ..BudgetLimits::default()
        };
        let mut book = BudgetBook::new(BudgetLimits::default(), per_session, 100);
        book.admit(agent(1), &session(1), 0, 0).unwrap();
        book.record(agent(1), &session(1), 0, 0, 500, 1);
        let e = exceeded(book.admit(agent(1), &session(1), 0, 2));
        assert_eq!(
            (e.scope, e.resource, e.spent),
            (Scope::Session, Resource::Fuel, 500)
        );
        // Output bytes count too.
        let per_session = BudgetLimits {
            bytes: Some(100),
            ..BudgetLimits::default()
        };
        let mut book = BudgetBook::new(BudgetLimits::default(), per_session, 100);
        book.admit(agent(1), &session(1), 10, 0).unwrap();
        book.record(agent(1), &session(1), 95, 0, 0, 1);
        let e = exceeded(book.admit(agent(1), &session(1), 0, 2));
        assert_eq!((e.resource, e.spent), (Resource::Bytes, 105));
    }

    #[test]
    fn a_charge_after_the_window_ends_opens_a_new_one() {
        let limits = BudgetLimits {
            wall_ms: Some(1_000),
            ..BudgetLimits::unlimited(1_000)
        };
        let mut book = BudgetBook::new(BudgetLimits::default(), limits, 100);
        book.admit(agent(1), &session(1), 0, 0).unwrap();
        // The call ran for 5 s: recorded in the window open at its end.
        book.record(agent(1), &session(1), 0, 5_000, 0, 5_000);
        let e = exceeded(book.admit(agent(1), &session(1), 0, 5_001));
        assert_eq!(
            (e.resource, e.resets_at_unix_ms),
            (Resource::WallTime, 6_000)
        );
        book.admit(agent(1), &session(1), 0, 6_000).unwrap();
    }

    #[test]
    fn tracked_keys_are_bounded() {
        let mut book = BudgetBook::new(BudgetLimits::default(), calls(1, 1_000), 4);
        // One agent and three sessions: four keys.
        for s in 1..=3 {
            book.admit(agent(1), &session(s), 0, 0).unwrap();
        }
        assert_eq!(book.len(), 4);
        assert_eq!(
            book.admit(agent(1), &session(4), 0, 500),
            Err(BudgetError::TooManyTracked { limit: 4 })
        );
        assert_eq!(
            BudgetError::TooManyTracked { limit: 4 }.to_string(),
            "budget_tracking_full: 4 agents and sessions have live budget windows; retry when one ends"
        );
        // A tracked session is still refused by its budget, not by the bound.
        assert!(matches!(
            book.admit(agent(1), &session(1), 0, 500),
            Err(BudgetError::Exceeded(_))
        ));
        // Nothing was forgotten: a spent session cannot be reset by pushing it out.
        assert_eq!(book.spent(agent(1), &session(1), 500), 1);
        // Once windows end, their keys make room.
        book.admit(agent(1), &session(4), 0, 60_000).unwrap();
        assert_eq!(book.len(), 4);
        book.admit(agent(2), &session(5), 0, 60_000).unwrap();
        assert_eq!(book.len(), 4);
        assert_eq!(book.spent(agent(1), &session(4), 60_000), 1);
        assert_eq!(book.spent(agent(2), &session(5), 60_000), 1);
        assert_eq!(book.max_entries(), 4);
        assert_eq!(
            BudgetBook::new(BudgetLimits::default(), BudgetLimits::default(), 0).max_entries(),
            2
        );
    }

    #[test]
    fn room_is_not_made_by_forgetting_the_keys_in_use() {
        let mut book = BudgetBook::new(BudgetLimits::unlimited(100), calls(5, 10_000), 3);
        book.admit(agent(1), &session(1), 0, 0).unwrap();
        book.admit(agent(1), &session(2), 0, 50).unwrap();
        assert_eq!(book.len(), 3);
        // At 150 only the agent's window (ended at 100) has ended, and a new
        // session of that agent needs it: no room.
        assert_eq!(
            book.admit(agent(1), &session(3), 0, 150),
            Err(BudgetError::TooManyTracked { limit: 3 })
        );
        // A tracked session needs no room; the agent's ended window is renewed.
        book.admit(agent(1), &session(1), 0, 150).unwrap();
        assert_eq!(book.agent_usage(agent(1), 150).calls, 1);
        assert_eq!(book.spent(agent(1), &session(1), 150), 2);
        // At 10 050 both sessions' windows have ended: the earliest goes.
        book.admit(agent(1), &session(3), 0, 10_050).unwrap();
        assert_eq!(book.len(), 3);
        assert_eq!(book.spent(agent(1), &session(3), 10_050), 1);
        assert_eq!(book.session_usage(agent(1), &session(2), 10_049).calls, 1);
    }

    #[test]
    fn zero_windows_and_zero_limits() {
        let mut book = BudgetBook::new(BudgetLimits::default(), calls(0, 0), 10);
        assert_eq!(book.per_session().window_ms, 1);
        let e = exceeded(book.admit(agent(1), &session(1), 0, 0));
        assert_eq!((e.limit, e.spent), (0, 0));
        assert!(book.is_empty());
        let mut book = BudgetBook::new(BudgetLimits::default(), calls(1, 0), 10);
        book.admit(agent(1), &session(1), 0, 0).unwrap();
        assert!(book.admit(agent(1), &session(1), 0, 0).is_err());
        book.admit(agent(1), &session(1), 0, 1).unwrap();
    }

    #[test]
    fn time_going_backwards_stays_in_the_window() {
        let mut book = BudgetBook::new(BudgetLimits::default(), calls(1, 1_000), 10);
        book.admit(agent(1), &session(1), 0, 5_000).unwrap();
        let e = exceeded(book.admit(agent(1), &session(1), 0, 10));
        assert_eq!(e.resets_at_unix_ms, 6_000);
        book.admit(agent(1), &session(1), 0, 6_000).unwrap();
        // A window near the end of time saturates.
        let mut book = BudgetBook::new(BudgetLimits::default(), calls(1, 1_000), 10);
        book.admit(agent(1), &session(1), 0, u64::MAX - 10).unwrap();
        assert_eq!(
            book.session_usage(agent(1), &session(1), u64::MAX - 1)
                .resets_at_unix_ms,
            Some(u64::MAX)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit {
            a: u8,
            s: u8,
            bytes: u64,
        },
        Record {
            a: u8,
            s: u8,
            out: u64,
            wall: u64,
            fuel: u64,
        },
    }

    proptest! {
        #[test]
        fn the_bound_and_indexes_hold(
            ops in prop::collection::vec(
                prop_oneof![
                    (0u8..4, 0u8..6, 0u64..50).prop_map(|(a, s, bytes)| Op::Admit { a, s, bytes }),
                    (0u8..4, 0u8..6, 0u64..50, 0u64..200, 0u64..50)
                        .prop_map(|(a, s, out, wall, fuel)| Op::Record { a, s, out, wall, fuel }),
                ],
                0..80,
            ),
            steps in prop::collection::vec(0u64..400, 80),
            max_entries in 2usize..8,
        ) {
            let per_agent = BudgetLimits { calls: Some(6), bytes: Some(200), wall_ms: Some(500), fuel: None, window_ms: 700 };
            let per_session = BudgetLimits { calls: Some(3), bytes: None, wall_ms: None, fuel: Some(100), window_ms: 1_000 };
            let mut book = BudgetBook::new(per_agent, per_session, max_entries);
            let mut now = 0u64;
            for (op, step) in ops.into_iter().zip(steps) {
                now += step;
                match op {
                    Op::Admit { a, s, bytes } => {
                        let before = book.session_usage(agent(a), &session(s), now);
                        match book.admit(agent(a), &session(s), bytes, now) {
                            Ok(()) => {
                                let after = book.session_usage(agent(a), &session(s), now);
                                prop_assert_eq!(after.calls, before.calls + 1);
                                prop_assert!(after.calls <= 3);
                                prop_assert!(book.agent_usage(agent(a), now).calls <= 6);
                                prop_assert!(book.agent_usage(agent(a), now).bytes <= 200 + 200 * 50);
                            }
                            Err(_) => {
                                prop_assert_eq!(book.session_usage(agent(a), &session(s), now), before);
                            }
                        }
                    }
                    Op::Record { a, s, out, wall, fuel } => {
                        book.record(agent(a), &session(s), out, wall, fuel, now);
                    }
                }
                prop_assert!(book.len() <= max_entries);
                prop_assert_eq!(book.by_end.len(), book.windows.len());
                for (end, key) in &book.by_end {
                    prop_assert_eq!(book.windows.get(key).map(|w| w.end), Some(*end));
                }
            }
        }
    }
}
