//! The embedded schema and default policy set, and the tool actions the
//! loader declares.

use std::collections::BTreeSet;

use cedar_policy::{Schema, SchemaFragment};

use super::error::PolicyLoadError;

/// The Cedar schema (`governance/policy/schema.cedarschema`), in Cedar's
/// schema syntax. Every policy set is validated against it (strictly), with
/// the tool actions its policies name added (see [`tool_actions_fragment`]).
pub const SCHEMA: &str = include_str!("../../policy/schema.cedarschema");

/// The shipped default policy set (`governance/policy/default/*.cedar`) as
/// `(file name, text)` pairs, in load order.
pub const DEFAULT_FILES: [(&str, &str); 3] = [
    (
        "approval.cedar",
        include_str!("../../policy/default/approval.cedar"),
    ),
    (
        "node.cedar",
        include_str!("../../policy/default/node.cedar"),
    ),
    (
        "tools.cedar",
        include_str!("../../policy/default/tools.cedar"),
    ),
];

/// The tool actions the embedded schema declares itself.
pub(crate) const BUILTIN_TOOLS: [&str; 3] = ["tool:echo", "tool:status", "tool:hook.reply"];

/// The action groups of the embedded schema.
pub(crate) const ACTION_GROUPS: [&str; 2] = ["tool", "lifecycle"];

/// The schema text declaring `tools` (action ids `tool:<name>`) as members
/// of the `tool` group with the built-in tools' `appliesTo`.
pub(crate) fn tool_actions_fragment(tools: &BTreeSet<String>) -> String {
    let mut out = String::from("namespace Mxp {\n");
    for tool in tools {
        out.push_str(&format!(
            "  action {tool:?} in [\"tool\"] appliesTo {{\n    \
             principal: [Peer, Operator, Agent, Node],\n    \
             resource: [Node, Agent, Path, Host, Skill, Approval],\n    \
             context: RequestContext\n  }};\n"
        ));
    }
    out.push_str("}\n");
    out
}

/// The embedded schema plus the given tool actions.
pub(crate) fn build(tools: &BTreeSet<String>) -> Result<Schema, PolicyLoadError> {
    let schema_err = |e: &dyn std::fmt::Display| PolicyLoadError::Schema(e.to_string());
    let (base, _warnings) =
        SchemaFragment::from_cedarschema_str(SCHEMA).map_err(|e| schema_err(&e))?;
    let mut fragments = vec![base];
    if !tools.is_empty() {
        let text = tool_actions_fragment(tools);
        let (extra, _warnings) =
            SchemaFragment::from_cedarschema_str(&text).map_err(|e| schema_err(&e))?;
        fragments.push(extra);
    }
    Schema::from_schema_fragments(fragments).map_err(|e| schema_err(&e))
}
