//! Audit events and their canonical encoding.
//!
//! The canonical encoding is what the chain hash covers. It is
//! domain-separated and every field is framed, so two different events
//! never encode to the same bytes:
//!
//! ```text
//! encoding = "mxp-audit-v1 event"            (18 bytes, no length)
//!          ‖ field(1, seq       u64 LE)
//!          ‖ field(2, time_ms   u64 LE)
//!          ‖ field(3, trace_id  u64 LE)
//!          ‖ field(4, session   UTF-8, empty = none)
//!          ‖ field(5, principal PrincipalId::canonical_bytes, empty = none)
//!          ‖ field(6, kind      wire tag u8 ‖ kind sub-fields)
//!          ‖ field(7, data      canonical JSON object)
//! field(tag, bytes) = tag u8 ‖ len u32 LE ‖ bytes
//! ```
//!
//! Kind sub-fields use the same `field` framing inside field 6; see
//! [`EventKind`] for each kind's sub-fields and docs/AUDIT.md for the whole
//! layout.

use std::fmt::Write as _;

use mxp_protocol::cursor::Reader;
use mxp_protocol::{AgentId, DecodeError, Fingerprint, PrincipalId, SessionId};
use serde_json::Value;

use super::record::Limits;

/// The context string that starts every canonical event encoding.
pub const EVENT_CONTEXT: &[u8; 18] = b"mxp-audit-v1 event";

/// The longest policy id a [`EventKind::PolicyDecision`] may name, in bytes.
pub const MAX_POLICY_ID_LEN: usize = 256;

/// The deepest nesting of arrays and objects an [`EventData`] may have.
pub const MAX_JSON_DEPTH: usize = 32;

// Field tags of the canonical encoding.
pub(crate) const TAG_SEQ: u8 = 1;
pub(crate) const TAG_TIME: u8 = 2;
pub(crate) const TAG_TRACE: u8 = 3;
pub(crate) const TAG_SESSION: u8 = 4;
pub(crate) const TAG_PRINCIPAL: u8 = 5;
pub(crate) const TAG_KIND: u8 = 6;
pub(crate) const TAG_DATA: u8 = 7;

/// One step of an agent, a decision, or a change of the node, as the audit
/// log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in the log, from 0. [`super::Chain::append`] assigns it.
    pub seq: u64,
    /// When it happened, in Unix milliseconds (an input: nothing here reads a clock).
    pub time_ms: u64,
    /// The trace it belongs to (the Call's trace id), 0 if none.
    pub trace_id: u64,
    /// The session, if the event belongs to one.
    pub session: Option<SessionId>,
    /// Who caused it, if anyone did.
    pub principal: Option<PrincipalId>,
    /// What happened.
    pub kind: EventKind,
    /// Kind-specific details as a canonical JSON object (docs/AUDIT.md lists
    /// the fields each kind documents).
    pub data: EventData,
}

impl AuditEvent {
    /// An event of `kind` with `data` at `time_ms`: sequence number 0 (the
    /// chain assigns it), trace id 0, no session and no principal.
    pub fn new(time_ms: u64, kind: EventKind, data: EventData) -> AuditEvent {
        AuditEvent {
            seq: 0,
            time_ms,
            trace_id: 0,
            session: None,
            principal: None,
            kind,
            data,
        }
    }

    /// This event with `trace_id`.
    #[must_use]
    pub fn with_trace(mut self, trace_id: u64) -> AuditEvent {
        self.trace_id = trace_id;
        self
    }

    /// This event in `session`.
    #[must_use]
    pub fn with_session(mut self, session: SessionId) -> AuditEvent {
        self.session = Some(session);
        self
    }

    /// This event caused by `principal`.
    #[must_use]
    pub fn with_principal(mut self, principal: PrincipalId) -> AuditEvent {
        self.principal = Some(principal);
        self
    }

    /// The canonical encoding (the module documentation gives the layout).
    pub fn canonical_encoding(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(EVENT_CONTEXT);
        put_field(out, TAG_SEQ, &self.seq.to_le_bytes());
        put_field(out, TAG_TIME, &self.time_ms.to_le_bytes());
        put_field(out, TAG_TRACE, &self.trace_id.to_le_bytes());
        put_field(
            out,
            TAG_SESSION,
            self.session
                .as_ref()
                .map_or(&[][..], |s| s.as_str().as_bytes()),
        );
        let principal = self.principal.as_ref().map(PrincipalId::canonical_bytes);
        put_field(out, TAG_PRINCIPAL, principal.as_deref().unwrap_or_default());
        let mut kind = Vec::with_capacity(16);
        self.kind.encode_into(&mut kind);
        put_field(out, TAG_KIND, &kind);
        put_field(out, TAG_DATA, self.data.as_bytes());
    }

