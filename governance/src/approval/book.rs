//! The approval book: pending approvals, votes, single use, expiry, and a
//! bounded audit trail of finished ones.

use std::collections::{BTreeMap, BTreeSet};

use mxp_protocol::{PrincipalId, PrincipalKind};

use super::{
    Approval, ApprovalError, ApprovalId, ApprovalState, IntentKey, Vote, check_limits, satisfied,
};
use crate::policy::ApprovalRequirement;

/// What [`ApprovalBook::take_approved`] hands the retried intent: which
/// approval it used and who approved it (for
/// [`RequestContext::approved_by`](crate::policy::RequestContext::approved_by)
/// and the audit record).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Approved {
    /// The approval, now [`Consumed`](ApprovalState::Consumed).
    pub id: ApprovalId,
    /// The principals who voted to approve, in voting order.
    pub approvers: Vec<PrincipalId>,
}

/// A record and its intent digest.
#[derive(Debug, Clone)]
struct Entry {
    approval: Approval,
    digest: [u8; 32],
}

/// Approvals by id, with the indexes the operations need. Pure: time and
/// ids are inputs.
///
/// # Memory bound
///
/// * At most `max_pending` approvals are [`Pending`](ApprovalState::Pending)
///   (counted after expiring stale ones): [`request`](Self::request) refuses
///   more with [`ApprovalError::TooManyPending`], so a caller asking for
///   approvals it will never get cannot grow the book.
/// * At most `max_records` records in all (`4 * max_pending` with
///   [`new`](Self::new)): live ones (pending or approved) and finished ones
///   (denied, expired, consumed) kept for the audit listing. When a new
///   record would exceed it, the finished record created earliest (then
///   lowest id) is dropped; if every record is live, the new one is refused
///   with [`ApprovalError::TooManyRecords`]. A dropped record is forgotten:
///   [`get`](Self::get) no longer finds it and a vote on it is
///   [`Unknown`](ApprovalError::Unknown).
///
/// Every record is at most a few KiB (the limits of
/// [`MAX_REASONS`](super::MAX_REASONS), [`MAX_VOTES`](super::MAX_VOTES), …)
/// plus four B-tree index entries; every operation is O(log n) but for
/// [`expire`](Self::expire) (O(log n) per expired record) and the scan of one
/// intent's records.
#[derive(Debug, Clone)]
pub struct ApprovalBook {
    max_pending: usize,
    max_records: usize,
    records: BTreeMap<ApprovalId, Entry>,
    /// (created, id) of every record: listing order.
    order: BTreeSet<(u64, ApprovalId)>,
    /// (intent digest, created, id) of every record: an intent's records.
    by_key: BTreeSet<([u8; 32], u64, ApprovalId)>,
    /// (expires, id) of the live records.
    live: BTreeSet<(u64, ApprovalId)>,
    /// (created, id) of the finished records: dropped earliest first.
    finished: BTreeSet<(u64, ApprovalId)>,
    pending: usize,
}

impl ApprovalBook {
    /// An empty book holding at most `max_pending` pending approvals and
    /// `4 * max_pending` records in all.
    pub fn new(max_pending: usize) -> ApprovalBook {
        ApprovalBook::with_limits(max_pending, max_pending.saturating_mul(4))
    }

    /// An empty book holding at most `max_pending` pending approvals and
    /// `max_records` records in all (raised to `max_pending` if below).
    pub fn with_limits(max_pending: usize, max_records: usize) -> ApprovalBook {
        ApprovalBook {
            max_pending,
            max_records: max_records.max(max_pending),
            records: BTreeMap::new(),
            order: BTreeSet::new(),
            by_key: BTreeSet::new(),
            live: BTreeSet::new(),
            finished: BTreeSet::new(),
            pending: 0,
        }
    }

    /// The most pending approvals.
    pub const fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// The most records in all.
    pub const fn max_records(&self) -> usize {
        self.max_records
    }

    /// Pending approvals (some may have expired since the last call that
    /// expires them).
    pub const fn pending_count(&self) -> usize {
        self.pending
    }

    /// Records held, live and finished.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The approval with this id.
    pub fn get(&self, id: &ApprovalId) -> Option<&Approval> {
        self.records.get(id).map(|e| &e.approval)
    }

