//! Approvals: the pure book of intents waiting for, or holding, the
//! approvals a Cedar `require_approval` decision asked for.
//!
//! The flow, all of it pure (time and ids are inputs):
//!
//! 1. The policy engine answers [`Decision::RequireApproval`] with
//!    [`Remedy::Approval`]'s requirements and the determining policy ids.
//!    The caller builds the [`IntentKey`] of the exact intent (principal,
//!    agent, session, tool, [`ArgsDigest`]) and calls
//!    [`ApprovalBook::request`]: a new [`ApprovalState::Pending`] record, or
//!    the live one the same intent already has (idempotent).
//! 2. Operators vote with [`ApprovalBook::vote`]. A deny by an eligible
//!    approver makes the record [`Denied`](ApprovalState::Denied); once the
//!    approving voters satisfy every requirement
//!    ([`ApprovalRequirement::is_satisfied_by`]) it is
//!    [`Approved`](ApprovalState::Approved).
//! 3. The same intent, retried (even after a restart: see
//!    [`Approval::encode`], [`Approval::decode`] and
//!    [`ApprovalBook::insert_restored`]), calls
//!    [`ApprovalBook::take_approved`]: once, the approval is
//!    [`Consumed`](ApprovalState::Consumed) and the caller asks the policy
//!    again with [`RequestContext::approved_by`] and the returned approvers.
//!    [`ApprovalBook::status_for`] tells a caller that the intent was denied
//!    or is still pending.
//!
//! Rules the book enforces:
//!
//! * an intent is bound by [`IntentKey::digest`]: changing any argument,
//!   the tool, the session, the agent or the principal needs another
//!   approval;
//! * a voter's kind must be the approver kind of some requirement; the
//!   requester never votes on its own intent; a voter votes once (the same
//!   operator approving twice does not count twice); an approve vote whose
//!   kind's requirements are already met is refused (it adds nothing);
//! * an approval expires at `expires_unix_ms` (`now >= expires` is
//!   expired) whatever its votes, and is used at most once.
//!
//! Memory is bounded: see [`ApprovalBook`].
//!
//! ```
//! use mxp_governance::approval::{ApprovalBook, ApprovalId, ApprovalState, IntentKey};
//! use mxp_governance::policy::ApprovalRequirement;
//! use mxp_governance::token::args::args_digest;
//! use mxp_protocol::{AgentId, Fingerprint, PrincipalId, PrincipalKind};
//!
//! let key = IntentKey::new(
//!     PrincipalId::Peer(Fingerprint([1; 32])),
//!     AgentId::from_bytes([2; 16]),
//!     "s-1".parse()?,
//!     "fs.write",
//!     args_digest(&serde_json::json!({"path": "/tmp/x"})),
//! );
//! let mut book = ApprovalBook::new(64);
//! let two_operators = vec![ApprovalRequirement::new(PrincipalKind::Operator, 2)];
//! let id = book
//!     .request(ApprovalId([9; 16]), key.clone(), vec!["tools.write".into()], two_operators, 1_000, 60_000)?
//!     .id()
//!     .to_owned();
//! let alice = PrincipalId::Operator(Fingerprint([0xa; 32]));
//! let bob = PrincipalId::Operator(Fingerprint([0xb; 32]));
//! book.vote(&id, &alice, true, 2_000)?;
//! assert!(book.vote(&id, &alice, true, 2_001).is_err()); // counted once
//! assert_eq!(book.vote(&id, &bob, true, 2_002)?.state(), ApprovalState::Approved);
//! let approved = book.take_approved(&key, 3_000).ok_or("not approved")?;
//! assert_eq!(approved.approvers, vec![alice, bob]);
//! assert!(book.take_approved(&key, 3_001).is_none()); // single use
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Decision::RequireApproval`]: crate::policy::Decision::RequireApproval
//! [`Remedy::Approval`]: crate::policy::Remedy::Approval
//! [`RequestContext::approved_by`]: crate::policy::RequestContext::approved_by

mod book;
mod codec;
mod error;

use std::fmt;
use std::str::FromStr;

use mxp_protocol::{AgentId, PrincipalId, PrincipalKind, SessionId};

use crate::policy::{ApprovalRequirement, MAX_APPROVERS};
use crate::token::args::ArgsDigest;

pub use book::{ApprovalBook, Approved};
pub use codec::{
    APPROVAL_RECORD_MAGIC, APPROVAL_RECORD_VERSION, MAX_APPROVAL_RECORD_BYTES, MAX_REASON_BYTES,
    MAX_REASONS, MAX_REQUIREMENTS, MAX_TOOL_BYTES, MAX_VOTES,
};
pub use error::{ApprovalDecodeError, ApprovalError, ApprovalIdParseError};

/// The BLAKE3 key-derivation context of [`IntentKey::digest`].
pub const INTENT_KEY_CONTEXT: &str = "mxp-runtime 2026-12-01 governance approval intent key v1";

/// An approval's id: 16 bytes the caller draws at random. Text form `ap-`
/// and 32 lower-case hex digits.
///
/// ```
/// use mxp_governance::approval::ApprovalId;
/// let id = ApprovalId([0xab; 16]);
/// assert_eq!(id.to_string(), format!("ap-{}", "ab".repeat(16)));
/// assert_eq!(id.to_string().parse::<ApprovalId>()?, id);
/// # Ok::<(), mxp_governance::approval::ApprovalIdParseError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApprovalId(pub [u8; 16]);