    /// The chain hash of this event after a record whose hash is
    /// `prev_hash`: `BLAKE3(prev_hash ‖ canonical encoding)`.
    pub fn chain_hash(&self, prev_hash: &[u8; 32]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(prev_hash);
        hasher.update(&self.canonical_encoding());
        *hasher.finalize().as_bytes()
    }

    fn encoded_len_hint(&self) -> usize {
        EVENT_CONTEXT.len() + 7 * 5 + 24 + 64 + 49 + 32 + self.data.as_bytes().len()
    }

    /// Decodes one canonical encoding from the cursor, checking every
    /// declared length against `limits` before reading it.
    pub(crate) fn decode_from(
        r: &mut Reader<'_>,
        limits: &Limits,
    ) -> Result<AuditEvent, DecodeError> {
        let context = r.take(EVENT_CONTEXT.len())?;
        if context != EVENT_CONTEXT {
            return Err(DecodeError::InvalidValue {
                field: "audit event context",
                reason: "an audit event starts with \"mxp-audit-v1 event\"",
            });
        }
        let seq = u64_field(r, TAG_SEQ, "audit seq")?;
        let time_ms = u64_field(r, TAG_TIME, "audit time_ms")?;
        let trace_id = u64_field(r, TAG_TRACE, "audit trace_id")?;
        let session = take_field(r, TAG_SESSION, "audit session", SessionId::MAX_LEN)?;
        let session = if session.is_empty() {
            None
        } else {
            let text = std::str::from_utf8(session).map_err(|_| DecodeError::InvalidUtf8 {
                field: "audit session",
            })?;
            Some(
                text.parse::<SessionId>()
                    .map_err(|_| DecodeError::InvalidValue {
                        field: "audit session",
                        reason: "a session id is 1 to 64 characters of A-Z a-z 0-9 . _ : -",
                    })?,
            )
        };
        let principal = take_field(r, TAG_PRINCIPAL, "audit principal", 49)?;
        let principal = if principal.is_empty() {
            None
        } else {
            Some(decode_principal(principal)?)
        };
        // A kind's own fields are small except a recorded tool output.
        let kind_limit = limits
            .max_output_bytes
            .saturating_add(limits.max_policy_ids.saturating_mul(MAX_POLICY_ID_LEN + 2))
            .saturating_add(64);
        let kind = take_field(r, TAG_KIND, "audit kind", kind_limit)?;
        let kind = EventKind::decode(kind, limits)?;
        let data = take_field(r, TAG_DATA, "audit data", limits.max_data_bytes)?;
        let data =
            EventData::from_canonical_bytes(data).map_err(|e| DecodeError::InvalidValue {
                field: "audit data",
                reason: e.reason(),
            })?;
        Ok(AuditEvent {
            seq,
            time_ms,
            trace_id,
            session,
            principal,
            kind,
            data,
        })
    }
}

/// `tag ‖ len u32 LE ‖ bytes`. Lengths above `u32::MAX` cannot occur: every
/// field is bounded far below it by [`Limits`] (a longer slice is cut, and
/// the record then fails to decode rather than being mis-framed).
pub(crate) fn put_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.push(tag);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes.get(..len as usize).unwrap_or(bytes));
}

/// Reads `tag ‖ len ‖ bytes`, refusing another tag and a length above `limit`
/// before taking the bytes.
pub(crate) fn take_field<'a>(
    r: &mut Reader<'a>,
    tag: u8,
    field: &'static str,
    limit: usize,
) -> Result<&'a [u8], DecodeError> {
    let found = r.u8()?;
    if found != tag {
        return Err(DecodeError::InvalidValue {
            field,
            reason: "unexpected field tag (fields come in a fixed order)",
        });
    }
    let len = r.u32_le()? as usize;
    if len > limit {
        return Err(DecodeError::LimitExceeded { field, len, limit });
    }
    r.take(len)
}