    /// Every record, ordered by creation time, then id.
    pub fn iter(&self) -> impl Iterator<Item = &Approval> + '_ {
        self.order.iter().filter_map(|(_, id)| self.get(id))
    }

    /// Asks for approval of `key`'s intent.
    ///
    /// First expires stale approvals (call [`expire`](Self::expire) before
    /// to learn which). If the intent already has a live (pending or
    /// approved) approval, returns it and `id` is unused: asking again is
    /// idempotent, whatever `reasons` and `requirements` say this time.
    /// Otherwise records a new pending approval `id`, expiring at
    /// `now_unix_ms + ttl_ms`. A denied, expired or consumed approval of the
    /// same intent does not stop a new one: check
    /// [`status_for`](Self::status_for) first to refuse an intent that was
    /// denied.
    ///
    /// # Errors
    /// [`NoRequirements`](ApprovalError::NoRequirements),
    /// [`TooManyRequirements`](ApprovalError::TooManyRequirements),
    /// [`TooManyApproversNeeded`](ApprovalError::TooManyApproversNeeded),
    /// [`TooManyReasons`](ApprovalError::TooManyReasons),
    /// [`ReasonTooLong`](ApprovalError::ReasonTooLong),
    /// [`BadToolName`](ApprovalError::BadToolName),
    /// [`ZeroTtl`](ApprovalError::ZeroTtl) (also when `now_unix_ms` is
    /// `u64::MAX`), [`TooManyPending`](ApprovalError::TooManyPending),
    /// [`DuplicateId`](ApprovalError::DuplicateId),
    /// [`TooManyRecords`](ApprovalError::TooManyRecords).
    pub fn request(
        &mut self,
        id: ApprovalId,
        key: IntentKey,
        reasons: Vec<String>,
        requirements: Vec<ApprovalRequirement>,
        now_unix_ms: u64,
        ttl_ms: u64,
    ) -> Result<&Approval, ApprovalError> {
        check_limits(&key, &reasons, &requirements)?;
        let expires_unix_ms = now_unix_ms.saturating_add(ttl_ms);
        if expires_unix_ms <= now_unix_ms {
            return Err(ApprovalError::ZeroTtl);
        }
        self.expire(now_unix_ms);
        let digest = key.digest();
        if let Some(existing) = self.live_for(&digest, &key) {
            return self.get(&existing).ok_or(ApprovalError::Unknown(existing));
        }
        if self.pending >= self.max_pending {
            return Err(ApprovalError::TooManyPending {
                limit: self.max_pending,
            });
        }
        if self.records.contains_key(&id) {
            return Err(ApprovalError::DuplicateId(id));
        }
        self.check_room()?;
        let approval = Approval {
            id,
            key,
            reasons,
            requirements,
            created_unix_ms: now_unix_ms,
            expires_unix_ms,
            votes: Vec::new(),
            state: ApprovalState::Pending,
        };
        self.insert(Entry { approval, digest });
        self.get(&id).ok_or(ApprovalError::Unknown(id))
    }

    /// Records `voter`'s vote on approval `id`.
    ///
    /// A deny by an eligible voter makes it [`Denied`](ApprovalState::Denied);
    /// an approve that completes every requirement makes it
    /// [`Approved`](ApprovalState::Approved). A refused vote changes nothing
    /// (but for marking an expired approval expired).
    ///
    /// # Errors
    /// [`Unknown`](ApprovalError::Unknown);
    /// [`Expired`](ApprovalError::Expired) (and the approval is marked
    /// expired); [`AlreadyDecided`](ApprovalError::AlreadyDecided);
    /// [`NotAnApprover`](ApprovalError::NotAnApprover) when the voter's kind
    /// is no requirement's approver kind;
    /// [`SelfVote`](ApprovalError::SelfVote) when the voter is the requester;
    /// [`AlreadyVoted`](ApprovalError::AlreadyVoted) for a second vote by the
    /// same principal; [`ApproverNotNeeded`](ApprovalError::ApproverNotNeeded)
    /// for an approve whose kind's requirements are already met.
    pub fn vote(
        &mut self,
        id: &ApprovalId,
        voter: &PrincipalId,
        approve: bool,
        now_unix_ms: u64,
    ) -> Result<&Approval, ApprovalError> {
        let id = *id;
        let a = &self
            .records
            .get(&id)
            .ok_or(ApprovalError::Unknown(id))?
            .approval;
        match a.state_at(now_unix_ms) {
            ApprovalState::Pending => {}
            ApprovalState::Expired => {
                if a.state.is_live() {
                    self.set_state(id, ApprovalState::Expired);
                }
                return Err(ApprovalError::Expired(id));
            }
            state => return Err(ApprovalError::AlreadyDecided { id, state }),
        }
        let kind = voter.kind();
        if !a.is_eligible(kind) {
            return Err(ApprovalError::NotAnApprover {
                id,
                voter: *voter,
                kind,
                required: a.approver_kinds(),
            });
        }
        if *voter == a.key.principal {
            return Err(ApprovalError::SelfVote { id, voter: *voter });
        }
        if a.votes.iter().any(|v| v.by == *voter) {
            return Err(ApprovalError::AlreadyVoted { id, voter: *voter });
        }
        if approve && kind_met(a, kind) {
            return Err(ApprovalError::ApproverNotNeeded { id, kind });
        }

        let entry = self
            .records
            .get_mut(&id)
            .ok_or(ApprovalError::Unknown(id))?;
        entry.approval.votes.push(Vote {
            by: *voter,
            at_unix_ms: now_unix_ms,
            approve,
        });
        if !approve {
            self.set_state(id, ApprovalState::Denied);
        } else if entry.approval.is_satisfied() {
            self.set_state(id, ApprovalState::Approved);
        }
        self.get(&id).ok_or(ApprovalError::Unknown(id))
    }

    /// Uses the approval of `key`'s intent, once: if the intent's approval
    /// is approved and unexpired at `now_unix_ms`, marks it
    /// [`Consumed`](ApprovalState::Consumed) and returns who approved it.
    /// `None` otherwise (see [`status_for`](Self::status_for) for why); an
    /// approved approval found past its expiry is marked expired.
    pub fn take_approved(&mut self, key: &IntentKey, now_unix_ms: u64) -> Option<Approved> {
        let id = self.live_for(&key.digest(), key)?;
        let a = self.get(&id)?;
        match a.state_at(now_unix_ms) {
            ApprovalState::Approved => {
                let approvers = a.approvers();
                self.set_state(id, ApprovalState::Consumed);
                Some(Approved { id, approvers })
            }
            ApprovalState::Expired => {
                self.set_state(id, ApprovalState::Expired);
                None
            }
            _ => None,
        }
    }

    /// The latest approval (by creation time, then id) of `key`'s intent,
    /// whatever its state: pending, approved, or how it ended. Its
    /// [`state_at`](Approval::state_at) tells whether it has expired since
    /// the book last expired approvals.
    pub fn status_for(&self, key: &IntentKey) -> Option<&Approval> {
        self.records_for(&key.digest())
            .rev()
            .filter_map(|id| self.get(&id))
            .find(|a| a.key == *key)
    }

    /// Marks every pending or approved approval whose expiry is at or before
    /// `now_unix_ms` as expired, and returns their ids (earliest expiry
    /// first).
    pub fn expire(&mut self, now_unix_ms: u64) -> Vec<ApprovalId> {
        let mut expired = Vec::new();
        while let Some(&(expires, id)) = self.live.first() {
            if expires > now_unix_ms {
                break;
            }
            self.set_state(id, ApprovalState::Expired);
            expired.push(id);
        }
        expired
    }

    /// Adds a record read back from the store (at restart), as it was; call
    /// [`expire`](Self::expire) after restoring to expire what expired while
    /// the node was down. The memory bound holds: a finished record may drop
    /// the earliest finished one (possibly itself).
    ///
    /// # Errors
    /// [`DuplicateId`](ApprovalError::DuplicateId);
    /// [`DuplicateIntent`](ApprovalError::DuplicateIntent) for a live record
    /// whose intent has a live approval already;
    /// [`TooManyPending`](ApprovalError::TooManyPending) and
    /// [`TooManyRecords`](ApprovalError::TooManyRecords) as for
    /// [`request`](Self::request).
    pub fn insert_restored(&mut self, approval: Approval) -> Result<(), ApprovalError> {
        let id = approval.id;
        if self.records.contains_key(&id) {
            return Err(ApprovalError::DuplicateId(id));
        }
        let digest = approval.key.digest();
        if approval.state.is_live() {
            if let Some(existing) = self.live_for(&digest, &approval.key) {
                return Err(ApprovalError::DuplicateIntent { id, existing });
            }
            if approval.state == ApprovalState::Pending && self.pending >= self.max_pending {
                return Err(ApprovalError::TooManyPending {
                    limit: self.max_pending,
                });
            }
            self.check_room()?;
        }
        self.insert(Entry { approval, digest });
        Ok(())
    }

    /// The ids of the records of one intent digest, earliest first.
    fn records_for(&self, digest: &[u8; 32]) -> impl DoubleEndedIterator<Item = ApprovalId> + '_ {
        let low = (*digest, 0, ApprovalId([0; 16]));
        let high = (*digest, u64::MAX, ApprovalId([0xff; 16]));
        self.by_key.range(low..=high).map(|(_, _, id)| *id)
    }

    /// The live approval of `key`'s intent (there is at most one).
    fn live_for(&self, digest: &[u8; 32], key: &IntentKey) -> Option<ApprovalId> {
        self.records_for(digest).rev().find(|id| {
            self.get(id)
                .is_some_and(|a| a.state.is_live() && a.key == *key)
        })
    }

    /// Refuses a new live record when the book is full of live ones.
    fn check_room(&self) -> Result<(), ApprovalError> {
        if self.records.len() >= self.max_records && self.finished.is_empty() {
            return Err(ApprovalError::TooManyRecords {
                limit: self.max_records,
            });
        }
        Ok(())
    }

    fn insert(&mut self, entry: Entry) {
        let a = &entry.approval;
        let (id, created) = (a.id, a.created_unix_ms);
        self.order.insert((created, id));
        self.by_key.insert((entry.digest, created, id));
        if a.state.is_live() {
            self.live.insert((a.expires_unix_ms, id));
        } else {
            self.finished.insert((created, id));
        }
        if a.state == ApprovalState::Pending {
            self.pending += 1;
        }
        self.records.insert(id, entry);
        // Keep the bound: drop the earliest finished records.
        while self.records.len() > self.max_records {
            let Some((_, oldest)) = self.finished.pop_first() else {
                break;
            };
            self.remove(oldest);
        }
    }

    fn remove(&mut self, id: ApprovalId) {
        let Some(entry) = self.records.remove(&id) else {
            return;
        };
        let a = &entry.approval;
        self.order.remove(&(a.created_unix_ms, id));
        self.by_key.remove(&(entry.digest, a.created_unix_ms, id));
        self.live.remove(&(a.expires_unix_ms, id));
        self.finished.remove(&(a.created_unix_ms, id));
        if a.state == ApprovalState::Pending {
            self.pending = self.pending.saturating_sub(1);
        }
    }

    /// Moves record `id` to `state`, keeping the indexes in step.
    fn set_state(&mut self, id: ApprovalId, state: ApprovalState) {
        let Some(entry) = self.records.get_mut(&id) else {
            return;
        };
        let a = &mut entry.approval;
        let old = a.state;
        if old == state {
            return;
        }
        a.state = state;
        let (created, expires) = (a.created_unix_ms, a.expires_unix_ms);
        if old == ApprovalState::Pending {
            self.pending = self.pending.saturating_sub(1);
        }
        if state == ApprovalState::Pending {
            self.pending += 1;
        }
        if old.is_live() && !state.is_live() {
            self.live.remove(&(expires, id));
            self.finished.insert((created, id));
        }
    }
}

