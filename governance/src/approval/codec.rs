//! The store encoding of an [`Approval`]: versioned, length-prefixed
//! binary, bounded before anything is read or allocated.
//!
//! ```text
//! record   = magic "MXAP" ‖ version (u8, 1)
//!          ‖ id (16 bytes)
//!          ‖ principal ‖ agent (16 bytes) ‖ session ‖ tool ‖ args digest (32 bytes)
//!          ‖ created_unix_ms (u64 LE) ‖ expires_unix_ms (u64 LE)
//!          ‖ state (u8: 0 pending, 1 approved, 2 denied, 3 expired, 4 consumed)
//!          ‖ reason count (u8, ≤ 16)      ‖ reasons
//!          ‖ requirement count (u8, 1-16) ‖ requirements
//!          ‖ vote count (u8, ≤ 16)        ‖ votes
//! principal = len (u8, ≤ 160) ‖ PrincipalId text (its Display form, exactly)
//! session   = len (u8, 1-64)  ‖ SessionId text
//! tool      = len (u8, 1-64)  ‖ tool name (A-Z a-z 0-9 . _ -)
//! reason    = len (u16 LE, ≤ 512) ‖ UTF-8
//! requirement = len (u8, ≤ 16) ‖ approver kind name (PrincipalKind::name)
//!             ‖ count (u8, 1-16)
//! vote      = principal ‖ at_unix_ms (u64 LE) ‖ approve (u8, 0 or 1)
//! ```
//!
//! Nothing may follow the last vote. A record is at most
//! [`MAX_APPROVAL_RECORD_BYTES`] (checked first). Beyond the syntax, a
//! decoded record must be one the book could have produced: distinct,
//! eligible voters other than the requester, votes before expiry, at most
//! one deny and only as the last vote, and a state that agrees with the
//! votes (see [`ApprovalDecodeError::Inconsistent`]).

use mxp_protocol::cursor::Reader;
use mxp_protocol::{AgentId, PrincipalId, SessionId};

use super::{
    Approval, ApprovalDecodeError, ApprovalId, ApprovalState, IntentKey, Vote, approvers_needed,
    kind_from_name, satisfied,
};
use crate::policy::{Action, ApprovalRequirement, MAX_APPROVERS, MAX_TOOL_NAME};
use crate::token::args::ArgsDigest;

/// The first four bytes of an approval record.
pub const APPROVAL_RECORD_MAGIC: [u8; 4] = *b"MXAP";
/// The record version this build writes and reads.
pub const APPROVAL_RECORD_VERSION: u8 = 1;
/// The longest record [`Approval::decode`] reads, in bytes (64 KiB).
pub const MAX_APPROVAL_RECORD_BYTES: usize = 64 * 1024;
/// The most votes a record holds (and so the most distinct approvers a
/// request may need).
pub const MAX_VOTES: usize = 16;
/// The most reasons (policy ids) a record holds.
pub const MAX_REASONS: usize = 16;
/// The longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// The most requirements a record holds.
pub const MAX_REQUIREMENTS: usize = 16;
/// The longest tool name, in bytes (the policy's
/// [`MAX_TOOL_NAME`](crate::policy::MAX_TOOL_NAME)).
pub const MAX_TOOL_BYTES: usize = MAX_TOOL_NAME;

/// The longest PrincipalId text (`relayed:<64 hex>@<64 hex>` is 137).
const MAX_PRINCIPAL_TEXT: usize = 160;
/// The longest approver kind name.
const MAX_KIND_NAME: usize = 16;

const WHAT: &str = "approval record";

impl Approval {
    /// The store encoding (see the module documentation of `codec`): what
    /// [`decode`](Self::decode) reads back to an equal approval.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&APPROVAL_RECORD_MAGIC);
        out.push(APPROVAL_RECORD_VERSION);
        out.extend_from_slice(&self.id.0);
        put_principal(&mut out, &self.key.principal);
        out.extend_from_slice(self.key.agent.as_bytes());
        put_u8_len(&mut out, self.key.session.as_str().as_bytes());
        put_u8_len(&mut out, self.key.tool.as_bytes());
        out.extend_from_slice(self.key.args.as_bytes());
        out.extend_from_slice(&self.created_unix_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_unix_ms.to_le_bytes());
        out.push(self.state.byte());
        out.push(count_byte(self.reasons.len()));
        for reason in &self.reasons {
            let len = u16::try_from(reason.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(reason.as_bytes());
        }
        out.push(count_byte(self.requirements.len()));
        for r in &self.requirements {
            put_u8_len(&mut out, r.approver().name().as_bytes());
            out.push(r.count());
        }
        out.push(count_byte(self.votes.len()));
        for v in &self.votes {
            put_principal(&mut out, &v.by);
            out.extend_from_slice(&v.at_unix_ms.to_le_bytes());
            out.push(u8::from(v.approve));
        }
        out
    }