fn u64_field(r: &mut Reader<'_>, tag: u8, field: &'static str) -> Result<u64, DecodeError> {
    let bytes = take_field(r, tag, field, 8)?;
    let arr: [u8; 8] = bytes.try_into().map_err(|_| DecodeError::InvalidValue {
        field,
        reason: "a u64 field is exactly 8 bytes",
    })?;
    Ok(u64::from_le_bytes(arr))
}

fn decode_principal(bytes: &[u8]) -> Result<PrincipalId, DecodeError> {
    const FIELD: &str = "audit principal";
    let mut r = Reader::new(bytes, FIELD);
    let kind = r.u8()?;
    let fp = Fingerprint(r.array::<32>()?);
    let principal = match kind {
        1 => PrincipalId::Peer(fp),
        2 => PrincipalId::Operator(fp),
        3 => PrincipalId::Node(fp),
        4 => PrincipalId::Agent {
            agent: AgentId::from_bytes(r.array::<16>()?),
            node: fp,
        },
        _ => {
            return Err(DecodeError::InvalidValue {
                field: FIELD,
                reason: "principal kind byte is 1 peer, 2 operator, 3 node or 4 agent",
            });
        }
    };
    r.finish()?;
    Ok(principal)
}

fn bool_byte(b: bool) -> [u8; 1] {
    [u8::from(b)]
}

fn decode_bool(r: &mut Reader<'_>, tag: u8, field: &'static str) -> Result<bool, DecodeError> {
    match take_field(r, tag, field, 1)? {
        [0] => Ok(false),
        [1] => Ok(true),
        _ => Err(DecodeError::InvalidValue {
            field,
            reason: "a boolean is one byte, 0 or 1",
        }),
    }
}

/// What the policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyEffect {
    /// Allowed. Wire byte 1.
    Allow,
    /// Denied. Wire byte 2.
    Deny,
    /// Held for a human approval. Wire byte 3.
    RequireApproval,
}

impl PolicyEffect {
    const fn byte(self) -> u8 {
        match self {
            PolicyEffect::Allow => 1,
            PolicyEffect::Deny => 2,
            PolicyEffect::RequireApproval => 3,
        }
    }
}

/// How a tool execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ToolOutcome {
    /// The effect happened and its output was recorded. Wire byte 1.
    Landed,
    /// The tool reported failure; no effect. Wire byte 2.
    Failed,
    /// Unknown whether the effect happened (timeout, crash mid-call): replay
    /// must not assume either. Wire byte 3.
    InDoubt,
}

impl ToolOutcome {
    const fn byte(self) -> u8 {
        match self {
            ToolOutcome::Landed => 1,
            ToolOutcome::Failed => 2,
            ToolOutcome::InDoubt => 3,
        }
    }
}

/// A tool's output as the log keeps it: the bytes, or a redaction marker
/// that still commits to them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordedOutput {
    /// The output bytes, verbatim. Wire: sub-field 2, first byte 0, then the bytes.
    Recorded(Vec<u8>),
    /// The output was redacted; its length and BLAKE3 digest stay, so a replay
    /// holding the original can prove it matches. Wire: sub-field 2, first
    /// byte 1, then the length (u64 LE) and the digest (32 bytes).
    Redacted {
        /// Length of the original output in bytes.
        len: u64,
        /// BLAKE3 of the original output.
        blake3: [u8; 32],
    },
}

impl RecordedOutput {
    /// The redaction marker for `output`.
    pub fn redact(output: &[u8]) -> RecordedOutput {
        RecordedOutput::Redacted {
            len: output.len() as u64,
            blake3: *blake3::hash(output).as_bytes(),
        }
    }

    /// Whether this is a redaction marker.
    pub const fn is_redacted(&self) -> bool {
        matches!(self, RecordedOutput::Redacted { .. })
    }

    /// Whether `original` is the output this records (equal bytes, or equal
    /// length and digest for a redaction marker).
    pub fn matches(&self, original: &[u8]) -> bool {
        match self {
            RecordedOutput::Recorded(bytes) => bytes == original,
            RecordedOutput::Redacted { len, blake3 } => {
                *len == original.len() as u64 && blake3::hash(original).as_bytes() == blake3
            }
        }
    }
}

