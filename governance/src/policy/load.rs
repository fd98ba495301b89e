//! Loading a policy set: limits, parsing, ids, annotations, schema
//! validation, and the error positions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Effect, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use mxp_protocol::{PrincipalId, PrincipalKind};

use super::error::{PolicyDiagnostic, PolicyLoadError};
use super::request::is_tool_name;
use super::schema::{self, BUILTIN_TOOLS};

/// The most policy files one set may have.
pub const MAX_POLICY_FILES: usize = 256;
/// The longest policy file, in bytes.
pub const MAX_POLICY_FILE_BYTES: usize = 1024 * 1024;
/// The most policies one set may have, over all its files.
pub const MAX_POLICIES: usize = 10_000;
/// The largest `@approvers` count.
pub const MAX_APPROVERS: u8 = 16;

/// Who may approve an intent and how many distinct such principals must,
/// from a forbid policy's `@approval("<kind>")` and `@approvers("<n>")`
/// annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApprovalRequirement {
    approver: PrincipalKind,
    count: u8,
}

impl ApprovalRequirement {
    /// A requirement; `count` is clamped to `1..=`[`MAX_APPROVERS`].
    pub fn new(approver: PrincipalKind, count: u8) -> Self {
        ApprovalRequirement {
            approver,
            count: count.clamp(1, MAX_APPROVERS),
        }
    }

    /// The kind of principal who may approve (`@approval`).
    pub fn approver(&self) -> PrincipalKind {
        self.approver
    }

    /// How many distinct approvers of that kind are needed (`@approvers`,
    /// 1 when absent).
    pub fn count(&self) -> u8 {
        self.count
    }

    /// Whether `approvers` holds at least [`count`](Self::count) distinct
    /// principals of kind [`approver`](Self::approver).
    pub fn is_satisfied_by(&self, approvers: &[PrincipalId]) -> bool {
        let distinct: BTreeSet<&PrincipalId> = approvers
            .iter()
            .filter(|p| p.kind() == self.approver)
            .collect();
        distinct.len() >= usize::from(self.count)
    }
}

impl fmt::Display for ApprovalRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} distinct {} approver(s)",
            self.count,
            self.approver.name()
        )
    }
}

/// What `check` found in a valid policy set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Summary {
    /// Policy files.
    pub files: usize,
    /// Policies in all.
    pub policies: usize,
    /// `permit` policies.
    pub permits: usize,
    /// `forbid` policies.
    pub forbids: usize,
    /// Forbid policies carrying `@approval`.
    pub approval_policies: usize,
    /// The actions the index has a policy group for.
    pub indexed_actions: usize,
    /// Policies in the unconstrained group (evaluated for every action).
    pub unconstrained: usize,
    /// Tool actions the loader declared because policies name them.
    pub declared_tools: Vec<String>,
    /// The validator's warnings (the set is still valid).
    pub warnings: Vec<PolicyDiagnostic>,
}

/// A validated policy set, ready to index.
pub(crate) struct Loaded {
    /// The policies, with their final ids, in load order.
    pub(crate) policies: Vec<Policy>,
    /// The approval requirement of each `@approval` forbid.
    pub(crate) approvals: HashMap<PolicyId, ApprovalRequirement>,
    pub(crate) schema: Schema,
    pub(crate) summary: Summary,
}

/// Where a policy is: its file (index into the input) and byte offset.
#[derive(Clone, Copy)]
struct Place {
    file: usize,
    offset: usize,
}

/// Reads the `*.cedar` files of `dir` (not its subdirectories), sorted by
/// name, as `(file name, text)` pairs for [`PolicyEngine::load`] or
/// [`check`]. The only I/O in this module; bounded by
/// [`MAX_POLICY_FILES`] and [`MAX_POLICY_FILE_BYTES`] before reading.
///
/// [`PolicyEngine::load`]: super::PolicyEngine::load
pub fn read_policy_dir(dir: &Path) -> Result<Vec<(String, String)>, PolicyLoadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PolicyLoadError::Io { path, source }
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("cedar") {
            continue;
        }
        if !entry.file_type().map_err(io(&path))?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        names.push((name, path));
        if names.len() > MAX_POLICY_FILES {
            return Err(PolicyLoadError::TooManyFiles {
                got: names.len(),
                limit: MAX_POLICY_FILES,
            });
        }
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for (name, path) in names {
        let len = std::fs::metadata(&path).map_err(io(&path))?.len();
        if len > MAX_POLICY_FILE_BYTES as u64 {
            return Err(PolicyLoadError::FileTooLarge {
                file: name,
                got: len,
                limit: MAX_POLICY_FILE_BYTES,
            });
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| PolicyLoadError::NotUtf8 { file: name.clone() })?;
        files.push((name, text));
    }
    Ok(files)
}

/// Checks a policy set without building an engine: the pure core of
/// `mxp policy check <dir>` (pair it with [`read_policy_dir`]).
pub fn check(files: &[(String, String)]) -> Result<Summary, PolicyLoadError> {
    super::PolicyEngine::load(files).map(|engine| engine.summary().clone())
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, column)
}

