//! The engine: the validated set, its per-action index, and decisions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, RestrictedExpression,
};
use mxp_protocol::{Fingerprint, PrincipalId};

use super::error::{PolicyLoadError, RequestError};
use super::load::{self, ApprovalRequirement, Summary, index_keys};
use super::request::{Request, Resource};
use super::schema::{ACTION_GROUPS, DEFAULT_FILES};

/// An action id and the uids of the entities a request adds.
type EntityKey = (String, Vec<EntityUid>);

/// Cached entity sets per engine, at most.
const ENTITY_CACHE: usize = 4096;

/// The entities of one request: the action's own, or a shared cached set.
enum Ents<'a> {
    Borrowed(&'a Entities),
    Shared(Arc<Entities>),
}

impl std::ops::Deref for Ents<'_> {
    type Target = Entities;
    fn deref(&self) -> &Entities {
        match self {
            Ents::Borrowed(e) => e,
            Ents::Shared(e) => e,
        }
    }
}

/// What the engine decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// The intent may run.
    Allow,
    /// It may not.
    Deny,
    /// It may run once approved: see [`Remedy::Approval`] for who approves.
    RequireApproval,
}

/// What the planner can do about a denial.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Remedy {
    /// No permit matched: this permission is missing.
    MissingPermission {
        /// The Cedar action id (`tool:echo`, `agent.suspend`, …).
        action: String,
        /// The resource's Cedar uid, e.g. `Mxp::Path::"/tmp/x"`.
        resource: String,
    },
    /// Approvals lift the denial (with [`Decision::RequireApproval`]): every
    /// requirement must be met, then the intent is asked again with
    /// [`RequestContext::approved_by`](super::RequestContext::approved_by).
    Approval {
        /// Who approves and how many, one entry per approver kind (the
        /// largest count any determining policy asks for).
        requirements: Vec<ApprovalRequirement>,
    },
    /// A budget is spent. Budgets are not Cedar: the caller produces this,
    /// with [`Outcome::budget_exceeded`].
    BudgetExceeded {
        /// When the budget resets, unix seconds.
        resets_at: i64,
    },
}

/// A decision, why, and what would change it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Why, sorted: the ids of the determining policies (the permits for
    /// Allow, the forbids for Deny and RequireApproval; empty for a Deny
    /// because no permit matched); or, when evaluation failed, the error
    /// texts (each names its policy).
    pub reasons: Vec<String>,
    /// What the planner can do, when anything.
    pub remedy: Option<Remedy>,
}

impl Outcome {
    /// A Deny for a spent budget (the caller's check, not Cedar's).
    pub fn budget_exceeded(reason: impl Into<String>, resets_at: i64) -> Outcome {
        Outcome {
            decision: Decision::Deny,
            reasons: vec![reason.into()],
            remedy: Some(Remedy::BudgetExceeded { resets_at }),
        }
    }

    /// An Allow for these reasons (for policies other than Cedar's, e.g.
    /// in tests).
    pub fn allow(reasons: Vec<String>) -> Outcome {
        Outcome {
            decision: Decision::Allow,
            reasons,
            remedy: None,
        }
    }

    /// A Deny for these reasons, with what would change it.
    pub fn deny(reasons: Vec<String>, remedy: Option<Remedy>) -> Outcome {
        Outcome {
            decision: Decision::Deny,
            reasons,
            remedy,
        }
    }

    fn deny_error(reasons: Vec<String>) -> Outcome {
        Outcome {
            decision: Decision::Deny,
            reasons,
            remedy: None,
        }
    }
}

/// The policies one action is evaluated against.
struct Group {
    /// The action's own group plus the unconstrained policies.
    set: PolicySet,
    /// The permits of `set`, to tell whether approval would allow.
    permits: PolicySet,
}

/// A loaded policy set, indexed by action. Immutable: share it in an
/// `Arc`; reload by loading a new engine and swapping the `Arc` (a failed
/// load leaves the old one in place).
pub struct PolicyEngine {
    whole: PolicySet,
    groups: HashMap<String, Group>,
    unconstrained: Group,
    approvals: HashMap<PolicyId, ApprovalRequirement>,
    /// Per action id: the action entity with its ancestors.
    action_entities: HashMap<String, Entities>,
    /// Entities per (action, extra entities), built once (bounded by
    /// [`ENTITY_CACHE`]; cleared when full).
    entity_cache: Mutex<HashMap<EntityKey, Arc<Entities>>>,
    /// `None` only in the schema-less last-resort empty engine.
    types: Option<Types>,
    authorizer: Authorizer,
    summary: Summary,
}

