//! What a decision is asked about: who (a [`PrincipalId`], from
//! authentication only), which [`Action`], on which [`Resource`], in which
//! [`RequestContext`].

use std::fmt;
use std::str::FromStr;

use cedar_policy::RestrictedExpression;
use mxp_protocol::{AgentId, Fingerprint, PrincipalId, SessionId};
use serde_json::Value;

use super::error::{ActionError, ArgumentsError};
use crate::flow::FlowSource;

/// The deepest nesting of an intent's arguments (the top-level object is
/// depth 1).
pub const MAX_ARGS_DEPTH: usize = 8;
/// The most JSON values (objects, arrays and scalars, each counting one)
/// in an intent's arguments.
pub const MAX_ARGS_VALUES: usize = 1024;
/// The most bytes of object keys and strings in an intent's arguments.
pub const MAX_ARGS_BYTES: usize = 64 * 1024;
/// The longest tool name, in bytes.
pub const MAX_TOOL_NAME: usize = 64;
/// The action id of a flow decision.
pub const FLOW_ACTION: &str = "flow";

/// A node control method: the actions that are not tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Control {
    /// `node.status`: read the node's status.
    NodeStatus,
    /// `agents.list`: list the node's agents.
    AgentsList,
    /// `agent.suspend`: suspend an agent.
    AgentSuspend,
    /// `agent.resume`: resume a suspended agent.
    AgentResume,
    /// `agent.retire`: retire an agent for good.
    AgentRetire,
    /// `mesh.forward`: forward an intent to another node.
    MeshForward,
    /// `policy.reload`: load the policy set again.
    PolicyReload,
    /// `killswitch.set`: engage or release the kill switch.
    KillswitchSet,
    /// `approvals.decide`: approve or reject a pending intent.
    ApprovalsDecide,
    /// `approvals.list`: list or show approvals (pending and decided).
    ApprovalsList,
    /// `audit.read`: read or verify the node's audit log.
    AuditRead,
    /// `audit.replay`: replay a recorded session (or re-decide it under
    /// another policy set).
    AuditReplay,
    /// `policy.what_if`: re-decide recorded intents under another policy set.
    PolicyWhatIf,
    /// `audit.subscribe`: follow the node's audit log live.
    AuditSubscribe,
    /// `audit.checkpoint`: read the node's latest signed checkpoint.
    AuditCheckpoint,
    /// `audit.cosign`: hand the node a witness's cosignature.
    AuditCosign,
}

impl Control {
    /// Every control method.
    pub const ALL: [Control; 16] = [
        Control::NodeStatus,
        Control::AgentsList,
        Control::AgentSuspend,
        Control::AgentResume,
        Control::AgentRetire,
        Control::MeshForward,
        Control::PolicyReload,
        Control::KillswitchSet,
        Control::ApprovalsDecide,
        Control::ApprovalsList,
        Control::AuditRead,
        Control::AuditReplay,
        Control::PolicyWhatIf,
        Control::AuditSubscribe,
        Control::AuditCheckpoint,
        Control::AuditCosign,
    ];

    /// The method name, which is also the Cedar action id.
    pub const fn name(self) -> &'static str {
        match self {
            Control::NodeStatus => "node.status",
            Control::AgentsList => "agents.list",
            Control::AgentSuspend => "agent.suspend",
            Control::AgentResume => "agent.resume",
            Control::AgentRetire => "agent.retire",
            Control::MeshForward => "mesh.forward",
            Control::PolicyReload => "policy.reload",
            Control::KillswitchSet => "killswitch.set",
            Control::ApprovalsDecide => "approvals.decide",
            Control::ApprovalsList => "approvals.list",
            Control::AuditRead => "audit.read",
            Control::AuditReplay => "audit.replay",
            Control::PolicyWhatIf => "policy.what_if",
            Control::AuditSubscribe => "audit.subscribe",
            Control::AuditCheckpoint => "audit.checkpoint",
            Control::AuditCosign => "audit.cosign",
        }
    }
}

/// An action: a tool call (`Mxp::Action::"tool:<name>"`) or a node control
/// method (`Mxp::Action::"node.status"`, …). The text form is the Cedar
/// action id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Action(String);