fn diagnostic(file: &str, text: &str, offset: usize, reason: String) -> PolicyDiagnostic {
    let (line, column) = line_col(text, offset);
    PolicyDiagnostic {
        file: file.to_owned(),
        line,
        column,
        reason,
    }
}

/// The first labelled offset of a Cedar diagnostic, and its message with
/// any help appended.
fn cedar_reason(d: &dyn Diagnostic) -> (Option<usize>, String) {
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    let mut reason = d.to_string();
    if let Some(help) = d.help() {
        reason.push_str(&format!(" (help: {help})"));
    }
    (offset, reason)
}

pub(crate) fn load(files: &[(String, String)]) -> Result<Loaded, PolicyLoadError> {
    if files.len() > MAX_POLICY_FILES {
        return Err(PolicyLoadError::TooManyFiles {
            got: files.len(),
            limit: MAX_POLICY_FILES,
        });
    }
    let mut seen_files = BTreeSet::new();
    for (name, text) in files {
        if text.len() > MAX_POLICY_FILE_BYTES {
            return Err(PolicyLoadError::FileTooLarge {
                file: name.clone(),
                got: text.len() as u64,
                limit: MAX_POLICY_FILE_BYTES,
            });
        }
        if !seen_files.insert(name.as_str()) {
            return Err(PolicyLoadError::DuplicateFile { file: name.clone() });
        }
    }

    let mut diagnostics = Vec::new();
    let mut policies: Vec<Policy> = Vec::new();
    let mut places: HashMap<PolicyId, Place> = HashMap::new();
    let mut approvals = HashMap::new();
    let mut total = 0usize;

    for (file_idx, (name, text)) in files.iter().enumerate() {
        let set = match PolicySet::from_str(text) {
            Ok(set) => set,
            Err(errors) => {
                for e in errors.iter() {
                    let (offset, reason) = cedar_reason(e);
                    diagnostics.push(diagnostic(name, text, offset.unwrap_or(0), reason));
                }
                continue;
            }
        };
        total += set.num_of_policies() + set.num_of_templates();
        if total > MAX_POLICIES {
            return Err(PolicyLoadError::TooManyPolicies {
                got: total,
                limit: MAX_POLICIES,
            });
        }
        for template in set.templates() {
            let offset = text.find(&template.to_cedar()).unwrap_or(0);
            diagnostics.push(diagnostic(
                name,
                text,
                offset,
                "templates (policies with ?principal or ?resource slots) are not supported"
                    .to_owned(),
            ));
        }
        // The parser names a file's policies policy0, policy1, … in order.
        let mut ordered: Vec<(usize, &Policy)> = set
            .policies()
            .map(|p| {
                let n = p
                    .id()
                    .to_string()
                    .strip_prefix("policy")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX);
                (n, p)
            })
            .collect();
        ordered.sort_by_key(|(n, _)| *n);
        let mut cursor = 0;
        for (index, (_, policy)) in ordered.into_iter().enumerate() {
            // The policy's own text is a slice of the file; find it after the
            // previous policy for its position.
            let offset = policy
                .to_cedar()
                .and_then(|src| {
                    let found = text.get(cursor..)?.find(&src)? + cursor;
                    cursor = found + src.len();
                    Some(found)
                })
                .unwrap_or(cursor);
            let id = match policy.annotation("id") {
                Some(id) if id.trim().is_empty() => {
                    let at = annotation_offset(text, offset, "id");
                    diagnostics.push(diagnostic(
                        name,
                        text,
                        at,
                        "@id must not be empty".to_owned(),
                    ));
                    continue;
                }
                Some(id) => id.to_owned(),
                None => format!("{name}:{index}"),
            };
            let pid = PolicyId::new(&id);
            if let Some(prev) = places.get(&pid) {
                let (pfile, ptext) = files
                    .get(prev.file)
                    .map(|(n, t)| (n.as_str(), t.as_str()))
                    .unwrap_or_default();
                let (pl, pc) = line_col(ptext, prev.offset);
                diagnostics.push(diagnostic(
                    name,
                    text,
                    offset,
                    format!("policy id {id:?} is already used at {pfile}:{pl}:{pc}"),
                ));
                continue;
            }
            match approval(policy) {
                Ok(Some(req)) => {
                    approvals.insert(pid.clone(), req);
                }
                Ok(None) => {}
                Err((key, reason)) => {
                    let at = annotation_offset(text, offset, key);
                    diagnostics.push(diagnostic(name, text, at, reason));
                    continue;
                }
            }
            places.insert(
                pid.clone(),
                Place {
                    file: file_idx,
                    offset,
                },
            );
            policies.push(policy.new_id(pid));
        }
    }
    if !diagnostics.is_empty() {
        return Err(PolicyLoadError::Invalid { diagnostics });
    }

    // Tool actions the policies name, beyond the built-in ones.
    let mut tools = BTreeSet::new();
    for policy in &policies {
        for uid in policy.entity_literals() {
            let id = uid.id().unescaped();
            if uid.type_name().to_string() == "Mxp::Action"
                && id.strip_prefix("tool:").is_some_and(is_tool_name)
                && !BUILTIN_TOOLS.contains(&id)
            {
                tools.insert(id.to_owned());
            }
        }
    }
    let schema = schema::build(&tools)?;

    let mut whole = PolicySet::new();
    for policy in &policies {
        whole
            .add(policy.clone())
            .map_err(|e| PolicyLoadError::Schema(e.to_string()))?;
    }
    let validator = Validator::new(schema);
    let result = validator.validate(&whole, ValidationMode::Strict);
    let locate = |id: &PolicyId| {
        let place = places
            .get(id)
            .copied()
            .unwrap_or(Place { file: 0, offset: 0 });
        let (name, text) = files
            .get(place.file)
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .unwrap_or_default();
        (place, name, text)
    };
    let mut located: BTreeMap<(usize, usize), Vec<PolicyDiagnostic>> = BTreeMap::new();
    for e in result.validation_errors() {
        let (place, name, text) = locate(e.policy_id());
        let (offset, reason) = cedar_reason(e);
        let offset = offset.unwrap_or(place.offset);
        located
            .entry((place.file, offset))
            .or_default()
            .push(diagnostic(name, text, offset, reason));
    }
    if !located.is_empty() {
        return Err(PolicyLoadError::Invalid {
            diagnostics: located.into_values().flatten().collect(),
        });
    }
    let warnings = result
        .validation_warnings()
        .map(|w| {
            let (place, name, text) = locate(w.policy_id());
            let (offset, reason) = cedar_reason(w);
            diagnostic(name, text, offset.unwrap_or(place.offset), reason)
        })
        .collect();

    let permits = policies
        .iter()
        .filter(|p| p.effect() == Effect::Permit)
        .count();
    let summary = Summary {
        files: files.len(),
        policies: policies.len(),
        permits,
        forbids: policies.len() - permits,
        approval_policies: approvals.len(),
        indexed_actions: 0,
        unconstrained: 0,
        declared_tools: tools.into_iter().collect(),
        warnings,
    };
    Ok(Loaded {
        policies,
        approvals,
        schema: validator.schema().clone(),
        summary,
    })
}