impl ApprovalId {
    /// The text prefix, `ap-`.
    pub const PREFIX: &'static str = "ap-";

    /// The raw 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ApprovalId {
    type Err = ApprovalIdParseError;

    /// Parses exactly `ap-` and 32 lower-case hex digits (the form
    /// [`Display`](fmt::Display) writes; nothing else is accepted, so an id
    /// has one text).
    fn from_str(s: &str) -> Result<ApprovalId, ApprovalIdParseError> {
        let hex = s
            .strip_prefix(Self::PREFIX)
            .ok_or(ApprovalIdParseError::MissingPrefix)?;
        if hex.len() != 32 {
            return Err(ApprovalIdParseError::WrongLength { got: hex.len() });
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let (Some(&hi), Some(&lo)) = (pair.first(), pair.get(1)) else {
                return Err(ApprovalIdParseError::NotLowerHex);
            };
            let (Some(hi), Some(lo)) = (digit(hi), digit(lo)) else {
                return Err(ApprovalIdParseError::NotLowerHex);
            };
            *byte = (hi << 4) | lo;
        }
        Ok(ApprovalId(out))
    }
}

impl serde::Serialize for ApprovalId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ApprovalId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ApprovalId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The exact intent an approval is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntentKey {
    /// Who asked.
    pub principal: PrincipalId,
    /// The agent that will run the tool.
    pub agent: AgentId,
    /// The session of the Call.
    pub session: SessionId,
    /// The tool: a tool name, 1 to [`MAX_TOOL_BYTES`] characters of
    /// `A-Z a-z 0-9 . _ -`, for the book to accept it.
    pub tool: String,
    /// The digest of the Call's canonical arguments
    /// ([`args_digest`](crate::token::args::args_digest)).
    pub args: ArgsDigest,
}

impl IntentKey {
    /// The key of an intent.
    pub fn new(
        principal: PrincipalId,
        agent: AgentId,
        session: SessionId,
        tool: impl Into<String>,
        args: ArgsDigest,
    ) -> IntentKey {
        IntentKey {
            principal,
            agent,
            session,
            tool: tool.into(),
            args,
        }
    }

    /// `BLAKE3-derive_key(`[`INTENT_KEY_CONTEXT`]`, fields)`, where fields
    /// are, in order, each as a `u32` little-endian byte length and the
    /// bytes: the principal's [`PrincipalId::canonical_bytes`], the agent's
    /// 16 bytes, the session's UTF-8, the tool's UTF-8 and the 32 argument
    /// digest bytes. Any difference in any field gives another digest.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key(INTENT_KEY_CONTEXT);
        let principal = self.principal.canonical_bytes();
        for field in [
            principal.as_slice(),
            self.agent.as_bytes(),
            self.session.as_str().as_bytes(),
            self.tool.as_bytes(),
            self.args.as_bytes(),
        ] {
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            hasher.update(&len.to_le_bytes());
            hasher.update(field);
        }
        *hasher.finalize().as_bytes()
    }
}

/// One principal's vote on an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    /// The voter.
    pub by: PrincipalId,
    /// When it voted (the time the book was given).
    pub at_unix_ms: u64,
    /// Approve (`true`) or deny (`false`).
    pub approve: bool,
}

