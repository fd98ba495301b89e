//! Policy decisions in Cedar: is this intent allowed, denied, or allowed
//! once approved?
//!
//! A policy set is `*.cedar` files, validated at load against the embedded
//! schema ([`SCHEMA`], `governance/policy/schema.cedarschema`). The
//! engine indexes the set by action constraint, so a decision evaluates
//! only the requested action's policies plus the unconstrained ones, with
//! the same result as evaluating the whole set. docs/POLICY.md is the
//! reference: entities, actions, context, annotations, the default set,
//! limits and error format.
//!
//! Naming:
//!
//! * principals, from authentication only ([`PrincipalId`](mxp_protocol::PrincipalId)):
//!   `Mxp::Peer`, `Mxp::Operator`, `Mxp::Node`, `Mxp::Agent` (`in` its
//!   `Mxp::Node`), each with the PrincipalId text as id;
//! * actions: `Mxp::Action::"tool:<name>"` for tool calls (in the group
//!   `Mxp::Action::"tool"`), and the node control methods by name
//!   (`Mxp::Action::"agent.suspend"`, …; the three `agent.*` are in
//!   `Mxp::Action::"lifecycle"`);
//!   and `Mxp::Action::"flow"` for labelled data reaching a sink
//!   ([`crate::flow`]);
//! * resources: `Mxp::Node`, `Mxp::Agent`, `Mxp::Path`, `Mxp::Host`,
//!   `Mxp::Skill`, `Mxp::Approval`, `Mxp::Source` ([`Resource`]);
//! * context: [`RequestContext`].
//!
//! Pure and synchronous: time is an input, and the only I/O is
//! [`read_policy_dir`] / [`PolicyEngine::load_dir`].
//!
//! ```
//! use mxp_governance::policy::{
//!     Action, Decision, EffectClass, PolicyEngine, Request, RequestContext, Resource, Zone,
//! };
//! use mxp_protocol::{Fingerprint, PrincipalId};
//!
//! let engine = PolicyEngine::default_set();
//! let node = Fingerprint([7; 32]);
//! let context = RequestContext::new("s-1".parse()?, Zone::Sandbox, EffectClass::ReadOnly, 1_700_000_000);
//! let request = Request::new(PrincipalId::Peer(Fingerprint([1; 32])), Action::tool("echo")?, Resource::Node(node), context);
//! assert_eq!(engine.decide(&request).decision, Decision::Allow);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod engine;
mod error;
mod load;
mod request;
mod schema;

pub use engine::{Decision, Outcome, PolicyEngine, Remedy, default_files};
pub use error::{ActionError, ArgumentsError, PolicyDiagnostic, PolicyLoadError, RequestError};
pub use load::{
    ApprovalRequirement, MAX_APPROVERS, MAX_POLICIES, MAX_POLICY_FILE_BYTES, MAX_POLICY_FILES,
    Summary, check, read_policy_dir,
};
pub use request::{
    Action, Arguments, Control, EffectClass, FLOW_ACTION, MAX_ARGS_BYTES, MAX_ARGS_DEPTH,
    MAX_ARGS_VALUES, MAX_TOOL_NAME, Request, RequestContext, Resource, Zone,
};
pub use schema::{DEFAULT_FILES, SCHEMA};

/// The Cedar crate this module is built on (4.x), for callers that compare
/// with Cedar's own evaluation ([`PolicyEngine::policy_set`],
/// [`PolicyEngine::cedar_request`]) without a version skew.
pub use cedar_policy as cedar;