impl Action {
    /// A tool call. The name is 1 to [`MAX_TOOL_NAME`] characters of
    /// `A-Z a-z 0-9 . _ -`.
    pub fn tool(name: &str) -> Result<Action, ActionError> {
        if is_tool_name(name) {
            Ok(Action(format!("tool:{name}")))
        } else {
            Err(ActionError::ToolName(name.chars().take(80).collect()))
        }
    }

    /// The flow of labelled data into a sink (`Mxp::Action::"flow"`,
    /// resource an `Mxp::Source`, `context.sink` the sink tool).
    pub fn flow() -> Action {
        Action(FLOW_ACTION.to_owned())
    }

    /// A node control method.
    pub fn control(control: Control) -> Action {
        Action(control.name().to_owned())
    }

    /// The Cedar action id: `tool:<name>` or the control method name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tool name, for a tool call.
    pub fn tool_name(&self) -> Option<&str> {
        self.0.strip_prefix("tool:")
    }
}

/// Whether `name` is a valid tool name.
pub(crate) fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl FromStr for Action {
    type Err = ActionError;

    /// `tool:<name>` or a control method name.
    fn from_str(s: &str) -> Result<Action, ActionError> {
        if let Some(name) = s.strip_prefix("tool:") {
            return Action::tool(name);
        }
        if s == FLOW_ACTION {
            return Ok(Action::flow());
        }
        Control::ALL
            .iter()
            .find(|c| c.name() == s)
            .map(|c| Action::control(*c))
            .ok_or_else(|| ActionError::Unknown(s.chars().take(80).collect()))
    }
}

impl From<Control> for Action {
    fn from(control: Control) -> Action {
        Action::control(control)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Action({})", self.0)
    }
}

/// What an intent acts on.
///
/// | variant | Cedar entity | id | attributes |
/// |---|---|---|---|
/// | `Node` | `Mxp::Node` | `node:<fp>` | none |
/// | `Agent` | `Mxp::Agent`, `in Mxp::Node::"node:<fp>"` | `agent:<uuid>@<fp>` | none |
/// | `Path` | `Mxp::Path` | the path | `name` (the path) |
/// | `Host` | `Mxp::Host` | the host | `name` |
/// | `Skill` | `Mxp::Skill` | the skill | `name` |
/// | `Approval` | `Mxp::Approval` | the approval id | none |
/// | `Source` | `Mxp::Source` | `<kind>:<name>` ([`FlowSource::entity_id`]) | `kind`, `name`, `step` (-1 for none) |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// A node (the local one for most control methods and for tools with no
    /// other target; the destination for `mesh.forward`).
    Node(Fingerprint),
    /// An agent and the node hosting it.
    Agent {
        /// The agent.
        agent: AgentId,
        /// Its node.
        node: Fingerprint,
    },
    /// A file system path.
    Path(String),
    /// A network host.
    Host(String),
    /// A skill.
    Skill(String),
    /// A pending approval.
    Approval(String),
    /// Where labelled data came from (flow decisions).
    Source(FlowSource),
}

impl Resource {
    /// The Cedar entity type name, without the `Mxp::` namespace.
    pub const fn type_name(&self) -> &'static str {
        match self {
            Resource::Node(_) => "Node",
            Resource::Agent { .. } => "Agent",
            Resource::Path(_) => "Path",
            Resource::Host(_) => "Host",
            Resource::Skill(_) => "Skill",
            Resource::Approval(_) => "Approval",
            Resource::Source(_) => "Source",
        }
    }

    /// The Cedar entity id.
    pub fn id(&self) -> String {
        match self {
            Resource::Node(fp) => PrincipalId::Node(*fp).to_string(),
            Resource::Agent { agent, node } => PrincipalId::Agent {
                agent: *agent,
                node: *node,
            }
            .to_string(),
            Resource::Path(s) | Resource::Host(s) | Resource::Skill(s) | Resource::Approval(s) => {
                s.clone()
            }
            Resource::Source(f) => f.entity_id(),
        }
    }
}

impl fmt::Display for Resource {
    /// The Cedar entity uid, e.g. `Mxp::Path::"/tmp/x"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mxp::{}::{:?}", self.type_name(), self.id())
    }
}

/// The trust zone an intent runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Zone {
    /// `sandbox`: nothing leaves the sandbox.
    Sandbox,
    /// `supervised`: a human watches.
    Supervised,
    /// `high_stakes`: effects are costly to undo.
    HighStakes,
}