/// The stable wire tag of an [`EventKind`]. Tags are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KindTag {
    /// 1
    PolicyDecision = 1,
    /// 2
    TokenMint = 2,
    /// 3
    TokenVerification = 3,
    /// 4
    ToolExecution = 4,
    /// 5
    LifecycleChange = 5,
    /// 6
    ActorRestart = 6,
    /// 7
    ApprovalRequest = 7,
    /// 8
    ApprovalDecision = 8,
    /// 9
    KillSwitch = 9,
    /// 10
    PolicyReload = 10,
    /// 11
    NodeConfig = 11,
    /// 12
    CallReceived = 12,
    /// 13
    CallAnswered = 13,
    /// 14
    SkillQuarantine = 14,
}

impl KindTag {
    /// Every tag, in wire order.
    pub const ALL: [KindTag; 14] = [
        KindTag::PolicyDecision,
        KindTag::TokenMint,
        KindTag::TokenVerification,
        KindTag::ToolExecution,
        KindTag::LifecycleChange,
        KindTag::ActorRestart,
        KindTag::ApprovalRequest,
        KindTag::ApprovalDecision,
        KindTag::KillSwitch,
        KindTag::PolicyReload,
        KindTag::NodeConfig,
        KindTag::CallReceived,
        KindTag::CallAnswered,
        KindTag::SkillQuarantine,
    ];

    /// The wire byte.
    pub const fn byte(self) -> u8 {
        self as u8
    }

    /// The tag of a wire byte.
    pub fn from_byte(byte: u8) -> Option<KindTag> {
        KindTag::ALL.into_iter().find(|t| t.byte() == byte)
    }

    /// The snake_case name (for logs, metrics and docs).
    pub const fn name(self) -> &'static str {
        match self {
            KindTag::PolicyDecision => "policy_decision",
            KindTag::TokenMint => "token_mint",
            KindTag::TokenVerification => "token_verification",
            KindTag::ToolExecution => "tool_execution",
            KindTag::LifecycleChange => "lifecycle_change",
            KindTag::ActorRestart => "actor_restart",
            KindTag::ApprovalRequest => "approval_request",
            KindTag::ApprovalDecision => "approval_decision",
            KindTag::KillSwitch => "kill_switch",
            KindTag::PolicyReload => "policy_reload",
            KindTag::NodeConfig => "node_config",
            KindTag::CallReceived => "call_received",
            KindTag::CallAnswered => "call_answered",
            KindTag::SkillQuarantine => "skill_quarantine",
        }
    }
}

/// What happened. Each kind has a stable wire tag ([`KindTag`]); the fields
/// a verifier or replay must rely on are typed here, the rest lives in the
/// event's [`EventData`].
///
/// Sub-fields (inside field 6, after the tag byte, framed as
/// `tag u8 ‖ len u32 LE ‖ bytes`, in this order):
///
/// | kind | sub-fields |
/// | --- | --- |
/// | `PolicyDecision` (1) | 1: effect (1 byte); 2: policy ids, each `u16 LE len ‖ UTF-8` |
/// | `TokenVerification` (3) | 1: accepted (0/1) |
/// | `ToolExecution` (4) | 1: outcome (1 byte); 2: output (0 ‖ bytes, or 1 ‖ len u64 LE ‖ BLAKE3) |
/// | `ApprovalDecision` (8) | 1: approved (0/1) |
/// | `KillSwitch` (9) | 1: engaged (0/1) |
/// | `NodeConfig` (11) | 1: configuration digest (32 bytes) |
/// | `CallAnswered` (13) | 1: status (1 answered, 2 failed); 2: answer digest (32 bytes) or error code (u16 LE) |
/// | others (`CallReceived` (12) and `SkillQuarantine` (14) among them) | none |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A policy decision and the policies that determined it.
    PolicyDecision {
        /// Allow, deny or require approval.
        effect: PolicyEffect,
        /// Ids of the determining policies, in the order the engine reported.
        policy_ids: Vec<String>,
    },
    /// A capability token was minted.
    TokenMint,
    /// A capability token was verified.
    TokenVerification {
        /// Whether it verified.
        accepted: bool,
    },
    /// A tool ran (or may have).
    ToolExecution {
        /// How it ended.
        outcome: ToolOutcome,
        /// Its output, or a redaction marker.
        output: RecordedOutput,
    },
    /// An agent's lifecycle state changed.
    LifecycleChange,
    /// A supervised actor restarted.
    ActorRestart,
    /// An action was held for approval.
    ApprovalRequest,
    /// A held action was approved or rejected.
    ApprovalDecision {
        /// Whether it was approved.
        approved: bool,
    },
    /// The kill switch was engaged or released.
    KillSwitch {
        /// Whether it is now engaged.
        engaged: bool,
    },
    /// The policy set was reloaded.
    PolicyReload,
    /// The node started with this configuration (digest of its canonical form).
    NodeConfig {
        /// The configuration digest.
        digest: [u8; 32],
    },
    /// A Call reached an agent and its plan run started (the data names the
    /// agent, the method and the params, or their digest when too large).
    CallReceived,
    /// A plan run's Call was answered: the answer's digest, or the error code.
    CallAnswered {
        /// How it was answered.
        answer: CallAnswer,
    },
    /// A skill module did not match its pinned SHA-256: it was refused and
    /// moved to quarantine (data: `name`, `expected`, `actual`,
    /// `quarantined_to`).
    SkillQuarantine,
}