/// The entity type names, parsed once.
struct Types {
    node: EntityTypeName,
    peer: EntityTypeName,
    operator: EntityTypeName,
    agent: EntityTypeName,
    path: EntityTypeName,
    host: EntityTypeName,
    skill: EntityTypeName,
    approval: EntityTypeName,
    source: EntityTypeName,
    action: EntityTypeName,
    /// `Mxp::Action::"tool"`, the parent of tool actions not in the schema.
    tool_group: EntityUid,
}

impl Types {
    fn new() -> Result<Types, PolicyLoadError> {
        let t = |name: &str| {
            EntityTypeName::from_str(name).map_err(|e| PolicyLoadError::Schema(e.to_string()))
        };
        let action = t("Mxp::Action")?;
        Ok(Types {
            tool_group: Types::uid(&action, "tool"),
            action,
            node: t("Mxp::Node")?,
            peer: t("Mxp::Peer")?,
            operator: t("Mxp::Operator")?,
            agent: t("Mxp::Agent")?,
            path: t("Mxp::Path")?,
            host: t("Mxp::Host")?,
            skill: t("Mxp::Skill")?,
            approval: t("Mxp::Approval")?,
            source: t("Mxp::Source")?,
        })
    }

    fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }

    fn node_uid(&self, fp: &Fingerprint) -> EntityUid {
        Types::uid(&self.node, &PrincipalId::Node(*fp).to_string())
    }
}

impl PolicyEngine {
    /// Loads, validates and indexes a policy set from `(file name, text)`
    /// pairs. Each text holds any number of policies; ids are `@id("…")`
    /// or `<file name>:<n>` (the n-th policy of the file, from 0).
    pub fn load(files: &[(String, String)]) -> Result<PolicyEngine, PolicyLoadError> {
        let loaded = load::load(files)?;
        PolicyEngine::build(loaded)
    }

    /// Loads the `*.cedar` files of `dir` (see [`read_policy_dir`]).
    ///
    /// [`read_policy_dir`]: super::read_policy_dir
    pub fn load_dir(dir: &Path) -> Result<PolicyEngine, PolicyLoadError> {
        PolicyEngine::load(&load::read_policy_dir(dir)?)
    }

    /// The shipped default set (`governance/policy/default/`). If it ever
    /// failed to load (its tests say it does not), this is the empty
    /// engine, which denies everything.
    pub fn default_set() -> PolicyEngine {
        PolicyEngine::load(&default_files()).unwrap_or_else(|_| PolicyEngine::empty())
    }

    /// The engine with no policies: it denies every intent.
    pub fn empty() -> PolicyEngine {
        PolicyEngine::load(&[]).unwrap_or_else(|_| PolicyEngine::bare())
    }

    /// An empty engine that needs no schema (the last resort of
    /// [`empty`](Self::empty), which cannot fail in practice).
    fn bare() -> PolicyEngine {
        let empty_group = || Group {
            set: PolicySet::new(),
            permits: PolicySet::new(),
        };
        PolicyEngine {
            whole: PolicySet::new(),
            groups: HashMap::new(),
            unconstrained: empty_group(),
            approvals: HashMap::new(),
            action_entities: HashMap::new(),
            entity_cache: Mutex::new(HashMap::new()),
            types: None,
            authorizer: Authorizer::new(),
            summary: Summary::default(),
        }
    }