impl Zone {
    /// The name policies compare `context.zone` with.
    pub const fn name(self) -> &'static str {
        match self {
            Zone::Sandbox => "sandbox",
            Zone::Supervised => "supervised",
            Zone::HighStakes => "high_stakes",
        }
    }
}

/// What kind of effect an intent has: the protocol's one definition,
/// shared with the node's tool registry.
pub use mxp_protocol::EffectClass;

/// An intent's arguments as a Cedar record (`context.args`).
///
/// JSON maps to Cedar as follows: object → record; array → set (Cedar sets
/// are unordered and drop duplicates); string → String; `true`/`false` →
/// Bool; an integer in `i64` → Long; any other number (fractions,
/// exponents, integers beyond `i64`) → String holding the number's JSON
/// text (Cedar has no floats); `null` → the attribute is left out (in an
/// array, the element is left out). A top level that is not an object
/// becomes `{ "value": … }`.
///
/// Bounded by [`MAX_ARGS_DEPTH`], [`MAX_ARGS_VALUES`] and
/// [`MAX_ARGS_BYTES`].
#[derive(Debug, Clone)]
pub struct Arguments(RestrictedExpression);

impl Arguments {
    /// No arguments: the empty record.
    pub fn empty() -> Arguments {
        Arguments(
            RestrictedExpression::new_record(std::iter::empty())
                .unwrap_or_else(|_| RestrictedExpression::new_set(std::iter::empty())),
        )
    }

    /// Converts JSON arguments, within the limits.
    pub fn from_json(value: &Value) -> Result<Arguments, ArgumentsError> {
        let mut budget = Budget {
            values: 0,
            bytes: 0,
        };
        let record = match value {
            Value::Object(_) => convert(value, 1, &mut budget)?,
            Value::Null => None,
            other => {
                let inner = convert(other, 2, &mut budget)?;
                let pairs = inner.map(|v| ("value".to_owned(), v));
                Some(
                    RestrictedExpression::new_record(pairs)
                        .map_err(|e| ArgumentsError::Record(e.to_string()))?,
                )
            }
        };
        Ok(record.map(Arguments).unwrap_or_else(Arguments::empty))
    }

    pub(crate) fn expression(&self) -> &RestrictedExpression {
        &self.0
    }
}

impl Default for Arguments {
    fn default() -> Arguments {
        Arguments::empty()
    }
}

struct Budget {
    values: usize,
    bytes: usize,
}

impl Budget {
    fn value(&mut self) -> Result<(), ArgumentsError> {
        self.values += 1;
        if self.values > MAX_ARGS_VALUES {
            return Err(ArgumentsError::TooManyValues {
                limit: MAX_ARGS_VALUES,
            });
        }
        Ok(())
    }

    fn bytes(&mut self, n: usize) -> Result<(), ArgumentsError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_ARGS_BYTES {
            return Err(ArgumentsError::TooManyBytes {
                limit: MAX_ARGS_BYTES,
            });
        }
        Ok(())
    }
}

/// One JSON value at `depth` (1 = top level); `None` for `null`.
fn convert(
    value: &Value,
    depth: usize,
    budget: &mut Budget,
) -> Result<Option<RestrictedExpression>, ArgumentsError> {
    if depth > MAX_ARGS_DEPTH {
        return Err(ArgumentsError::TooDeep {
            limit: MAX_ARGS_DEPTH,
        });
    }
    budget.value()?;
    Ok(match value {
        Value::Null => None,
        Value::Bool(b) => Some(RestrictedExpression::new_bool(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => {
                let text = n.to_string();
                budget.bytes(text.len())?;
                RestrictedExpression::new_string(text)
            }
        }),
        Value::String(s) => {
            budget.bytes(s.len())?;
            Some(RestrictedExpression::new_string(s.clone()))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len().min(MAX_ARGS_VALUES));
            for item in items {
                if let Some(v) = convert(item, depth + 1, budget)? {
                    out.push(v);
                }
            }
            Some(RestrictedExpression::new_set(out))
        }
        Value::Object(map) => {
            let mut out = Vec::with_capacity(map.len().min(MAX_ARGS_VALUES));
            for (key, item) in map {
                budget.bytes(key.len())?;
                if let Some(v) = convert(item, depth + 1, budget)? {
                    out.push((key.clone(), v));
                }
            }
            Some(
                RestrictedExpression::new_record(out)
                    .map_err(|e| ArgumentsError::Record(e.to_string()))?,
            )
        }
    })
}