/// How a Call was answered, as [`EventKind::CallAnswered`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallAnswer {
    /// A result: the digest of its canonical JSON (the same digest as a
    /// token's arguments digest, `token::args::args_digest`). Wire: status
    /// byte 1, then the 32-byte digest.
    Answered {
        /// The digest.
        digest: [u8; 32],
    },
    /// An Error frame with this code. Wire: status byte 2, then the code
    /// (u16 LE).
    Failed {
        /// The MXP error code.
        code: u16,
    },
}

impl EventKind {
    /// Its wire tag.
    pub const fn tag(&self) -> KindTag {
        match self {
            EventKind::PolicyDecision { .. } => KindTag::PolicyDecision,
            EventKind::TokenMint => KindTag::TokenMint,
            EventKind::TokenVerification { .. } => KindTag::TokenVerification,
            EventKind::ToolExecution { .. } => KindTag::ToolExecution,
            EventKind::LifecycleChange => KindTag::LifecycleChange,
            EventKind::ActorRestart => KindTag::ActorRestart,
            EventKind::ApprovalRequest => KindTag::ApprovalRequest,
            EventKind::ApprovalDecision { .. } => KindTag::ApprovalDecision,
            EventKind::KillSwitch { .. } => KindTag::KillSwitch,
            EventKind::PolicyReload => KindTag::PolicyReload,
            EventKind::NodeConfig { .. } => KindTag::NodeConfig,
            EventKind::CallReceived => KindTag::CallReceived,
            EventKind::CallAnswered { .. } => KindTag::CallAnswered,
            EventKind::SkillQuarantine => KindTag::SkillQuarantine,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.tag().byte());
        match self {
            EventKind::PolicyDecision { effect, policy_ids } => {
                put_field(out, 1, &[effect.byte()]);
                let mut ids = Vec::new();
                for id in policy_ids {
                    let bytes = id.as_bytes();
                    let bytes = bytes.get(..MAX_POLICY_ID_LEN).unwrap_or(bytes);
                    ids.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                    ids.extend_from_slice(bytes);
                }
                put_field(out, 2, &ids);
            }
            EventKind::TokenVerification { accepted } => put_field(out, 1, &bool_byte(*accepted)),
            EventKind::ToolExecution { outcome, output } => {
                put_field(out, 1, &[outcome.byte()]);
                let mut bytes = Vec::new();
                match output {
                    RecordedOutput::Recorded(b) => {
                        bytes.push(0);
                        bytes.extend_from_slice(b);
                    }
                    RecordedOutput::Redacted { len, blake3 } => {
                        bytes.push(1);
                        bytes.extend_from_slice(&len.to_le_bytes());
                        bytes.extend_from_slice(blake3);
                    }
                }
                put_field(out, 2, &bytes);
            }
            EventKind::ApprovalDecision { approved } => put_field(out, 1, &bool_byte(*approved)),
            EventKind::KillSwitch { engaged } => put_field(out, 1, &bool_byte(*engaged)),
            EventKind::NodeConfig { digest } => put_field(out, 1, digest),
            EventKind::CallAnswered { answer } => match answer {
                CallAnswer::Answered { digest } => {
                    put_field(out, 1, &[1]);
                    put_field(out, 2, digest);
                }
                CallAnswer::Failed { code } => {
                    put_field(out, 1, &[2]);
                    put_field(out, 2, &code.to_le_bytes());
                }
            },
            EventKind::TokenMint
            | EventKind::LifecycleChange
            | EventKind::ActorRestart
            | EventKind::ApprovalRequest
            | EventKind::PolicyReload
            | EventKind::CallReceived
            | EventKind::SkillQuarantine => {}
        }
    }