    fn build(loaded: load::Loaded) -> Result<PolicyEngine, PolicyLoadError> {
        let types = Types::new()?;
        let mut groups_of_actions: BTreeSet<String> =
            ACTION_GROUPS.iter().map(|g| (*g).to_owned()).collect();
        groups_of_actions.extend(
            loaded
                .schema
                .action_groups()
                .map(|uid| uid.id().unescaped().to_owned()),
        );

        let mut unconstrained: Vec<&Policy> = Vec::new();
        let mut by_action: BTreeMap<String, Vec<&Policy>> = BTreeMap::new();
        for policy in &loaded.policies {
            match index_keys(policy, &groups_of_actions) {
                None => unconstrained.push(policy),
                Some(keys) => {
                    for key in keys {
                        by_action.entry(key).or_default().push(policy);
                    }
                }
            }
        }
        let to_err = |e: cedar_policy::PolicySetError| PolicyLoadError::Schema(e.to_string());
        let group = |own: &[&Policy]| -> Result<Group, PolicyLoadError> {
            let mut set = PolicySet::new();
            let mut permits = PolicySet::new();
            for policy in own.iter().chain(unconstrained.iter()) {
                set.add((*policy).clone()).map_err(to_err)?;
                if policy.effect() == Effect::Permit {
                    permits.add((*policy).clone()).map_err(to_err)?;
                }
            }
            Ok(Group { set, permits })
        };
        let mut groups = HashMap::with_capacity(by_action.len());
        for (action, own) in &by_action {
            groups.insert(action.clone(), group(own)?);
        }
        let unconstrained_group = group(&[])?;

        // Action entities (with their groups as parents) for every action
        // the schema declares, one small Entities per action.
        let schema_actions = loaded
            .schema
            .action_entities()
            .map_err(|e| PolicyLoadError::Schema(e.to_string()))?;
        let mut action_entities = HashMap::new();
        for uid in loaded.schema.actions() {
            let mut members: Vec<Entity> = schema_actions.get(uid).cloned().into_iter().collect();
            if let Some(ancestors) = schema_actions.ancestors(uid) {
                members.extend(ancestors.filter_map(|a| schema_actions.get(a).cloned()));
            }
            let entities = Entities::from_entities(members, None)
                .map_err(|e| PolicyLoadError::Schema(e.to_string()))?;
            action_entities.insert(uid.id().unescaped().to_owned(), entities);
        }

        let mut whole = PolicySet::new();
        for policy in &loaded.policies {
            whole.add(policy.clone()).map_err(to_err)?;
        }
        let mut summary = loaded.summary;
        summary.indexed_actions = groups.len();
        summary.unconstrained = unconstrained.len();
        Ok(PolicyEngine {
            whole,
            groups,
            unconstrained: unconstrained_group,
            approvals: loaded.approvals,
            action_entities,
            entity_cache: Mutex::new(HashMap::new()),
            types: Some(types),
            authorizer: Authorizer::new(),
            summary,
        })
    }

    /// What the set holds (as [`check`](super::check) reports it).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The whole validated policy set, with the final policy ids. For
    /// differential tests and benchmarks against Cedar's own evaluation.
    pub fn policy_set(&self) -> &PolicySet {
        &self.whole
    }

    /// The policies evaluated for `action`: its index group plus the
    /// unconstrained ones.
    pub fn policies_for(&self, action: &str) -> &PolicySet {
        &self.group(action).set
    }

    fn group(&self, action: &str) -> &Group {
        self.groups.get(action).unwrap_or(&self.unconstrained)
    }

    /// Cedar's inputs for a request: the request (principal, action and
    /// resource uids and the context record) and the entities it needs
    /// (the action with its groups; an agent principal or resource, `in`
    /// its node; a path, host or skill resource with its `name`). No schema
    /// is applied per request: policies were validated at load and the
    /// request is built by this code from typed values.
    pub fn cedar_request(
        &self,
        req: &Request,
    ) -> Result<(cedar_policy::Request, Entities), RequestError> {
        let (request, entities) = self.cedar_inputs(req)?;
        Ok((request, Entities::clone(&entities)))
    }