/// The context of a request (`context` in Cedar). Every attribute is an
/// input: the engine reads no clock and no payload of its own.
///
/// | attribute | Cedar type | from |
/// |---|---|---|
/// | `args` | `Mxp::Args` record | [`with_args`](Self::with_args) |
/// | `session` | String | the session id |
/// | `zone` | String | [`Zone::name`] |
/// | `budget_spent` | Long | [`with_budget_spent`](Self::with_budget_spent) (saturates at `i64::MAX`) |
/// | `now` | Long | unix seconds, given |
/// | `effect` | String | [`EffectClass::name`] |
/// | `approved` | Bool | [`approved_by`](Self::approved_by) |
/// | `approvers` | Set&lt;String&gt; | the approvers' PrincipalId text |
/// | `sink` | String, optional | flow decisions only: the tool the data would reach ([`with_sink`](Self::with_sink)) |
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub(crate) args: Arguments,
    pub(crate) session: SessionId,
    pub(crate) zone: Zone,
    pub(crate) budget_spent: i64,
    pub(crate) now: i64,
    pub(crate) effect: EffectClass,
    pub(crate) approved: bool,
    pub(crate) approvers: Vec<PrincipalId>,
    pub(crate) sink: Option<String>,
}

impl RequestContext {
    /// A context with no arguments, nothing spent and no approval.
    pub fn new(session: SessionId, zone: Zone, effect: EffectClass, now_unix_secs: i64) -> Self {
        RequestContext {
            args: Arguments::empty(),
            session,
            zone,
            budget_spent: 0,
            now: now_unix_secs,
            effect,
            approved: false,
            approvers: Vec::new(),
            sink: None,
        }
    }

    /// For a flow decision: the tool the labelled data would reach.
    #[must_use]
    pub fn with_sink(mut self, tool: &str) -> Self {
        self.sink = Some(tool.to_owned());
        self
    }

    /// The sink of a flow decision.
    pub fn sink(&self) -> Option<&str> {
        self.sink.as_deref()
    }

    /// With these arguments.
    #[must_use]
    pub fn with_args(mut self, args: Arguments) -> Self {
        self.args = args;
        self
    }

    /// With this much budget spent in the session.
    #[must_use]
    pub fn with_budget_spent(mut self, spent: u64) -> Self {
        self.budget_spent = i64::try_from(spent).unwrap_or(i64::MAX);
        self
    }

    /// Marks the intent approved by these principals (`context.approved =
    /// true`). The caller sets this only once the approvals satisfy what
    /// [`Remedy::Approval`](super::Remedy::Approval) asked for (see
    /// [`ApprovalRequirement::is_satisfied_by`](super::ApprovalRequirement::is_satisfied_by)).
    #[must_use]
    pub fn approved_by(mut self, approvers: Vec<PrincipalId>) -> Self {
        self.approved = true;
        self.approvers = approvers;
        self
    }

    /// The arguments.
    pub fn args(&self) -> &Arguments {
        &self.args
    }

    /// The session.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// The zone.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The effect class.
    pub fn effect(&self) -> EffectClass {
        self.effect
    }

    /// The time, unix seconds.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The budget spent.
    pub fn budget_spent(&self) -> i64 {
        self.budget_spent
    }

    /// Whether the intent is approved.
    pub fn approved(&self) -> bool {
        self.approved
    }

    /// Who approved it.
    pub fn approvers(&self) -> &[PrincipalId] {
        &self.approvers
    }
}

/// One decision's question. The principal is a [`PrincipalId`] and nothing
/// else: it comes from authentication, never from the intent's payload, so
/// arguments cannot change who is asking.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) principal: PrincipalId,
    pub(crate) action: Action,
    pub(crate) resource: Resource,
    pub(crate) context: RequestContext,
}

impl Request {
    /// The request of an authenticated `principal`.
    pub fn new(
        principal: PrincipalId,
        action: Action,
        resource: Resource,
        context: RequestContext,
    ) -> Request {
        Request {
            principal,
            action,
            resource,
            context,
        }
    }

    /// Who asks.
    pub fn principal(&self) -> &PrincipalId {
        &self.principal
    }

    /// The action.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// The resource.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The context.
    pub fn context(&self) -> &RequestContext {
        &self.context
    }
}
