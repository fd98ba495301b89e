//! Why an approval cannot be requested, voted on or restored, why a stored
//! record does not decode, and why a text is not an approval id.

use mxp_protocol::{DecodeError, PrincipalId, PrincipalKind};

use super::{ApprovalId, ApprovalState};

/// Why a text is not an [`ApprovalId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalIdParseError {
    /// The text does not start with `ap-`.
    #[error("an approval id starts with \"ap-\"")]
    MissingPrefix,
    /// After `ap-` there are not 32 bytes.
    #[error("an approval id is \"ap-\" and 32 hex digits, got {got} bytes after the prefix")]
    WrongLength {
        /// Bytes after the prefix.
        got: usize,
    },
    /// After `ap-` there is something other than `0-9 a-f`.
    #[error("an approval id's digits are lower-case hex (0-9 a-f)")]
    NotLowerHex,
}

/// Why the book refuses a request, a vote or a restored record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// No approval has this id (it never existed, or it was a finished
    /// record dropped by the book's memory bound).
    #[error("no approval {0}")]
    Unknown(ApprovalId),
    /// The approval expired (`now >= expires_unix_ms`); the book has marked
    /// it expired.
    #[error("approval {0} has expired")]
    Expired(ApprovalId),
    /// The approval was already approved, denied or consumed.
    #[error("approval {id} is already {state}")]
    AlreadyDecided {
        /// The approval.
        id: ApprovalId,
        /// Its state.
        state: ApprovalState,
    },
    /// The voter's kind is not the approver kind of any requirement.
    #[error("{voter} is of kind {} and cannot vote on approval {id}, which needs approval by: {}", .kind.name(), names(.required))]
    NotAnApprover {
        /// The approval.
        id: ApprovalId,
        /// The voter.
        voter: PrincipalId,
        /// The voter's kind.
        kind: PrincipalKind,
        /// The approver kinds the requirements name.
        required: Vec<PrincipalKind>,
    },
    /// The voter is the principal whose intent it is: no one approves (or
    /// denies) their own intent.
    #[error("{voter} asked for the intent of approval {id} and cannot vote on it")]
    SelfVote {
        /// The approval.
        id: ApprovalId,
        /// The voter.
        voter: PrincipalId,
    },
    /// The voter has voted on this approval already: a vote counts once.
    #[error("{voter} has already voted on approval {id}")]
    AlreadyVoted {
        /// The approval.
        id: ApprovalId,
        /// The voter.
        voter: PrincipalId,
    },
    /// An approve vote by a kind whose requirements are all met already:
    /// it would add nothing (deny votes are still taken).
    #[error("approval {id} has all the {} approvals it needs", .kind.name())]
    ApproverNotNeeded {
        /// The approval.
        id: ApprovalId,
        /// The voter's kind.
        kind: PrincipalKind,
    },
    /// `max_pending` approvals are pending (after expiring stale ones).
    #[error("too many pending approvals (limit {limit})")]
    TooManyPending {
        /// The book's `max_pending`.
        limit: usize,
    },
    /// The book holds `max_records` records and none is finished (denied,
    /// expired or consumed), so none can be dropped for a new one.
    #[error("approval book is full of live approvals (limit {limit} records)")]
    TooManyRecords {
        /// The book's `max_records`.
        limit: usize,
    },
    /// The id is already in the book.
    #[error("approval {0} already exists")]
    DuplicateId(ApprovalId),
    /// A restored live record's intent already has a live approval.
    #[error("approval {id} is for the same intent as live approval {existing}")]
    DuplicateIntent {
        /// The restored record.
        id: ApprovalId,
        /// The live approval already in the book.
        existing: ApprovalId,
    },
    /// The request has no requirement: nothing could ever approve it.
    #[error("an approval needs at least one requirement")]
    NoRequirements,
    /// More requirements than a record holds.
    #[error("{got} approval requirements, the limit is {limit}")]
    TooManyRequirements {
        /// Requirements given.
        got: usize,
        /// [`MAX_REQUIREMENTS`](super::MAX_REQUIREMENTS).
        limit: usize,
    },
    /// The requirements need more distinct approvers than a record holds
    /// votes (for each kind its largest count, summed).
    #[error("the requirements need {needed} distinct approvers, the limit is {limit}")]
    TooManyApproversNeeded {
        /// Distinct approvers needed.
        needed: usize,
        /// [`MAX_VOTES`](super::MAX_VOTES).
        limit: usize,
    },
    /// More reasons (policy ids) than a record holds.
    #[error("{got} approval reasons, the limit is {limit}")]
    TooManyReasons {
        /// Reasons given.
        got: usize,
        /// [`MAX_REASONS`](super::MAX_REASONS).
        limit: usize,
    },
    /// A reason (policy id) longer than a record holds.
    #[error("an approval reason is {len} bytes, the limit is {limit}")]
    ReasonTooLong {
        /// Its length.
        len: usize,
        /// [`MAX_REASON_BYTES`](super::MAX_REASON_BYTES).
        limit: usize,
    },
    /// The tool is not a tool name: 1 to 64 characters of
    /// `A-Z a-z 0-9 . _ -` ([`Action::tool`](crate::policy::Action::tool)).
    #[error("the tool name ({len} bytes) is not 1 to {limit} characters of A-Z a-z 0-9 . _ -")]
    BadToolName {
        /// Its length.
        len: usize,
        /// [`MAX_TOOL_BYTES`](super::MAX_TOOL_BYTES).
        limit: usize,
    },
    /// A time-to-live of zero: the approval would be expired when made.
    #[error("an approval's time-to-live must be above 0 ms")]
    ZeroTtl,
}

fn names(kinds: &[PrincipalKind]) -> String {
    kinds
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why stored bytes are not an approval record. Decoding never panics and
/// never allocates more than the declared, limit-checked lengths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalDecodeError {
    /// The record is longer than
    /// [`MAX_APPROVAL_RECORD_BYTES`](super::MAX_APPROVAL_RECORD_BYTES)
    /// (checked before anything is read).
    #[error("approval record is {len} bytes, the limit is {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The record does not start with
    /// [`APPROVAL_RECORD_MAGIC`](super::APPROVAL_RECORD_MAGIC).
    #[error("not an approval record (wrong magic)")]
    BadMagic,
    /// The version byte is not one this build reads.
    #[error("approval record version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// A count or length is above its limit (checked before reading or
    /// allocating).
    #[error("approval record {field}: {len} is above the limit of {limit}")]
    LimitExceeded {
        /// The field.
        field: &'static str,
        /// The declared count or length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A field holds a value it cannot have.
    #[error("approval record {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The fields are well-formed but contradict each other (e.g. an
    /// approved record whose votes do not meet its requirements).
    #[error("approval record is inconsistent: {0}")]
    Inconsistent(&'static str),
    /// The bytes end early or continue past the record.
    #[error("malformed approval record: {0}")]
    Malformed(#[from] DecodeError),
}