/// Byte offset of annotation `@key` in the policy starting at `start`.
fn annotation_offset(text: &str, start: usize, key: &str) -> usize {
    let needle = format!("@{key}");
    text.get(start..)
        .and_then(|rest| rest.find(&needle))
        .map_or(start, |i| start + i)
}

/// The approval requirement of a policy, or which annotation is wrong.
fn approval(policy: &Policy) -> Result<Option<ApprovalRequirement>, (&'static str, String)> {
    let kind = policy.annotation("approval");
    let count = policy.annotation("approvers");
    let Some(kind) = kind else {
        return match count {
            Some(_) => Err(("approvers", "@approvers needs @approval".to_owned())),
            None => Ok(None),
        };
    };
    if policy.effect() != Effect::Forbid {
        return Err((
            "approval",
            "@approval belongs on a forbid policy (the forbid an approval lifts)".to_owned(),
        ));
    }
    let approver = match kind {
        "operator" => PrincipalKind::Operator,
        "peer" => PrincipalKind::Peer,
        "node" => PrincipalKind::Node,
        "agent" => PrincipalKind::Agent,
        other => {
            return Err((
                "approval",
                format!(
                    "@approval names who approves: operator, peer, node or agent; got {other:?}"
                ),
            ));
        }
    };
    let count = match count {
        None => 1,
        Some(text) => match text.parse::<u8>() {
            Ok(n) if (1..=MAX_APPROVERS).contains(&n) => n,
            _ => {
                return Err((
                    "approvers",
                    format!("@approvers is a count from 1 to {MAX_APPROVERS}; got {text:?}"),
                ));
            }
        },
    };
    Ok(Some(ApprovalRequirement::new(approver, count)))
}

/// Whether a policy's action constraint can be indexed, and under which
/// action ids; `None` sends it to the unconstrained group.
pub(crate) fn index_keys(policy: &Policy, groups: &BTreeSet<String>) -> Option<Vec<String>> {
    let key = |uid: &cedar_policy::EntityUid| {
        let id = uid.id().unescaped();
        (uid.type_name().to_string() == "Mxp::Action" && !groups.contains(id))
            .then(|| id.to_owned())
    };
    match policy.action_constraint() {
        ActionConstraint::Any => None,
        ActionConstraint::Eq(uid) => key(&uid).map(|k| vec![k]),
        ActionConstraint::In(uids) => {
            let mut keys: Vec<String> = uids.iter().map(key).collect::<Option<_>>()?;
            keys.sort();
            keys.dedup();
            Some(keys)
        }
    }
}