/// Where an approval is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ApprovalState {
    /// Waiting for votes.
    Pending,
    /// Every requirement is met; not used yet.
    Approved,
    /// An eligible approver denied it.
    Denied,
    /// It expired while pending or approved.
    Expired,
    /// It was approved, then used once by the retried intent.
    Consumed,
}

impl ApprovalState {
    /// The lower-case name: `pending`, `approved`, `denied`, `expired`,
    /// `consumed`.
    pub const fn name(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Consumed => "consumed",
        }
    }

    /// Whether it can still change by a vote or a use: pending or approved.
    pub const fn is_live(self) -> bool {
        matches!(self, ApprovalState::Pending | ApprovalState::Approved)
    }

    /// The byte of the store encoding.
    pub(crate) const fn byte(self) -> u8 {
        match self {
            ApprovalState::Pending => 0,
            ApprovalState::Approved => 1,
            ApprovalState::Denied => 2,
            ApprovalState::Expired => 3,
            ApprovalState::Consumed => 4,
        }
    }

    /// The state of a store encoding byte.
    pub(crate) const fn from_byte(byte: u8) -> Option<ApprovalState> {
        Some(match byte {
            0 => ApprovalState::Pending,
            1 => ApprovalState::Approved,
            2 => ApprovalState::Denied,
            3 => ApprovalState::Expired,
            4 => ApprovalState::Consumed,
            _ => return None,
        })
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One approval: the intent, why it needs approval, who must approve, the
/// votes, and its state.
///
/// Only an [`ApprovalBook`] or [`Approval::decode`] makes one, so its
/// fields always satisfy the book's invariants (limits, distinct eligible
/// voters, a state that agrees with the votes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub(crate) id: ApprovalId,
    pub(crate) key: IntentKey,
    pub(crate) reasons: Vec<String>,
    pub(crate) requirements: Vec<ApprovalRequirement>,
    pub(crate) created_unix_ms: u64,
    pub(crate) expires_unix_ms: u64,
    pub(crate) votes: Vec<Vote>,
    pub(crate) state: ApprovalState,
}

impl Approval {
    /// Its id.
    pub const fn id(&self) -> &ApprovalId {
        &self.id
    }

    /// The intent it is bound to.
    pub const fn key(&self) -> &IntentKey {
        &self.key
    }

    /// Why approval is needed: the ids of the determining policies.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// Who must approve: every requirement must be met.
    pub fn requirements(&self) -> &[ApprovalRequirement] {
        &self.requirements
    }

    /// When it was requested.
    pub const fn created_unix_ms(&self) -> u64 {
        self.created_unix_ms
    }

    /// It is expired from this time on (`now >= expires_unix_ms`).
    pub const fn expires_unix_ms(&self) -> u64 {
        self.expires_unix_ms
    }

    /// The votes, in the order they were cast.
    pub fn votes(&self) -> &[Vote] {
        &self.votes
    }

    /// Its state as last recorded (a live one past its expiry still says
    /// pending or approved until the book expires it: see
    /// [`state_at`](Self::state_at)).
    pub const fn state(&self) -> ApprovalState {
        self.state
    }

    /// Its state at `now_unix_ms`: [`state`](Self::state), except that a
    /// pending or approved approval at or past its expiry is
    /// [`Expired`](ApprovalState::Expired).
    pub const fn state_at(&self, now_unix_ms: u64) -> ApprovalState {
        if self.state.is_live() && now_unix_ms >= self.expires_unix_ms {
            ApprovalState::Expired
        } else {
            self.state
        }
    }

    /// The principals who voted to approve, in voting order.
    pub fn approvers(&self) -> Vec<PrincipalId> {
        self.votes
            .iter()
            .filter(|v| v.approve)
            .map(|v| v.by)
            .collect()
    }

    /// Whether the approving votes meet every requirement.
    pub fn is_satisfied(&self) -> bool {
        satisfied(&self.requirements, &self.approvers())
    }

    /// Whether `kind` is the approver kind of some requirement.
    pub fn is_eligible(&self, kind: PrincipalKind) -> bool {
        self.requirements.iter().any(|r| r.approver() == kind)
    }