    /// Reads a record [`encode`](Self::encode) wrote.
    ///
    /// # Errors
    /// [`ApprovalDecodeError`]: too large, wrong magic or version, a count or
    /// length over its limit, an invalid field, truncated or trailing bytes,
    /// or fields that contradict each other. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Approval, ApprovalDecodeError> {
        if bytes.len() > MAX_APPROVAL_RECORD_BYTES {
            return Err(ApprovalDecodeError::TooLarge {
                len: bytes.len(),
                limit: MAX_APPROVAL_RECORD_BYTES,
            });
        }
        let mut r = Reader::new(bytes, WHAT);
        if r.array::<4>()? != APPROVAL_RECORD_MAGIC {
            return Err(ApprovalDecodeError::BadMagic);
        }
        let version = r.u8()?;
        if version != APPROVAL_RECORD_VERSION {
            return Err(ApprovalDecodeError::UnsupportedVersion(version));
        }
        let id = ApprovalId(r.array()?);
        let principal = take_principal(&mut r, "principal")?;
        let agent = AgentId::from_bytes(r.array()?);
        let session = take_u8_str(&mut r, "session", SessionId::MAX_LEN)?;
        let session: SessionId = session
            .parse()
            .map_err(|_| invalid("session", "not a session id"))?;
        let tool = take_u8_str(&mut r, "tool", MAX_TOOL_BYTES)?;
        if Action::tool(tool).is_err() {
            return Err(invalid(
                "tool",
                "not a tool name: 1 to 64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let args = ArgsDigest(r.array()?);
        let created_unix_ms = r.u64_le()?;
        let expires_unix_ms = r.u64_le()?;
        let state =
            ApprovalState::from_byte(r.u8()?).ok_or_else(|| invalid("state", "not 0 to 4"))?;

        let count = take_count(&mut r, "reason count", MAX_REASONS)?;
        let mut reasons = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u16_le()?);
            check_len("reason", len, MAX_REASON_BYTES)?;
            let text =
                std::str::from_utf8(r.take(len)?).map_err(|_| invalid("reason", "not UTF-8"))?;
            reasons.push(text.to_owned());
        }

        let count = take_count(&mut r, "requirement count", MAX_REQUIREMENTS)?;
        if count == 0 {
            return Err(invalid(
                "requirement count",
                "zero: nothing could approve it",
            ));
        }
        let mut requirements = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take_u8_str(&mut r, "requirement kind", MAX_KIND_NAME)?;
            let kind = kind_from_name(name)
                .ok_or_else(|| invalid("requirement kind", "not a principal kind name"))?;
            let n = r.u8()?;
            if !(1..=MAX_APPROVERS).contains(&n) {
                return Err(invalid("requirement count", "not 1 to 16"));
            }
            requirements.push(ApprovalRequirement::new(kind, n));
        }

        let count = take_count(&mut r, "vote count", MAX_VOTES)?;
        let mut votes = Vec::with_capacity(count);
        for _ in 0..count {
            let by = take_principal(&mut r, "voter")?;
            let at_unix_ms = r.u64_le()?;
            let approve = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(invalid("vote", "approve byte is not 0 or 1")),
            };
            votes.push(Vote {
                by,
                at_unix_ms,
                approve,
            });
        }
        r.finish()?;

        let approval = Approval {
            id,
            key: IntentKey {
                principal,
                agent,
                session,
                tool: tool.to_owned(),
                args,
            },
            reasons,
            requirements,
            created_unix_ms,
            expires_unix_ms,
            votes,
            state,
        };
        consistency(&approval).map_err(ApprovalDecodeError::Inconsistent)?;
        Ok(approval)
    }
}