    fn decode(bytes: &[u8], limits: &Limits) -> Result<EventKind, DecodeError> {
        const FIELD: &str = "audit kind";
        let mut r = Reader::new(bytes, FIELD);
        let tag = KindTag::from_byte(r.u8()?).ok_or(DecodeError::InvalidValue {
            field: FIELD,
            reason: "unknown event kind tag (1 to 14 are defined)",
        })?;
        let kind = match tag {
            KindTag::PolicyDecision => {
                let effect = match take_field(&mut r, 1, "audit policy effect", 1)? {
                    [1] => PolicyEffect::Allow,
                    [2] => PolicyEffect::Deny,
                    [3] => PolicyEffect::RequireApproval,
                    _ => {
                        return Err(DecodeError::InvalidValue {
                            field: "audit policy effect",
                            reason: "effect is 1 allow, 2 deny or 3 require_approval",
                        });
                    }
                };
                let limit = limits.max_policy_ids.saturating_mul(MAX_POLICY_ID_LEN + 2);
                let ids = take_field(&mut r, 2, "audit policy ids", limit)?;
                let mut ids_r = Reader::new(ids, "audit policy ids");
                let mut policy_ids = Vec::new();
                while ids_r.remaining() > 0 {
                    if policy_ids.len() >= limits.max_policy_ids {
                        return Err(DecodeError::LimitExceeded {
                            field: "audit policy ids",
                            len: policy_ids.len() + 1,
                            limit: limits.max_policy_ids,
                        });
                    }
                    let id = ids_r.str_u16("audit policy id", MAX_POLICY_ID_LEN)?;
                    policy_ids.push(id.to_owned());
                }
                EventKind::PolicyDecision { effect, policy_ids }
            }
            KindTag::TokenMint => EventKind::TokenMint,
            KindTag::TokenVerification => EventKind::TokenVerification {
                accepted: decode_bool(&mut r, 1, "audit token accepted")?,
            },
            KindTag::ToolExecution => {
                let outcome = match take_field(&mut r, 1, "audit tool outcome", 1)? {
                    [1] => ToolOutcome::Landed,
                    [2] => ToolOutcome::Failed,
                    [3] => ToolOutcome::InDoubt,
                    _ => {
                        return Err(DecodeError::InvalidValue {
                            field: "audit tool outcome",
                            reason: "outcome is 1 landed, 2 failed or 3 in_doubt",
                        });
                    }
                };
                let out = take_field(
                    &mut r,
                    2,
                    "audit tool output",
                    limits.max_output_bytes.saturating_add(1),
                )?;
                let output = match out.split_first() {
                    Some((0, bytes)) => RecordedOutput::Recorded(bytes.to_vec()),
                    Some((1, rest)) => {
                        let mut rr = Reader::new(rest, "audit redacted output");
                        let len = rr.u64_le()?;
                        let blake3 = rr.array::<32>()?;
                        rr.finish()?;
                        RecordedOutput::Redacted { len, blake3 }
                    }
                    _ => {
                        return Err(DecodeError::InvalidValue {
                            field: "audit tool output",
                            reason: "output starts with 0 (recorded) or 1 (redacted)",
                        });
                    }
                };
                EventKind::ToolExecution { outcome, output }
            }
            KindTag::LifecycleChange => EventKind::LifecycleChange,
            KindTag::ActorRestart => EventKind::ActorRestart,
            KindTag::ApprovalRequest => EventKind::ApprovalRequest,
            KindTag::ApprovalDecision => EventKind::ApprovalDecision {
                approved: decode_bool(&mut r, 1, "audit approval approved")?,
            },
            KindTag::KillSwitch => EventKind::KillSwitch {
                engaged: decode_bool(&mut r, 1, "audit kill switch engaged")?,
            },
            KindTag::PolicyReload => EventKind::PolicyReload,
            KindTag::SkillQuarantine => EventKind::SkillQuarantine,
            KindTag::NodeConfig => {
                let digest = take_field(&mut r, 1, "audit config digest", 32)?;
                EventKind::NodeConfig {
                    digest: digest.try_into().map_err(|_| DecodeError::InvalidValue {
                        field: "audit config digest",
                        reason: "a configuration digest is 32 bytes",
                    })?,
                }
            }
            KindTag::CallReceived => EventKind::CallReceived,
            KindTag::CallAnswered => {
                let answer = match take_field(&mut r, 1, "audit call status", 1)? {
                    [1] => {
                        let digest = take_field(&mut r, 2, "audit answer digest", 32)?;
                        CallAnswer::Answered {
                            digest: digest.try_into().map_err(|_| DecodeError::InvalidValue {
                                field: "audit answer digest",
                                reason: "an answer digest is 32 bytes",
                            })?,
                        }
                    }
                    [2] => {
                        let code = take_field(&mut r, 2, "audit error code", 2)?;
                        let code: [u8; 2] =
                            code.try_into().map_err(|_| DecodeError::InvalidValue {
                                field: "audit error code",
                                reason: "an error code is 2 bytes (u16 LE)",
                            })?;
                        CallAnswer::Failed {
                            code: u16::from_le_bytes(code),
                        }
                    }
                    _ => {
                        return Err(DecodeError::InvalidValue {
                            field: "audit call status",
                            reason: "status is 1 answered or 2 failed",
                        });
                    }
                };
                EventKind::CallAnswered { answer }
            }
        };
        r.finish()?;
        Ok(kind)
    }
}