    /// The approver kinds of the requirements, sorted, without duplicates.
    pub fn approver_kinds(&self) -> Vec<PrincipalKind> {
        let mut kinds: Vec<PrincipalKind> =
            self.requirements.iter().map(|r| r.approver()).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// Whether `approvers` meets every requirement.
fn satisfied(requirements: &[ApprovalRequirement], approvers: &[PrincipalId]) -> bool {
    requirements.iter().all(|r| r.is_satisfied_by(approvers))
}

/// How many distinct approvers `requirements` need at least: for each
/// approver kind, the largest count asked of it, summed.
fn approvers_needed(requirements: &[ApprovalRequirement]) -> usize {
    let mut kinds: Vec<(PrincipalKind, u8)> = requirements
        .iter()
        .map(|r| (r.approver(), r.count()))
        .collect();
    kinds.sort();
    let mut needed = 0usize;
    let mut iter = kinds.iter().peekable();
    while let Some((kind, count)) = iter.next() {
        // Sorted by (kind, count): the last entry of a kind has its largest count.
        if iter.peek().is_none_or(|(next, _)| next != kind) {
            needed += usize::from(*count);
        }
    }
    needed
}

// One requirement's count alone never needs more voters than a record holds.
const _: () = assert!(MAX_APPROVERS as usize <= MAX_VOTES);

/// The kinds of principal the store encoding names (`PrincipalKind::name`),
/// for reading them back. `PrincipalKind` has no `FromStr`.
const KNOWN_KINDS: [PrincipalKind; 5] = [
    PrincipalKind::Peer,
    PrincipalKind::Operator,
    PrincipalKind::Node,
    PrincipalKind::Agent,
    PrincipalKind::Relayed,
];

/// The kind named `name` ([`PrincipalKind::name`]).
fn kind_from_name(name: &str) -> Option<PrincipalKind> {
    KNOWN_KINDS.into_iter().find(|k| k.name() == name)
}

/// Checks what a request (or a decoded record) may hold: 1 to
/// [`MAX_REQUIREMENTS`] requirements needing at most [`MAX_VOTES`]
/// approvers, at most [`MAX_REASONS`] reasons of at most
/// [`MAX_REASON_BYTES`] bytes, a tool name of at most [`MAX_TOOL_BYTES`].
fn check_limits(
    key: &IntentKey,
    reasons: &[String],
    requirements: &[ApprovalRequirement],
) -> Result<(), ApprovalError> {
    if requirements.is_empty() {
        return Err(ApprovalError::NoRequirements);
    }
    if requirements.len() > MAX_REQUIREMENTS {
        return Err(ApprovalError::TooManyRequirements {
            got: requirements.len(),
            limit: MAX_REQUIREMENTS,
        });
    }
    let needed = approvers_needed(requirements);
    if needed > MAX_VOTES {
        return Err(ApprovalError::TooManyApproversNeeded {
            needed,
            limit: MAX_VOTES,
        });
    }
    if reasons.len() > MAX_REASONS {
        return Err(ApprovalError::TooManyReasons {
            got: reasons.len(),
            limit: MAX_REASONS,
        });
    }
    if let Some(long) = reasons.iter().find(|r| r.len() > MAX_REASON_BYTES) {
        return Err(ApprovalError::ReasonTooLong {
            len: long.len(),
            limit: MAX_REASON_BYTES,
        });
    }
    if crate::policy::Action::tool(&key.tool).is_err() {
        return Err(ApprovalError::BadToolName {
            len: key.tool.len(),
            limit: MAX_TOOL_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxp_protocol::Fingerprint;
    use proptest::prelude::*;

    fn key() -> IntentKey {
        IntentKey::new(
            PrincipalId::Peer(Fingerprint([1; 32])),
            AgentId::from_bytes([2; 16]),
            "s-1".parse().unwrap(),
            "fs.write",
            ArgsDigest([3; 32]),
        )
    }

    #[test]
    fn approval_id_text_round_trips_and_is_strict() {
        let id = ApprovalId([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa, 0xb, 0xc, 0xd, 0xe, 0xff]);
        let text = id.to_string();
        assert_eq!(text, "ap-000102030405060708090a0b0c0d0eff");
        assert_eq!(text.parse::<ApprovalId>().unwrap(), id);
        assert_eq!(format!("{id:?}"), text);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ApprovalId>(&json).unwrap(), id);

        assert_eq!(
            "000102030405060708090a0b0c0d0eff".parse::<ApprovalId>(),
            Err(ApprovalIdParseError::MissingPrefix)
        );
        assert_eq!(
            "ap-0001".parse::<ApprovalId>(),
            Err(ApprovalIdParseError::WrongLength { got: 4 })
        );
        assert_eq!(
            "ap-000102030405060708090A0B0C0D0EFF".parse::<ApprovalId>(),
            Err(ApprovalIdParseError::NotLowerHex)
        );
        assert_eq!(
            "ap-000102030405060708090a0b0c0d0eg0".parse::<ApprovalId>(),
            Err(ApprovalIdParseError::NotLowerHex)
        );
        // 32 bytes but not 32 characters: multi-byte UTF-8.
        assert_eq!(
            format!("ap-é{}", "0".repeat(30)).parse::<ApprovalId>(),
            Err(ApprovalIdParseError::NotLowerHex)
        );
        assert!(
            " ap-000102030405060708090a0b0c0d0eff"
                .parse::<ApprovalId>()
                .is_err()
        );
    }

    #[test]
    fn digest_changes_with_every_field() {
        let base = key();
        let d = base.digest();
        assert_eq!(d, key().digest());
        let mut k = base.clone();
        k.principal = PrincipalId::Operator(Fingerprint([1; 32]));
        assert_ne!(k.digest(), d);
        let mut k = base.clone();
        k.agent = AgentId::from_bytes([9; 16]);
        assert_ne!(k.digest(), d);
        let mut k = base.clone();
        k.session = "s-2".parse().unwrap();
        assert_ne!(k.digest(), d);
        let mut k = base.clone();
        k.tool = "fs.read".into();
        assert_ne!(k.digest(), d);
        let mut k = base.clone();
        k.args = ArgsDigest([4; 32]);
        assert_ne!(k.digest(), d);
    }

    #[test]
    fn digest_fields_are_length_prefixed() {
        // Moving bytes from the session into the tool changes the digest.
        let mut a = key();
        a.session = "ab".parse().unwrap();
        a.tool = "c".into();
        let mut b = key();
        b.session = "a".parse().unwrap();
        b.tool = "bc".into();
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn digest_is_domain_separated() {
        let k = key();
        let mut plain = blake3::Hasher::new();
        let principal = k.principal.canonical_bytes();
        for field in [
            principal.as_slice(),
            k.agent.as_bytes(),
            k.session.as_str().as_bytes(),
            k.tool.as_bytes(),
            k.args.as_bytes(),
        ] {
            plain.update(&(field.len() as u32).to_le_bytes());
            plain.update(field);
        }
        assert_ne!(*plain.finalize().as_bytes(), k.digest());
    }

    #[test]
    fn approvers_needed_takes_the_largest_count_per_kind() {
        let op = |n| ApprovalRequirement::new(PrincipalKind::Operator, n);
        let peer = |n| ApprovalRequirement::new(PrincipalKind::Peer, n);
        assert_eq!(approvers_needed(&[op(2)]), 2);
        assert_eq!(approvers_needed(&[op(2), op(3), op(1)]), 3);
        assert_eq!(approvers_needed(&[op(2), peer(1), op(1)]), 3);
        assert_eq!(approvers_needed(&[op(16), peer(1)]), 17);
        assert_eq!(approvers_needed(&[]), 0);
    }

    #[test]
    fn kind_names_map_back() {
        for kind in KNOWN_KINDS {
            assert_eq!(kind_from_name(kind.name()), Some(kind));
        }
        assert_eq!(kind_from_name("root"), None);
        assert_eq!(kind_from_name("Operator"), None);
    }

    #[test]
    fn state_bytes_round_trip() {
        for state in [
            ApprovalState::Pending,
            ApprovalState::Approved,
            ApprovalState::Denied,
            ApprovalState::Expired,
            ApprovalState::Consumed,
        ] {
            assert_eq!(ApprovalState::from_byte(state.byte()), Some(state));
            assert_eq!(state.to_string(), state.name());
        }
        assert_eq!(ApprovalState::from_byte(5), None);
    }

    proptest! {
        #[test]
        fn approval_id_text_round_trips(bytes in any::<[u8; 16]>()) {
            let id = ApprovalId(bytes);
            prop_assert_eq!(id.to_string().parse::<ApprovalId>(), Ok(id));
        }

        #[test]
        fn approval_id_parse_never_panics(text in ".{0,40}") {
            let _ = text.parse::<ApprovalId>();
        }

        #[test]
        fn different_args_give_different_digests(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            prop_assume!(a != b);
            let mut x = key();
            x.args = ArgsDigest(a);
            let mut y = key();
            y.args = ArgsDigest(b);
            prop_assert_ne!(x.digest(), y.digest());
        }
    }
}
