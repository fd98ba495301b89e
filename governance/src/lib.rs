//! Pure, synchronous governance logic of an MXP node.
//!
//! Nothing here does I/O, spawns tasks or reads a clock: time and
//! randomness are inputs, so every decision is unit-tested without a
//! runtime and replays exactly. The node's actors (`mxp-actors`) are thin
//! shells around these modules.
//!
//! * [`token`]: capability tokens bound to one exact intent (keyed MAC
//!   inside a node, Ed25519 across the mesh), attenuation, verification.
//! * [`policy`]: Cedar policy sets, validated against a schema, indexed by
//!   action, deciding `allow`, `deny` or `require_approval`.
//! * [`audit`]: the hash-chained audit log's events and encoding, RFC 6962
//!   Merkle proofs, C2SP signed checkpoints and cosignatures.
//! * [`approval`]: pending approvals, votes, single use, expiry, and their store encoding.
//! * [`budget`]: per-agent and per-session budgets and rate limits in fixed windows.
//! * [`flow`]: the flow rule: which labelled data (file reads, secrets) reaches a tool's arguments.
#![forbid(unsafe_code)]

pub mod approval;
pub mod audit;
pub mod budget;
pub mod flow;
pub mod policy;
pub mod token;