/// Why a JSON value or text is not canonical [`EventData`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventDataError {
    /// The top-level value is not a JSON object.
    #[error("audit data is a JSON object")]
    NotAnObject,
    /// The bytes are not JSON.
    #[error("audit data is not valid JSON")]
    InvalidJson,
    /// The bytes are JSON but not in canonical form.
    #[error("audit data is not canonical JSON (sorted keys, no whitespace, minimal escapes)")]
    NotCanonical,
    /// Arrays and objects nest deeper than [`MAX_JSON_DEPTH`].
    #[error("audit data nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
}

impl EventDataError {
    /// A static description, for [`DecodeError::InvalidValue`].
    pub const fn reason(&self) -> &'static str {
        match self {
            EventDataError::NotAnObject => "audit data is a JSON object",
            EventDataError::InvalidJson => "audit data is not valid JSON",
            EventDataError::NotCanonical => "audit data is not canonical JSON",
            EventDataError::TooDeep => "audit data nests too deeply",
        }
    }
}

/// A JSON object in canonical form: object keys sorted by their UTF-8
/// bytes, no whitespace, strings escaping only `"`, `\` and control
/// characters (`\b \f \n \r \t`, others as `\u00xx`), numbers as serde_json
/// prints them (integers in decimal, floats in shortest round-trip form).
///
/// Canonical form does not depend on serde_json's `preserve_order` feature:
/// the keys are sorted here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventData(Vec<u8>);

impl EventData {
    /// The empty object `{}`.
    pub fn empty() -> EventData {
        EventData(b"{}".to_vec())
    }

    /// The canonical form of `value`.
    ///
    /// # Errors
    /// [`EventDataError::NotAnObject`] or [`EventDataError::TooDeep`].
    pub fn from_value(value: &Value) -> Result<EventData, EventDataError> {
        if !value.is_object() {
            return Err(EventDataError::NotAnObject);
        }
        let mut out = String::new();
        write_canonical(value, &mut out, 0)?;
        Ok(EventData(out.into_bytes()))
    }

    /// Accepts `bytes` only if they are already canonical.
    ///
    /// # Errors
    /// [`EventDataError::InvalidJson`], [`EventDataError::NotCanonical`] or as [`EventData::from_value`].
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<EventData, EventDataError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|_| EventDataError::InvalidJson)?;
        let data = EventData::from_value(&value)?;
        if data.0 != bytes {
            return Err(EventDataError::NotCanonical);
        }
        Ok(data)
    }

    /// The canonical bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The value.
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }
}

impl Default for EventData {
    fn default() -> EventData {
        EventData::empty()
    }
}