/// Whether `a` is a record the book could have produced (past the limits
/// the syntax checks): the reason it is not, otherwise.
pub(super) fn consistency(a: &Approval) -> Result<(), &'static str> {
    if a.requirements.is_empty() {
        return Err("no requirement");
    }
    if approvers_needed(&a.requirements) > MAX_VOTES {
        return Err("the requirements need more than 16 distinct approvers");
    }
    if a.expires_unix_ms <= a.created_unix_ms {
        return Err("it expires no later than it was created");
    }
    for (i, v) in a.votes.iter().enumerate() {
        if !a.is_eligible(v.by.kind()) {
            return Err("a voter's kind is not an approver kind of the requirements");
        }
        if v.by == a.key.principal {
            return Err("the requester voted");
        }
        if a.votes.iter().take(i).any(|w| w.by == v.by) {
            return Err("a principal voted twice");
        }
        if v.at_unix_ms >= a.expires_unix_ms {
            return Err("a vote is at or after the expiry");
        }
    }
    let last = a.votes.len().checked_sub(1);
    let denied_at = a.votes.iter().position(|v| !v.approve);
    if denied_at.is_some() && denied_at != last {
        return Err("a vote follows a deny");
    }
    let approvers = a.approvers();
    // Each approve vote was taken while its kind still needed approvers.
    for r in &a.requirements {
        let kind = r.approver();
        let of_kind = approvers.iter().filter(|p| p.kind() == kind).count();
        let most = a
            .requirements
            .iter()
            .filter(|q| q.approver() == kind)
            .map(|q| usize::from(q.count()))
            .max()
            .unwrap_or(0);
        if of_kind > most {
            return Err("more approvers of a kind than its requirements needed");
        }
    }
    let met = satisfied(&a.requirements, &approvers);
    let denied = denied_at.is_some();
    match a.state {
        ApprovalState::Pending if denied || met => Err("pending, but its votes deny or approve it"),
        ApprovalState::Approved | ApprovalState::Consumed if denied || !met => {
            Err("approved, but its votes do not approve it")
        }
        ApprovalState::Denied if !denied || met => Err("denied, but no deny vote decided it"),
        ApprovalState::Expired if denied => Err("expired, but a deny vote decided it"),
        _ => Ok(()),
    }
}

fn invalid(field: &'static str, reason: &'static str) -> ApprovalDecodeError {
    ApprovalDecodeError::InvalidField { field, reason }
}

fn check_len(field: &'static str, len: usize, limit: usize) -> Result<(), ApprovalDecodeError> {
    if len > limit {
        Err(ApprovalDecodeError::LimitExceeded { field, len, limit })
    } else {
        Ok(())
    }
}

fn take_count(
    r: &mut Reader<'_>,
    field: &'static str,
    limit: usize,
) -> Result<usize, ApprovalDecodeError> {
    let n = usize::from(r.u8()?);
    check_len(field, n, limit)?;
    Ok(n)
}

fn take_u8_str<'a>(
    r: &mut Reader<'a>,
    field: &'static str,
    limit: usize,
) -> Result<&'a str, ApprovalDecodeError> {
    let len = usize::from(r.u8()?);
    check_len(field, len, limit)?;
    std::str::from_utf8(r.take(len)?).map_err(|_| invalid(field, "not UTF-8"))
}

/// A principal's text, which must be exactly its Display form (so a record
/// has one encoding).
fn take_principal(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<PrincipalId, ApprovalDecodeError> {
    let text = take_u8_str(r, field, MAX_PRINCIPAL_TEXT)?;
    let p: PrincipalId = text
        .parse()
        .map_err(|_| invalid(field, "not a principal id"))?;
    if p.to_string() != text {
        return Err(invalid(field, "not the canonical text of a principal id"));
    }
    Ok(p)
}

fn put_u8_len(out: &mut Vec<u8>, bytes: &[u8]) {
    // The book's limits keep every such field under 256 bytes.
    let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or_default());
}

fn put_principal(out: &mut Vec<u8>, p: &PrincipalId) {
    put_u8_len(out, p.to_string().as_bytes());
}