    fn cedar_inputs(
        &self,
        req: &Request,
    ) -> Result<(cedar_policy::Request, Ents<'_>), RequestError> {
        let t = self
            .types
            .as_ref()
            .ok_or_else(|| RequestError::Entities("the engine has no entity types".to_owned()))?;
        let mut extra: Vec<Entity> = Vec::new();

        let principal_text = req.principal.to_string();
        let principal = match &req.principal {
            PrincipalId::Peer(_) => Types::uid(&t.peer, &principal_text),
            PrincipalId::Operator(_) => Types::uid(&t.operator, &principal_text),
            PrincipalId::Node(_) => Types::uid(&t.node, &principal_text),
            PrincipalId::Agent { node, .. } => {
                let uid = Types::uid(&t.agent, &principal_text);
                extra.push(Entity::new_no_attrs(
                    uid.clone(),
                    HashSet::from([t.node_uid(node)]),
                ));
                uid
            }
            // A caller named by a trusted forwarder is judged as that peer:
            // a relayed caller is never an operator or a node here.
            PrincipalId::Relayed { caller, .. } => {
                Types::uid(&t.peer, &PrincipalId::Peer(*caller).to_string())
            }
            _ => return Err(RequestError::Entities("unknown principal kind".to_owned())),
        };

        let named =
            |ty: &EntityTypeName, name: &str| -> Result<(EntityUid, Entity), RequestError> {
                let uid = Types::uid(ty, name);
                let attrs = HashMap::from([(
                    "name".to_owned(),
                    RestrictedExpression::new_string(name.to_owned()),
                )]);
                let entity = Entity::new(uid.clone(), attrs, HashSet::new())
                    .map_err(|e| RequestError::Entities(e.to_string()))?;
                Ok((uid, entity))
            };
        let resource = match &req.resource {
            Resource::Node(fp) => t.node_uid(fp),
            Resource::Agent { agent, node } => {
                let text = PrincipalId::Agent {
                    agent: *agent,
                    node: *node,
                }
                .to_string();
                let uid = Types::uid(&t.agent, &text);
                if uid != principal {
                    extra.push(Entity::new_no_attrs(
                        uid.clone(),
                        HashSet::from([t.node_uid(node)]),
                    ));
                }
                uid
            }
            Resource::Path(p) => {
                let (uid, e) = named(&t.path, p)?;
                extra.push(e);
                uid
            }
            Resource::Host(h) => {
                let (uid, e) = named(&t.host, h)?;
                extra.push(e);
                uid
            }
            Resource::Skill(s) => {
                let (uid, e) = named(&t.skill, s)?;
                extra.push(e);
                uid
            }
            Resource::Approval(a) => Types::uid(&t.approval, a),
            Resource::Source(f) => {
                let uid = Types::uid(&t.source, &f.entity_id());
                let step = f.step.and_then(|s| i64::try_from(s).ok()).unwrap_or(-1);
                let attrs = HashMap::from([
                    (
                        "kind".to_owned(),
                        RestrictedExpression::new_string(f.kind.name().to_owned()),
                    ),
                    (
                        "name".to_owned(),
                        RestrictedExpression::new_string(f.name.clone()),
                    ),
                    ("step".to_owned(), RestrictedExpression::new_long(step)),
                ]);
                let entity = Entity::new(uid.clone(), attrs, HashSet::new())
                    .map_err(|e| RequestError::Entities(e.to_string()))?;
                extra.push(entity);
                uid
            }
        };

        let action_id = req.action.as_str();
        let action = Types::uid(&t.action, action_id);
        let base = self.action_entities.get(action_id);
        if let (Some(base), true) = (base, extra.is_empty()) {
            return self.finish_inputs(req, principal, action, resource, Ents::Borrowed(base));
        }
        // Building entities computes Cedar's transitive closure: keep the
        // result per (action, extra entities), which a node repeats for
        // every Call of one agent or path.
        let key = (
            action_id.to_owned(),
            extra.iter().map(|e| e.uid()).collect::<Vec<_>>(),
        );
        if let Some(hit) = self
            .entity_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
        {
            return self.finish_inputs(req, principal, action, resource, Ents::Shared(hit));
        }
        let entities: Entities = match base {
            Some(base) => base
                .clone()
                .add_entities(extra, None)
                .map_err(|e| RequestError::Entities(e.to_string()))?,
            None => {
                // An action the schema does not declare: a tool no policy
                // names is still in the `tool` group.
                if req.action.tool_name().is_some() {
                    extra.push(Entity::new_no_attrs(
                        action.clone(),
                        HashSet::from([t.tool_group.clone()]),
                    ));
                    extra.push(Entity::new_no_attrs(t.tool_group.clone(), HashSet::new()));
                }
                Entities::from_entities(extra, None)
                    .map_err(|e| RequestError::Entities(e.to_string()))?
            }
        };
        let entities = Arc::new(entities);
        {
            let mut cache = self.entity_cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= ENTITY_CACHE {
                cache.clear();
            }
            cache.insert(key, entities.clone());
        }
        self.finish_inputs(req, principal, action, resource, Ents::Shared(entities))
    }