/// Whether every requirement of `kind` is met by `a`'s approvers.
fn kind_met(a: &Approval, kind: PrincipalKind) -> bool {
    let of_kind: Vec<ApprovalRequirement> = a
        .requirements
        .iter()
        .filter(|r| r.approver() == kind)
        .copied()
        .collect();
    satisfied(&of_kind, &a.approvers())
}

#[cfg(test)]
mod tests {
    use super::super::codec::consistency;
    use super::*;
    use crate::token::args::ArgsDigest;
    use mxp_protocol::{AgentId, Fingerprint};
    use proptest::prelude::*;

    const TTL: u64 = 60_000;

    fn op(n: u8) -> PrincipalId {
        PrincipalId::Operator(Fingerprint([n; 32]))
    }

    fn peer(n: u8) -> PrincipalId {
        PrincipalId::Peer(Fingerprint([n; 32]))
    }

    fn key(args: u8) -> IntentKey {
        IntentKey::new(
            peer(1),
            AgentId::from_bytes([2; 16]),
            "s-1".parse().unwrap(),
            "fs.write",
            ArgsDigest([args; 32]),
        )
    }

    fn ops(n: u8) -> Vec<ApprovalRequirement> {
        vec![ApprovalRequirement::new(PrincipalKind::Operator, n)]
    }

