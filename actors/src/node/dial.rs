//! Which mesh nodes to dial, and when: bounded, with backoff. Pure (time is
//! an input).
//!
//! Peers name addresses (in registrations, and in the node lists of
//! registration answers), so the set a node dials is attacker-influenced: it
//! holds at most `max` addresses besides the configured seeds, an address
//! that fails is retried after a delay that doubles up to `max_backoff`, and
//! one that has failed `forget_after_failures` times in a row is dropped
//! (seeds are kept, and backed off).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    seed: bool,
    /// The endpoint of a registrant: kept while the registry holds it.
    registrant: bool,
    failures: u32,
    next: Instant,
}

/// The addresses to dial.
#[derive(Debug, Clone)]
pub struct Dialer {
    targets: BTreeMap<String, Target>,
    max: usize,
    base: Duration,
    max_backoff: Duration,
    forget_after_failures: u32,
}

impl Dialer {
    /// A dialer of `seeds` (always kept) and at most `max` learned
    /// addresses; a failed address waits `base`, doubling up to `max_backoff`.
    pub fn new(
        seeds: impl IntoIterator<Item = String>,
        max: usize,
        base: Duration,
        max_backoff: Duration,
        now: Instant,
    ) -> Dialer {
        let targets = seeds
            .into_iter()
            .map(|s| {
                (
                    s,
                    Target {
                        seed: true,
                        registrant: false,
                        failures: 0,
                        next: now,
                    },
                )
            })
            .collect();
        Dialer {
            targets,
            max,
            base: base.max(Duration::from_millis(1)),
            max_backoff: max_backoff.max(base),
            forget_after_failures: 8,
        }
    }

    /// Adds a learned address if there is room; true if it is (now) known.
    pub fn learn(&mut self, url: String, now: Instant) -> bool {
        if self.targets.contains_key(&url) {
            return true;
        }
        let learned = self.targets.values().filter(|t| !t.seed).count();
        if learned >= self.max {
            return false;
        }
        self.targets.insert(
            url,
            Target {
                seed: false,
                registrant: false,
                failures: 0,
                next: now,
            },
        );
        true
    }

    /// The registrants' endpoints are now `urls` (one per registering
    /// identity, from the registry): endpoints no longer registered are
    /// dropped, new ones added while there is room.
    pub fn sync_registrants(&mut self, urls: &[String], now: Instant) {
        self.targets
            .retain(|u, t| !t.registrant || t.seed || urls.contains(u));
        for u in urls {
            if let Some(t) = self.targets.get_mut(u) {
                t.registrant = true;
            } else if self.learn(u.clone(), now)
                && let Some(t) = self.targets.get_mut(u)
            {
                t.registrant = true;
            }
        }
    }

    /// Forgets an address (e.g. it is this node's own).
    pub fn remove(&mut self, url: &str) {
        self.targets.remove(url);
    }

    /// Addresses due for a round now.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(_, t)| t.next <= now)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Every address known.
    pub fn all(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    /// A round with `url` went through: dial it every round again.
    pub fn succeeded(&mut self, url: &str, now: Instant) {
        if let Some(t) = self.targets.get_mut(url) {
            t.failures = 0;
            t.next = now;
        }
    }

    /// A round with `url` failed: back off, or drop a learned address that
    /// keeps failing.
    pub fn failed(&mut self, url: &str, now: Instant) {
        let Some(t) = self.targets.get_mut(url) else {
            return;
        };
        t.failures = t.failures.saturating_add(1);
        if !t.seed && t.failures >= self.forget_after_failures {
            self.targets.remove(url);
            return;
        }
        let factor = 1u32 << t.failures.min(16);
        t.next = now + self.base.saturating_mul(factor).min(self.max_backoff);
    }

    /// Addresses known.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn learned_addresses_are_bounded_and_seeds_always_kept() {
        let now = Instant::now();
        let mut d = Dialer::new(["seed".to_owned()], 2, S, 60 * S, now);
        assert!(d.learn("a".into(), now));
        assert!(d.learn("b".into(), now));
        assert!(!d.learn("c".into(), now), "past the bound");
        assert!(d.learn("a".into(), now), "known already");
        assert_eq!(d.len(), 3);
        assert_eq!(d.due(now).len(), 3);
    }

    #[test]
    fn registrant_endpoints_follow_the_registry() {
        let now = Instant::now();
        let mut d = Dialer::new(["seed".to_owned()], 10, S, 60 * S, now);
        d.sync_registrants(&["a".into(), "b".into()], now);
        assert_eq!(d.len(), 3);
        d.sync_registrants(&["b".into(), "c".into()], now);
        assert_eq!(d.all(), vec!["b".to_owned(), "c".into(), "seed".into()]);
        d.sync_registrants(&[], now);
        assert_eq!(d.all(), vec!["seed".to_owned()]);
    }

    #[test]
    fn failures_back_off_exponentially_and_repeated_ones_are_dropped() {
        let t0 = Instant::now();
        let mut d = Dialer::new(["seed".to_owned()], 10, S, 8 * S, t0);
        d.learn("x".into(), t0);
        d.failed("x", t0);
        assert!(!d.due(t0 + S).contains(&"x".to_owned()));
        assert!(d.due(t0 + 2 * S).contains(&"x".to_owned()));
        d.failed("x", t0);
        assert!(!d.due(t0 + 3 * S).contains(&"x".to_owned()));
        assert!(d.due(t0 + 4 * S).contains(&"x".to_owned()));
        // Capped at max_backoff.
        for _ in 0..3 {
            d.failed("x", t0);
        }
        assert!(d.due(t0 + 8 * S).contains(&"x".to_owned()));
        d.succeeded("x", t0);
        assert!(d.due(t0).contains(&"x".to_owned()));
        for _ in 0..8 {
            d.failed("x", t0);
            d.failed("seed", t0);
        }
        assert!(
            !d.all().contains(&"x".to_owned()),
            "a learned address that keeps failing is dropped"
        );
        assert!(d.all().contains(&"seed".to_owned()), "a seed is kept");
    }
}