fn write_canonical(v: &Value, out: &mut String, depth: usize) -> Result<(), EventDataError> {
    if depth > MAX_JSON_DEPTH {
        return Err(EventDataError::TooDeep);
    }
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(item, out, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_refuses_other_forms() {
        let v =
            serde_json::json!({"b": 1, "a": [true, null, "x\n\u{1}"], "c": {"z": 1.5, "y": -2}});
        let d = EventData::from_value(&v).unwrap();
        assert_eq!(
            d.as_bytes(),
            br#"{"a":[true,null,"x\n\u0001"],"b":1,"c":{"y":-2,"z":1.5}}"#
        );
        assert_eq!(EventData::from_canonical_bytes(d.as_bytes()).unwrap(), d);
        assert_eq!(
            EventData::from_canonical_bytes(br#"{"b":1,"a":2}"#),
            Err(EventDataError::NotCanonical)
        );
        assert_eq!(
            EventData::from_canonical_bytes(br#"{"a": 2}"#),
            Err(EventDataError::NotCanonical)
        );
        assert_eq!(
            EventData::from_canonical_bytes(b"[1]"),
            Err(EventDataError::NotAnObject)
        );
        assert_eq!(
            EventData::from_canonical_bytes(b"{"),
            Err(EventDataError::InvalidJson)
        );
        let deep = format!("{}{}", "{\"a\":".repeat(40), "}".repeat(40));
        assert!(EventData::from_canonical_bytes(deep.as_bytes()).is_err());
    }

    #[test]
    fn call_events_round_trip_and_refuse_other_forms() {
        use crate::audit::Record;
        let limits = Limits::default();
        for kind in [
            EventKind::CallReceived,
            EventKind::CallAnswered {
                answer: CallAnswer::Answered { digest: [7; 32] },
            },
            EventKind::CallAnswered {
                answer: CallAnswer::Failed { code: 403 },
            },
        ] {
            let e = AuditEvent::new(5, kind.clone(), EventData::empty());
            let bytes = Record::new(e.clone(), [0; 32]).encode();
            assert_eq!(Record::decode(&bytes, &limits).unwrap().event(), &e);
        }
        assert_eq!(KindTag::from_byte(12), Some(KindTag::CallReceived));
        assert_eq!(KindTag::from_byte(13).unwrap().name(), "call_answered");
        assert_eq!(KindTag::from_byte(15), None);
        // The kind field alone: tag, then its sub-fields.
        let decode = |bytes: &[u8]| EventKind::decode(bytes, &limits);
        let mut ok = vec![13];
        put_field(&mut ok, 1, &[2]);
        put_field(&mut ok, 2, &403u16.to_le_bytes());
        assert_eq!(
            decode(&ok),
            Ok(EventKind::CallAnswered {
                answer: CallAnswer::Failed { code: 403 }
            })
        );
        // A status other than 1 or 2, a digest of the wrong length, a code
        // of the wrong length, trailing bytes, sub-fields on call_received:
        // each refused.
        let mut bad_status = vec![13];
        put_field(&mut bad_status, 1, &[3]);
        put_field(&mut bad_status, 2, &[0; 32]);
        let mut short_digest = vec![13];
        put_field(&mut short_digest, 1, &[1]);
        put_field(&mut short_digest, 2, &[0; 31]);
        let mut long_code = vec![13];
        put_field(&mut long_code, 1, &[2]);
        put_field(&mut long_code, 2, &[0; 3]);
        let mut trailing = ok.clone();
        trailing.push(0);
        let mut received_extra = vec![12];
        put_field(&mut received_extra, 1, &[1]);
        for bad in [
            bad_status,
            short_digest,
            long_code,
            trailing,
            received_extra,
        ] {
            assert!(decode(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_skill_quarantine_round_trips_and_the_reserved_tags_stay_unknown() {
        let data = EventData::from_value(&serde_json::json!({
            "name": "summarise", "expected": "ab", "actual": "cd", "quarantined_to": "/q/x.wasm",
        }))
        .unwrap();
        let e = AuditEvent::new(5, EventKind::SkillQuarantine, data);
        let bytes = e.canonical_encoding();
        let mut r = Reader::new(&bytes, "test");
        let back = AuditEvent::decode_from(&mut r, &Limits::default()).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.kind.tag().byte(), 14);
        assert_eq!(back.kind.tag().name(), "skill_quarantine");
        // Past the last tag: not decodable.
        for unknown in [15u8, 255] {
            assert_eq!(KindTag::from_byte(unknown), None);
            assert!(EventKind::decode(&[unknown], &Limits::default()).is_err());
        }
    }

    #[test]
    fn redaction_marker_commits_to_the_output() {
        let r = RecordedOutput::redact(b"secret");
        assert!(r.is_redacted());
        assert!(r.matches(b"secret"));
        assert!(!r.matches(b"secreT"));
    }
}