    fn id(n: u8) -> ApprovalId {
        ApprovalId([n; 16])
    }

    fn request(
        book: &mut ApprovalBook,
        n: u8,
        args: u8,
        now: u64,
    ) -> Result<ApprovalId, ApprovalError> {
        book.request(id(n), key(args), vec!["p".into()], ops(1), now, TTL)
            .map(|a| *a.id())
    }

    #[test]
    fn request_is_idempotent_per_intent() {
        let mut book = ApprovalBook::new(8);
        let a = book
            .request(id(1), key(1), vec!["policy.a".into()], ops(2), 1_000, TTL)
            .unwrap();
        assert_eq!(a.state(), ApprovalState::Pending);
        assert_eq!(a.created_unix_ms(), 1_000);
        assert_eq!(a.expires_unix_ms(), 61_000);
        assert_eq!(a.reasons(), ["policy.a"]);
        assert_eq!(a.requirements(), ops(2).as_slice());
        assert!(a.votes().is_empty());
        // Same intent: the same approval, the new id unused.
        let again = book
            .request(id(2), key(1), vec![], ops(1), 2_000, TTL)
            .unwrap();
        assert_eq!(*again.id(), id(1));
        assert_eq!(again.requirements(), ops(2).as_slice());
        assert!(book.get(&id(2)).is_none());
        // Other arguments: another approval.
        assert_eq!(request(&mut book, 3, 2, 2_000), Ok(id(3)));
        assert_eq!(book.pending_count(), 2);
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn requests_are_checked() {
        let mut book = ApprovalBook::new(8);
        let r = |book: &mut ApprovalBook, k: IntentKey, reasons: Vec<String>, reqs, ttl| {
            book.request(id(1), k, reasons, reqs, 1_000, ttl)
                .map(|a| *a.id())
        };
        assert_eq!(
            r(&mut book, key(1), vec![], vec![], TTL),
            Err(ApprovalError::NoRequirements)
        );
        assert_eq!(
            r(&mut book, key(1), vec![], ops(1), 0),
            Err(ApprovalError::ZeroTtl)
        );
        assert_eq!(
            book.request(id(1), key(1), vec![], ops(1), u64::MAX, TTL)
                .map(|a| *a.id()),
            Err(ApprovalError::ZeroTtl)
        );
        let many = vec![
            ApprovalRequirement::new(PrincipalKind::Operator, 16),
            ApprovalRequirement::new(PrincipalKind::Peer, 1),
        ];
        assert_eq!(
            r(&mut book, key(1), vec![], many, TTL),
            Err(ApprovalError::TooManyApproversNeeded {
                needed: 17,
                limit: 16
            })
        );
        let seventeen = vec![ApprovalRequirement::new(PrincipalKind::Operator, 1); 17];
        assert_eq!(
            r(&mut book, key(1), vec![], seventeen, TTL),
            Err(ApprovalError::TooManyRequirements { got: 17, limit: 16 })
        );
        assert_eq!(
            r(&mut book, key(1), vec!["r".into(); 17], ops(1), TTL),
            Err(ApprovalError::TooManyReasons { got: 17, limit: 16 })
        );
        assert_eq!(
            r(&mut book, key(1), vec!["r".repeat(513)], ops(1), TTL),
            Err(ApprovalError::ReasonTooLong {
                len: 513,
                limit: 512
            })
        );
        let mut long_tool = key(1);
        long_tool.tool = "t".repeat(65);
        assert_eq!(
            r(&mut book, long_tool, vec![], ops(1), TTL),
            Err(ApprovalError::BadToolName { len: 65, limit: 64 })
        );
        let mut bad_tool = key(1);
        bad_tool.tool = "rm -rf".into();
        assert!(matches!(
            r(&mut book, bad_tool, vec![], ops(1), TTL),
            Err(ApprovalError::BadToolName { .. })
        ));
        assert!(book.is_empty());
        // Duplicate ids of different intents.
        assert_eq!(request(&mut book, 1, 1, 1_000), Ok(id(1)));
        assert_eq!(
            request(&mut book, 1, 2, 1_000),
            Err(ApprovalError::DuplicateId(id(1)))
        );
    }

    #[test]
    fn two_person_rule() {
        let mut book = ApprovalBook::new(8);
        let a = book
            .request(id(1), key(1), vec![], ops(2), 1_000, TTL)
            .unwrap()
            .id()
            .to_owned();
        assert_eq!(
            book.vote(&a, &op(10), true, 2_000).unwrap().state(),
            ApprovalState::Pending
        );
        assert_eq!(
            book.vote(&a, &op(10), true, 2_001).map(Approval::state),
            Err(ApprovalError::AlreadyVoted {
                id: a,
                voter: op(10)
            })
        );
        assert_eq!(
            book.vote(&a, &op(10), false, 2_001).map(Approval::state),
            Err(ApprovalError::AlreadyVoted {
                id: a,
                voter: op(10)
            })
        );
        assert!(book.take_approved(&key(1), 2_500).is_none());
        let approved = book.vote(&a, &op(11), true, 3_000).unwrap();
        assert_eq!(approved.state(), ApprovalState::Approved);
        assert_eq!(approved.approvers(), vec![op(10), op(11)]);
        assert!(approved.is_satisfied());
        assert_eq!(book.pending_count(), 0);
        assert_eq!(
            book.vote(&a, &op(12), true, 3_001).map(Approval::state),
            Err(ApprovalError::AlreadyDecided {
                id: a,
                state: ApprovalState::Approved
            })
        );
        let used = book.take_approved(&key(1), 4_000).unwrap();
        assert_eq!(used.id, a);
        assert_eq!(used.approvers, vec![op(10), op(11)]);
        assert_eq!(book.get(&a).unwrap().state(), ApprovalState::Consumed);
        // Single use.
        assert!(book.take_approved(&key(1), 4_001).is_none());
        assert_eq!(
            book.status_for(&key(1)).unwrap().state(),
            ApprovalState::Consumed
        );
        // The intent again needs a new approval.
        assert_eq!(request(&mut book, 2, 1, 5_000), Ok(id(2)));
        assert_eq!(*book.status_for(&key(1)).unwrap().id(), id(2));
    }

    #[test]
    fn voters_must_be_eligible_and_not_the_requester() {
        let mut book = ApprovalBook::new(8);
        let a = request(&mut book, 1, 1, 1_000).unwrap();
        assert_eq!(
            book.vote(&a, &peer(5), true, 2_000).map(Approval::state),
            Err(ApprovalError::NotAnApprover {
                id: a,
                voter: peer(5),
                kind: PrincipalKind::Peer,
                required: vec![PrincipalKind::Operator],
            })
        );
        let node = PrincipalId::Node(Fingerprint([3; 32]));
        assert!(matches!(
            book.vote(&a, &node, false, 2_000),
            Err(ApprovalError::NotAnApprover { .. })
        ));
        assert_eq!(
            book.vote(&ApprovalId([0xee; 16]), &op(1), true, 2_000)
                .map(Approval::state),
            Err(ApprovalError::Unknown(ApprovalId([0xee; 16])))
        );
        // An operator's own intent.
        let mut own = key(1);
        own.principal = op(7);
        let b = book
            .request(id(2), own, vec![], ops(1), 1_000, TTL)
            .unwrap()
            .id()
            .to_owned();
        assert_eq!(
            book.vote(&b, &op(7), true, 2_000).map(Approval::state),
            Err(ApprovalError::SelfVote {
                id: b,
                voter: op(7)
            })
        );
        assert_eq!(
            book.vote(&b, &op(8), true, 2_000).unwrap().state(),
            ApprovalState::Approved
        );
        assert!(book.get(&a).unwrap().votes().is_empty());
    }

    #[test]
    fn a_deny_decides() {
        let mut book = ApprovalBook::new(8);
        let a = book
            .request(id(1), key(1), vec![], ops(2), 1_000, TTL)
            .unwrap()
            .id()
            .to_owned();
        book.vote(&a, &op(10), true, 2_000).unwrap();
        let denied = book.vote(&a, &op(11), false, 2_500).unwrap();
        assert_eq!(denied.state(), ApprovalState::Denied);
        assert_eq!(denied.approvers(), vec![op(10)]);
        assert_eq!(
            denied.votes().last(),
            Some(&Vote {
                by: op(11),
                at_unix_ms: 2_500,
                approve: false
            })
        );
        assert_eq!(
            book.vote(&a, &op(12), true, 3_000).map(Approval::state),
            Err(ApprovalError::AlreadyDecided {
                id: a,
                state: ApprovalState::Denied
            })
        );
        assert!(book.take_approved(&key(1), 3_000).is_none());
        assert_eq!(
            book.status_for(&key(1)).unwrap().state(),
            ApprovalState::Denied
        );
        assert_eq!(book.pending_count(), 0);
        // A later request is a new approval; the caller decides whether to make it.
        assert_eq!(request(&mut book, 2, 1, 4_000), Ok(id(2)));
    }

    #[test]
    fn approvals_of_a_met_kind_are_refused_but_denials_taken() {
        let mut book = ApprovalBook::new(8);
        let reqs = vec![
            ApprovalRequirement::new(PrincipalKind::Operator, 1),
            ApprovalRequirement::new(PrincipalKind::Agent, 1),
        ];
        let mut k = key(1);
        k.principal = peer(1);
        let a = book
            .request(id(1), k, vec![], reqs, 1_000, TTL)
            .unwrap()
            .id()
            .to_owned();
        book.vote(&a, &op(10), true, 2_000).unwrap();
        assert_eq!(
            book.vote(&a, &op(11), true, 2_001).map(Approval::state),
            Err(ApprovalError::ApproverNotNeeded {
                id: a,
                kind: PrincipalKind::Operator
            })
        );
        assert_eq!(
            book.vote(&a, &op(11), false, 2_002).unwrap().state(),
            ApprovalState::Denied
        );
    }

    #[test]
    fn approvals_expire() {
        let mut book = ApprovalBook::new(8);
        let a = request(&mut book, 1, 1, 1_000).unwrap();
        let b = request(&mut book, 2, 2, 2_000).unwrap();
        let c = request(&mut book, 3, 3, 3_000).unwrap();
        // b is approved, c is voted on after its expiry.
        book.vote(&b, &op(10), true, 2_500).unwrap();
        assert_eq!(
            book.vote(&c, &op(10), true, 63_000).map(Approval::state),
            Err(ApprovalError::Expired(c))
        );
        assert_eq!(book.get(&c).unwrap().state(), ApprovalState::Expired);
        // At its expiry time exactly, a is expired.
        assert_eq!(
            book.get(&a).unwrap().state_at(60_999),
            ApprovalState::Pending
        );
        assert_eq!(
            book.get(&a).unwrap().state_at(61_000),
            ApprovalState::Expired
        );
        assert_eq!(book.expire(61_000), vec![a]);
        assert_eq!(book.pending_count(), 0);
        assert!(book.expire(61_000).is_empty());
        // An approved approval past its expiry cannot be used.
        assert!(book.take_approved(&key(2), 62_000).is_none());
        assert_eq!(book.get(&b).unwrap().state(), ApprovalState::Expired);
        assert_eq!(
            book.vote(&a, &op(10), true, 70_000).map(Approval::state),
            Err(ApprovalError::Expired(a))
        );
        // A new request for an expired intent is a new approval.
        assert_eq!(request(&mut book, 4, 1, 70_000), Ok(id(4)));
    }

    #[test]
    fn pending_approvals_are_bounded() {
        let mut book = ApprovalBook::new(2);
        request(&mut book, 1, 1, 1_000).unwrap();
        request(&mut book, 2, 2, 1_000).unwrap();
        assert_eq!(
            request(&mut book, 3, 3, 1_000),
            Err(ApprovalError::TooManyPending { limit: 2 })
        );
        // Asking again for a pending intent is not a new one.
        assert_eq!(request(&mut book, 3, 1, 1_000), Ok(id(1)));
        // Stale ones are expired first.
        assert_eq!(request(&mut book, 3, 3, 61_000), Ok(id(3)));
        assert_eq!(book.pending_count(), 1);
        // A decided approval no longer counts.
        book.vote(&id(3), &op(10), false, 61_001).unwrap();
        assert_eq!(book.pending_count(), 0);
    }

    #[test]
    fn finished_records_are_dropped_earliest_first() {
        let mut book = ApprovalBook::with_limits(2, 3);
        assert_eq!(book.max_records(), 3);
        for n in 1..=3 {
            request(&mut book, n, n, u64::from(n)).unwrap();
            book.vote(&id(n), &op(10), false, 10).unwrap();
        }
        assert_eq!(book.len(), 3);
        request(&mut book, 4, 4, 20).unwrap();
        assert_eq!(book.len(), 3);
        assert!(book.get(&id(1)).is_none());
        assert!(book.status_for(&key(1)).is_none());
        assert_eq!(
            book.vote(&id(1), &op(11), true, 21).map(Approval::state),
            Err(ApprovalError::Unknown(id(1)))
        );
        let ids: Vec<ApprovalId> = book.iter().map(|a| *a.id()).collect();
        assert_eq!(ids, vec![id(2), id(3), id(4)]);

        // Full of live records (approved ones are live): refused.
        let mut book = ApprovalBook::with_limits(1, 2);
        for n in 1..=2 {
            request(&mut book, n, n, 1_000).unwrap();
            book.vote(&id(n), &op(10), true, 1_001).unwrap();
        }
        assert_eq!(
            request(&mut book, 3, 3, 1_002),
            Err(ApprovalError::TooManyRecords { limit: 2 })
        );
        book.take_approved(&key(1), 1_003).unwrap();
        assert_eq!(request(&mut book, 3, 3, 1_004), Ok(id(3)));
        assert_eq!(book.len(), 2);
        assert!(book.get(&id(1)).is_none());
        assert_eq!(ApprovalBook::new(5).max_records(), 20);
        assert_eq!(ApprovalBook::with_limits(5, 1).max_records(), 5);
    }

    #[test]
    fn iteration_is_by_creation_then_id() {
        let mut book = ApprovalBook::new(8);
        request(&mut book, 9, 1, 2_000).unwrap();
        request(&mut book, 5, 2, 2_000).unwrap();
        request(&mut book, 7, 3, 1_000).unwrap();
        let ids: Vec<ApprovalId> = book.iter().map(|a| *a.id()).collect();
        assert_eq!(ids, vec![id(7), id(5), id(9)]);
    }

    #[test]
    fn approvals_survive_a_restart() {
        let mut book = ApprovalBook::new(8);
        let a = book
            .request(id(1), key(1), vec!["p".into()], ops(2), 1_000, TTL)
            .unwrap()
            .id()
            .to_owned();
        book.vote(&a, &op(10), true, 2_000).unwrap();
        request(&mut book, 2, 2, 2_000).unwrap();
        book.vote(&id(2), &op(10), false, 2_100).unwrap();
        let stored: Vec<Vec<u8>> = book.iter().map(Approval::encode).collect();

        let mut restarted = ApprovalBook::new(8);
        for bytes in &stored {
            restarted
                .insert_restored(Approval::decode(bytes).unwrap())
                .unwrap();
        }
        assert_eq!(restarted.len(), 2);
        assert_eq!(restarted.pending_count(), 1);
        assert!(restarted.expire(2_200).is_empty());
        assert_eq!(
            restarted.vote(&a, &op(11), true, 3_000).unwrap().state(),
            ApprovalState::Approved
        );
        let used = restarted.take_approved(&key(1), 4_000).unwrap();
        assert_eq!(used.approvers, vec![op(10), op(11)]);
        assert_eq!(
            restarted.status_for(&key(2)).unwrap().state(),
            ApprovalState::Denied
        );

        // Restoring the same id, or a second live approval of one intent, is refused.
        let first = Approval::decode(stored.first().unwrap()).unwrap();
        assert_eq!(
            restarted.insert_restored(first.clone()),
            Err(ApprovalError::DuplicateId(a))
        );
        let mut other = ApprovalBook::new(8);
        other.insert_restored(first.clone()).unwrap();
        let mut twin = first;
        twin.id = id(3);
        assert_eq!(
            other.insert_restored(twin),
            Err(ApprovalError::DuplicateIntent {
                id: id(3),
                existing: a
            })
        );
        let mut full = ApprovalBook::new(0);
        assert_eq!(
            full.insert_restored(Approval::decode(stored.first().unwrap()).unwrap()),
            Err(ApprovalError::TooManyPending { limit: 0 })
        );
    }

    #[test]
    fn expired_while_down_is_expired_after_restore() {
        let mut book = ApprovalBook::new(8);
        let a = request(&mut book, 1, 1, 1_000).unwrap();
        let bytes = book.get(&a).unwrap().encode();
        let mut restarted = ApprovalBook::new(8);
        restarted
            .insert_restored(Approval::decode(&bytes).unwrap())
            .unwrap();
        assert_eq!(restarted.expire(100_000), vec![a]);
        assert_eq!(restarted.pending_count(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Request { n: u8, args: u8, count: u8 },
        Vote { n: u8, voter: u8, approve: bool },
        Take { args: u8 },
        Expire,
        Restart,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u8..4, 1u8..3).prop_map(|(n, args, count)| Op::Request { n, args, count }),
            (0u8..12, 0u8..5, any::<bool>()).prop_map(|(n, voter, approve)| Op::Vote {
                n,
                voter,
                approve
            }),
            (0u8..4).prop_map(|args| Op::Take { args }),
            Just(Op::Expire),
            Just(Op::Restart),
        ]
    }

    fn check_invariants(book: &ApprovalBook) -> Result<(), TestCaseError> {
        prop_assert!(book.len() <= book.max_records());
        let pending = book
            .iter()
            .filter(|a| a.state() == ApprovalState::Pending)
            .count();
        prop_assert_eq!(pending, book.pending_count());
        prop_assert!(pending <= book.max_pending());
        prop_assert_eq!(book.iter().count(), book.len());
        let mut live = BTreeSet::new();
        for a in book.iter() {
            prop_assert_eq!(consistency(a), Ok(()));
            let back = Approval::decode(&a.encode());
            prop_assert_eq!(back.as_ref(), Ok(a));
            if a.state().is_live() {
                prop_assert!(
                    live.insert(a.key().digest()),
                    "two live approvals of one intent"
                );
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_operations_keep_the_invariants(
            ops_list in prop::collection::vec(op_strategy(), 0..60),
        ) {
            let mut book = ApprovalBook::with_limits(3, 6);
            let mut now = 1_000u64;
            for operation in ops_list {
                now += 7_000;
                match operation {
                    Op::Request { n, args, count } => {
                        let _ = book.request(id(n), key(args), vec![], ops(count), now, 30_000);
                    }
                    Op::Vote { n, voter, approve } => {
                        let before = book.get(&id(n)).map(|a| a.votes().len());
                        let result = book.vote(&id(n), &op(voter), approve, now).is_ok();
                        let after = book.get(&id(n)).map(|a| a.votes().len());
                        prop_assert_eq!(result, after > before);
                    }
                    Op::Take { args } => {
                        if let Some(used) = book.take_approved(&key(args), now) {
                            let a = book.get(&used.id).unwrap();
                            prop_assert_eq!(a.state(), ApprovalState::Consumed);
                            prop_assert!(a.is_satisfied());
                            prop_assert!(book.take_approved(&key(args), now).is_none());
                        }
                    }
                    Op::Expire => {
                        for expired in book.expire(now) {
                            prop_assert_eq!(book.get(&expired).map(Approval::state), Some(ApprovalState::Expired));
                        }
                    }
                    Op::Restart => {
                        let mut restarted = ApprovalBook::with_limits(3, 6);
                        for a in book.iter() {
                            restarted.insert_restored(Approval::decode(&a.encode()).unwrap()).unwrap();
                        }
                        prop_assert_eq!(restarted.iter().cloned().collect::<Vec<_>>(), book.iter().cloned().collect::<Vec<_>>());
                        book = restarted;
                    }
                }
                check_invariants(&book)?;
            }
        }
    }
}