    fn finish_inputs<'a>(
        &'a self,
        req: &Request,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        entities: Ents<'a>,
    ) -> Result<(cedar_policy::Request, Ents<'a>), RequestError> {
        let ctx = &req.context;
        let approvers = ctx
            .approvers
            .iter()
            .map(|p| RestrictedExpression::new_string(p.to_string()));
        let sink = ctx.sink.as_ref().map(|s| {
            (
                "sink".to_owned(),
                RestrictedExpression::new_string(s.clone()),
            )
        });
        let context = Context::from_pairs(
            [
                ("args".to_owned(), ctx.args.expression().clone()),
                (
                    "session".to_owned(),
                    RestrictedExpression::new_string(ctx.session.as_str().to_owned()),
                ),
                (
                    "zone".to_owned(),
                    RestrictedExpression::new_string(ctx.zone.name().to_owned()),
                ),
                (
                    "budget_spent".to_owned(),
                    RestrictedExpression::new_long(ctx.budget_spent),
                ),
                ("now".to_owned(), RestrictedExpression::new_long(ctx.now)),
                (
                    "effect".to_owned(),
                    RestrictedExpression::new_string(ctx.effect.name().to_owned()),
                ),
                (
                    "approved".to_owned(),
                    RestrictedExpression::new_bool(ctx.approved),
                ),
                (
                    "approvers".to_owned(),
                    RestrictedExpression::new_set(approvers),
                ),
            ]
            .into_iter()
            .chain(sink),
        )
        .map_err(|e| RequestError::Context(e.to_string()))?;

        let request = cedar_policy::Request::new(principal, action, resource, context, None)
            .map_err(|e| RequestError::Request(e.to_string()))?;
        Ok((request, entities))
    }

    /// Cedar's response for a request, evaluating only the action's index
    /// group and the unconstrained policies. Identical (decision, reasons,
    /// errors) to `Authorizer::is_authorized` over [`policy_set`](Self::policy_set).
    pub fn authorize(&self, req: &Request) -> Result<cedar_policy::Response, RequestError> {
        let (request, entities) = self.cedar_inputs(req)?;
        Ok(self
            .authorizer
            .is_authorized(&request, &self.group(req.action.as_str()).set, &entities))
    }

    /// Decides a request. Fails closed: an error building Cedar's inputs
    /// or evaluating any policy is a Deny naming the error.
    pub fn decide(&self, req: &Request) -> Outcome {
        let (request, entities) = match self.cedar_inputs(req) {
            Ok(inputs) => inputs,
            Err(e) => return Outcome::deny_error(vec![e.to_string()]),
        };
        let group = self.group(req.action.as_str());
        let response = self
            .authorizer
            .is_authorized(&request, &group.set, &entities);
        let diagnostics = response.diagnostics();
        let mut errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
        if !errors.is_empty() {
            errors.sort();
            return Outcome::deny_error(errors);
        }
        let mut reasons: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
        reasons.sort();
        let missing = || Remedy::MissingPermission {
            action: req.action.as_str().to_owned(),
            resource: req.resource.to_string(),
        };
        if response.decision() == CedarDecision::Allow {
            return Outcome {
                decision: Decision::Allow,
                reasons,
                remedy: None,
            };
        }
        if reasons.is_empty() {
            return Outcome {
                decision: Decision::Deny,
                reasons,
                remedy: Some(missing()),
            };
        }
        // Every determining forbid carries @approval, and the intent is not
        // yet approved: approval would lift the deny if a permit applies.
        let requirements: Option<Vec<ApprovalRequirement>> = diagnostics
            .reason()
            .map(|id| self.approvals.get(id).copied())
            .collect();
        match requirements {
            Some(requirements) if !req.context.approved => {
                let permitted = self
                    .authorizer
                    .is_authorized(&request, &group.permits, &entities);
                let clean = permitted.diagnostics().errors().next().is_none();
                if permitted.decision() == CedarDecision::Allow && clean {
                    Outcome {
                        decision: Decision::RequireApproval,
                        reasons,
                        remedy: Some(Remedy::Approval {
                            requirements: merge(requirements),
                        }),
                    }
                } else {
                    Outcome {
                        decision: Decision::Deny,
                        reasons,
                        remedy: Some(missing()),
                    }
                }
            }
            _ => Outcome {
                decision: Decision::Deny,
                reasons,
                remedy: None,
            },
        }
    }
}

/// One requirement per approver kind, the largest count.
fn merge(requirements: Vec<ApprovalRequirement>) -> Vec<ApprovalRequirement> {
    let mut by_kind: BTreeMap<_, u8> = BTreeMap::new();
    for r in requirements {
        let n = by_kind.entry(r.approver()).or_insert(0);
        *n = (*n).max(r.count());
    }
    by_kind
        .into_iter()
        .map(|(kind, n)| ApprovalRequirement::new(kind, n))
        .collect()
}

/// The shipped default policy files as `(file name, text)` pairs, to load
/// alone or extended with more files.
pub fn default_files() -> Vec<(String, String)> {
    DEFAULT_FILES
        .iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
        .collect()
}