fn count_byte(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxp_protocol::{Fingerprint, PrincipalKind};
    use proptest::prelude::*;

    fn op(n: u8) -> PrincipalId {
        PrincipalId::Operator(Fingerprint([n; 32]))
    }

    fn sample(state: ApprovalState, votes: Vec<Vote>) -> Approval {
        Approval {
            id: ApprovalId([5; 16]),
            key: IntentKey::new(
                PrincipalId::Agent {
                    agent: AgentId::from_bytes([4; 16]),
                    node: Fingerprint([6; 32]),
                },
                AgentId::from_bytes([2; 16]),
                "s-1".parse().unwrap(),
                "fs.write",
                ArgsDigest([3; 32]),
            ),
            reasons: vec![
                "default.external_write.operator_approval".into(),
                "é".into(),
            ],
            requirements: vec![
                ApprovalRequirement::new(PrincipalKind::Operator, 2),
                ApprovalRequirement::new(PrincipalKind::Peer, 1),
            ],
            created_unix_ms: 1_000,
            expires_unix_ms: 61_000,
            votes,
            state,
        }
    }

    fn vote(by: PrincipalId, at: u64, approve: bool) -> Vote {
        Vote {
            by,
            at_unix_ms: at,
            approve,
        }
    }

    fn samples() -> Vec<Approval> {
        let peer = PrincipalId::Peer(Fingerprint([9; 32]));
        let approved = vec![
            vote(op(1), 2_000, true),
            vote(peer, 2_500, true),
            vote(op(2), 3_000, true),
        ];
        vec![
            sample(ApprovalState::Pending, vec![]),
            sample(ApprovalState::Pending, vec![vote(op(1), 2_000, true)]),
            sample(ApprovalState::Approved, approved.clone()),
            sample(ApprovalState::Consumed, approved.clone()),
            sample(ApprovalState::Expired, approved),
            sample(ApprovalState::Expired, vec![]),
            sample(
                ApprovalState::Denied,
                vec![vote(op(1), 2_000, true), vote(op(2), 3_000, false)],
            ),
        ]
    }

    #[test]
    fn records_round_trip() {
        for a in samples() {
            let bytes = a.encode();
            assert_eq!(Approval::decode(&bytes), Ok(a.clone()), "{a:?}");
            assert_eq!(Approval::decode(&bytes).unwrap().encode(), bytes);
        }
    }

    #[test]
    fn the_largest_record_fits_and_round_trips() {
        let relayed = |n: u8| PrincipalId::Relayed {
            caller: Fingerprint([n; 32]),
            via: Fingerprint([0xee; 32]),
        };
        let mut a = sample(ApprovalState::Pending, vec![]);
        a.key.principal = relayed(0xff);
        a.key.session = "s".repeat(64).parse().unwrap();
        a.key.tool = "t".repeat(64);
        a.reasons = (0..16).map(|i| format!("{i:x}").repeat(512)).collect();
        a.requirements = vec![ApprovalRequirement::new(PrincipalKind::Relayed, 16)];
        a.requirements.extend(
            (0..15).map(|i| ApprovalRequirement::new(PrincipalKind::Relayed, 1 + (i % 16))),
        );
        a.votes = (0..15).map(|n| vote(relayed(n), 2_000, true)).collect();
        let bytes = a.encode();
        assert!(bytes.len() < MAX_APPROVAL_RECORD_BYTES);
        assert_eq!(Approval::decode(&bytes), Ok(a));
    }

    #[test]
    fn limits_are_enforced() {
        let bytes = vec![0u8; MAX_APPROVAL_RECORD_BYTES + 1];
        assert_eq!(
            Approval::decode(&bytes),
            Err(ApprovalDecodeError::TooLarge {
                len: MAX_APPROVAL_RECORD_BYTES + 1,
                limit: MAX_APPROVAL_RECORD_BYTES
            })
        );
        assert_eq!(
            Approval::decode(b"XXAP\x01"),
            Err(ApprovalDecodeError::BadMagic)
        );
        assert_eq!(
            Approval::decode(b"MXAP\x02"),
            Err(ApprovalDecodeError::UnsupportedVersion(2))
        );

        let mut a = sample(ApprovalState::Pending, vec![]);
        a.reasons = vec!["r".into(); 17];
        assert!(matches!(
            Approval::decode(&a.encode()),
            Err(ApprovalDecodeError::LimitExceeded {
                field: "reason count",
                len: 17,
                limit: 16
            })
        ));
        a.reasons = vec!["r".repeat(513)];
        assert!(matches!(
            Approval::decode(&a.encode()),
            Err(ApprovalDecodeError::LimitExceeded {
                field: "reason",
                len: 513,
                limit: 512
            })
        ));
        let mut a = sample(ApprovalState::Pending, vec![]);
        a.key.tool = "t".repeat(65);
        assert!(matches!(
            Approval::decode(&a.encode()),
            Err(ApprovalDecodeError::LimitExceeded {
                field: "tool",
                len: 65,
                limit: 64
            })
        ));
        a.key.tool = "no spaces".into();
        assert!(matches!(
            Approval::decode(&a.encode()),
            Err(ApprovalDecodeError::InvalidField { field: "tool", .. })
        ));
        let mut a = sample(ApprovalState::Pending, vec![]);
        a.votes = (0..17).map(|n| vote(op(n), 2_000, true)).collect();
        assert!(matches!(
            Approval::decode(&a.encode()),
            Err(ApprovalDecodeError::LimitExceeded {
                field: "vote count",
                len: 17,
                limit: 16
            })
        ));
        let mut a = sample(ApprovalState::Pending, vec![]);
        a.requirements = vec![];
        assert!(matches!(
            Approval::decode(&a.encode()),
            Err(ApprovalDecodeError::InvalidField {
                field: "requirement count",
                ..
            })
        ));
    }

    #[test]
    fn truncations_and_trailing_bytes_are_errors() {
        for a in samples() {
            let bytes = a.encode();
            for n in 0..bytes.len() {
                assert!(Approval::decode(bytes.get(..n).unwrap()).is_err(), "{n}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                Approval::decode(&longer),
                Err(ApprovalDecodeError::Malformed(_))
            ));
        }
    }

    #[test]
    fn non_canonical_principal_text_is_refused() {
        let mut a = sample(ApprovalState::Pending, vec![]);
        a.key.principal = PrincipalId::Peer(Fingerprint([0xab; 32]));
        let bytes = a.encode();
        assert_eq!(Approval::decode(&bytes), Ok(a.clone()));
        // The principal text starts after magic, version and id (21 bytes) and its length.
        let text = a.key.principal.to_string();
        let upper = text.to_uppercase().replace("PEER", "peer");
        assert_ne!(upper, text);
        let mut changed = bytes.clone();
        let at = 22;
        changed
            .get_mut(at..at + text.len())
            .unwrap()
            .copy_from_slice(upper.as_bytes());
        assert_eq!(
            Approval::decode(&changed),
            Err(ApprovalDecodeError::InvalidField {
                field: "principal",
                reason: "not the canonical text of a principal id"
            })
        );
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let peer = PrincipalId::Peer(Fingerprint([9; 32]));
        let cases: Vec<Approval> = vec![
            // Pending though approved.
            sample(
                ApprovalState::Pending,
                vec![
                    vote(op(1), 2_000, true),
                    vote(peer, 2_000, true),
                    vote(op(2), 2_000, true),
                ],
            ),
            // Approved without enough approvers.
            sample(ApprovalState::Approved, vec![vote(op(1), 2_000, true)]),
            // Denied without a deny.
            sample(ApprovalState::Denied, vec![vote(op(1), 2_000, true)]),
            // A vote after a deny.
            sample(
                ApprovalState::Denied,
                vec![vote(op(1), 2_000, false), vote(op(2), 2_000, true)],
            ),
            // Expired after a deny.
            sample(ApprovalState::Expired, vec![vote(op(1), 2_000, false)]),
            // Twice the same voter.
            sample(
                ApprovalState::Pending,
                vec![vote(op(1), 2_000, true), vote(op(1), 2_001, true)],
            ),
            // An ineligible voter.
            sample(
                ApprovalState::Pending,
                vec![vote(PrincipalId::Node(Fingerprint([1; 32])), 2_000, true)],
            ),
            // A vote at the expiry.
            sample(ApprovalState::Pending, vec![vote(op(1), 61_000, true)]),
            // More operators than needed.
            sample(
                ApprovalState::Pending,
                vec![
                    vote(op(1), 2_000, true),
                    vote(op(2), 2_000, true),
                    vote(op(3), 2_000, true),
                ],
            ),
        ];
        for a in cases {
            assert!(
                matches!(
                    Approval::decode(&a.encode()),
                    Err(ApprovalDecodeError::Inconsistent(_))
                ),
                "{a:?}"
            );
        }
        let mut a = sample(ApprovalState::Pending, vec![]);
        a.expires_unix_ms = a.created_unix_ms;
        assert!(matches!(
            Approval::decode(&a.encode()),
            Err(ApprovalDecodeError::Inconsistent(_))
        ));
        let mut a = sample(ApprovalState::Pending, vec![]);
        a.key.principal = op(1);
        a.votes = vec![vote(op(1), 2_000, true)];
        assert_eq!(
            Approval::decode(&a.encode()),
            Err(ApprovalDecodeError::Inconsistent("the requester voted"))
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = Approval::decode(&bytes);
            let mut framed = APPROVAL_RECORD_MAGIC.to_vec();
            framed.push(APPROVAL_RECORD_VERSION);
            framed.extend_from_slice(&bytes);
            let _ = Approval::decode(&framed);
        }

        #[test]
        fn bit_flips_are_refused_or_decode_to_a_valid_record(
            which in 0usize..7,
            bit in any::<prop::sample::Index>(),
        ) {
            let a = samples().swap_remove(which);
            let mut bytes = a.encode();
            let i = bit.index(bytes.len() * 8);
            if let Some(b) = bytes.get_mut(i / 8) {
                *b ^= 1 << (i % 8);
            }
            // A flip may land in a free field (a time, an id byte, a reason's
            // text): then the record is another valid one, and re-encodes to
            // exactly the flipped bytes. Otherwise it is an error.
            if let Ok(back) = Approval::decode(&bytes) {
                prop_assert_ne!(&back, &a);
                prop_assert_eq!(back.encode(), bytes);
            }
        }
    }
}
