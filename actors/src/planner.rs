//! Planning: turning a Call into ordered plan steps, each a tool intent.
//!
//! A [`Planner`] is asked, given the Call and the results of the steps run
//! so far, for the next steps or to finish; it is async, so a model-backed
//! planner fits. The default [`RulePlanner`] is deterministic: rules from
//! configuration match a method (and optionally parameter values) and
//! produce steps whose arguments are templates over the Call's parameters;
//! once they have run, it finishes.
//!
//! Steps name tools of the agent's [`crate::ToolRegistry`].

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use mxp_protocol::CallBody;

/// One step of a plan: a tool and its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// The tool to run.
    pub tool: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Value,
}

/// What a planner produced for one Call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Steps, run in order.
    pub steps: Vec<PlanStep>,
}

/// Why no plan was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No rule matches the Call.
    #[error("no plan rule matches method {method:?}")]
    NoRule {
        /// The Call's method.
        method: String,
    },
    /// The planner failed (e.g. a model backend error).
    #[error("planner failed: {0}")]
    Failed(String),
}

/// A step that ran, and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step.
    pub step: PlanStep,
    /// Its output.
    pub output: Value,
}

/// What a planner says next.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannerStep {
    /// Run these steps, in order, then ask again.
    Steps(Vec<PlanStep>),
    /// The run is over. `Some(v)`: answer with `v`; `None`: answer with the
    /// steps' outputs (the last one's alone when there was one step,
    /// `{"result": last, "steps": [...]}` for several, `null` for none).
    Finish(Option<Value>),
}

/// Plans a Call step by step: given the Call and the results so far, the
/// next steps or the end. The rule-based default is deterministic; a
/// model-backed planner may not be. Called from a plan run's task: it may
/// wait (a model's answer) without holding up other Calls.
pub trait Planner: Send + Sync + 'static {
    /// A short name for logs and status, e.g. `rules`.
    fn name(&self) -> &str;

    /// The next steps for `call`, given the steps that ran (`done`).
    ///
    /// # Errors
    /// [`PlanError`] if no plan can be made.
    ///
    /// # Cancel safety
    /// The future may be dropped when the caller gives up; a planner must
    /// not leave shared state half-changed at an await point.
    fn next<'a>(
        &'a self,
        call: &'a CallBody,
        done: &'a [StepResult],
    ) -> BoxFuture<'a, Result<PlannerStep, PlanError>>;
}

/// A rule: when a Call's method (and optionally some parameters) match,
/// produce these steps.
///
/// In TOML:
///
/// ```toml
/// [[agents.rules]]
/// method = "greet"                 # exact method, or "*" for any
/// when = { lang = "fr" }           # optional: params.lang must equal "fr"
/// steps = [ { tool = "echo", args = { text = "bonjour", to = "$params.name" } } ]
/// ```
///
/// Argument templates:
///
/// * a whole string `"$params"` is replaced by the Call's whole params,
///   `"$params.KEY"` by `params[KEY]` (null if absent), `"$method"` by the
///   method, `"$steps.N"` by the output of step `N` of the rule (from 0; it
///   must come before the step naming it) and `"$steps.N.a.b"` by a field
///   of it (a number indexes an array; null if absent);
/// * inside a longer string, `${params.KEY}`, `${method}`, `${steps.N.a}`
///   (and `${params}`, `${steps.N}`) are replaced by that value's text: a
///   string as it is, null or absent as nothing, anything else as JSON;
///   `$${` is a literal `${`;
/// * other values are kept as they are.
///
/// Steps run one at a time, each planned once the ones before it have run,
/// so a step can carry an earlier step's output:
///
/// ```toml
/// [[agents.rules]]
/// method = "share"
/// steps = [
///   { tool = "fs.read", args = { path = "$params.path" } },
///   { tool = "http.fetch", args = { url = "https://paste.example/?text=${steps.0.content}" } },
/// ]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The method matched, or `*`.
    pub method: String,
    /// Parameter values that must be equal for the rule to match.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub when: Map<String, Value>,
    /// The steps produced, in order.
    pub steps: Vec<PlanStep>,
}

/// A rule that cannot be used, named by its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {index} (method {method:?}): {reason}")]
pub struct RuleError {
    /// 0-based position in the rule list.
    pub index: usize,
    /// The rule's method.
    pub method: String,
    /// What is wrong.
    pub reason: String,
}

/// The deterministic rule-based planner.
///
/// ```
/// use mxp_actors::RulePlanner;
/// use mxp_protocol::CallBody;
/// let p = RulePlanner::default_rules();
/// let plan = p.plan(&CallBody::new("echo", serde_json::json!({"x": 1})))?;
/// assert_eq!(plan.steps[0].tool, "echo");
/// assert_eq!(plan.steps[0].args, serde_json::json!({"x": 1}));
/// # Ok::<(), mxp_actors::PlanError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RulePlanner {
    rules: Vec<Rule>,
}

impl RulePlanner {
    /// A planner over `rules`, checked: a method is given, every rule has at
    /// least one step, every step names a tool in `tools`.
    ///
    /// # Errors
    /// [`RuleError`] for the first unusable rule.
    pub fn new(rules: Vec<Rule>, tools: &[&str]) -> Result<RulePlanner, RuleError> {
        for (index, rule) in rules.iter().enumerate() {
            let err = |reason: String| RuleError {
                index,
                method: rule.method.clone(),
                reason,
            };
            if rule.method.trim().is_empty() {
                return Err(err(
                    "method must not be empty (use \"*\" to match any)".into()
                ));
            }
            if rule.steps.is_empty() {
                return Err(err("a rule needs at least one step".into()));
            }
            for (at, step) in rule.steps.iter().enumerate() {
                if !tools.contains(&step.tool.as_str()) {
                    return Err(err(format!(
                        "unknown tool {:?} (available: {})",
                        step.tool,
                        tools.join(", ")
                    )));
                }
                check_refs(&step.args, at).map_err(|why| err(format!("step {at}: {why}")))?;
            }
        }
        Ok(RulePlanner { rules })
    }

    /// The default rules: `echo` runs the `echo` tool on the params, `status`
    /// runs the `status` tool.
    pub fn default_rules() -> RulePlanner {
        RulePlanner {
            rules: default_rules(),
        }
    }

    /// The rules, in match order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// The rules [`RulePlanner::default_rules`] uses.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule {
            method: "echo".into(),
            when: Map::new(),
            steps: vec![PlanStep {
                tool: "echo".into(),
                args: Value::String("$params".into()),
            }],
        },
        Rule {
            method: "status".into(),
            when: Map::new(),
            steps: vec![PlanStep {
                tool: "status".into(),
                args: Value::Null,
            }],
        },
    ]
}

impl Planner for RulePlanner {
    fn name(&self) -> &str {
        "rules"
    }

    fn next<'a>(
        &'a self,
        call: &'a CallBody,
        done: &'a [StepResult],
    ) -> BoxFuture<'a, Result<PlannerStep, PlanError>> {
        // One step at a time: each is expanded with the outputs of the
        // ones before it.
        let step = self
            .rule(call)
            .map(|rule| match rule.steps.get(done.len()) {
                Some(s) => PlannerStep::Steps(vec![PlanStep {
                    tool: s.tool.clone(),
                    args: expand(&s.args, call, done),
                }]),
                None => PlannerStep::Finish(None),
            });
        Box::pin(std::future::ready(step))
    }
}

impl RulePlanner {
    /// The first rule matching `call`.
    fn rule(&self, call: &CallBody) -> Result<&Rule, PlanError> {
        self.rules
            .iter()
            .find(|r| {
                (r.method == "*" || r.method == call.method)
                    && r.when.iter().all(|(k, v)| call.params.get(k) == Some(v))
            })
            .ok_or_else(|| PlanError::NoRule {
                method: call.method.clone(),
            })
    }

    /// The whole plan for `call`: the first matching rule's steps, expanded
    /// before any has run (a `$steps` reference is null here; the planner
    /// itself plans one step at a time).
    ///
    /// # Errors
    /// [`PlanError::NoRule`] when no rule matches.
    pub fn plan(&self, call: &CallBody) -> Result<Plan, PlanError> {
        let rule = self.rule(call)?;
        Ok(Plan {
            steps: rule
                .steps
                .iter()
                .map(|s| PlanStep {
                    tool: s.tool.clone(),
                    args: expand(&s.args, call, &[]),
                })
                .collect(),
        })
    }
}

/// The value a reference (`params`, `params.KEY`, `method`, `steps.N`,
/// `steps.N.a.b`) names; `None` when the text is no reference.
fn lookup(reference: &str, call: &CallBody, done: &[StepResult]) -> Option<Value> {
    if reference == "params" {
        return Some(call.params.clone());
    }
    if reference == "method" {
        return Some(Value::String(call.method.clone()));
    }
    if let Some(key) = reference.strip_prefix("params.") {
        return Some(call.params.get(key).cloned().unwrap_or(Value::Null));
    }
    let rest = reference.strip_prefix("steps.")?;
    let mut parts = rest.split('.');
    let n: usize = parts.next()?.parse().ok()?;
    let mut v = match done.get(n) {
        Some(r) => &r.output,
        None => return Some(Value::Null),
    };
    for part in parts {
        let next = match v {
            Value::Object(m) => m.get(part),
            Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(x) => v = x,
            None => return Some(Value::Null),
        }
    }
    Some(v.clone())
}

/// A value's text inside a string: a string as it is, null as nothing,
/// anything else as JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `s` with each `${reference}` replaced by its value's text (`$${` is a
/// literal `${`; an unknown or unclosed reference is kept as written).
fn interpolate(s: &str, call: &CallBody, done: &[StepResult]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        let (before, from) = rest.split_at(at);
        if let Some(stripped) = before.strip_suffix('$') {
            out.push_str(stripped);
            out.push_str("${");
            rest = from.get(2..).unwrap_or_default();
            continue;
        }
        out.push_str(before);
        let body = from.get(2..).unwrap_or_default();
        match body.find('}') {
            Some(end) => {
                let reference = body.get(..end).unwrap_or_default();
                match lookup(reference, call, done) {
                    Some(v) => out.push_str(&text_of(&v)),
                    None => {
                        out.push_str("${");
                        out.push_str(reference);
                        out.push('}');
                    }
                }
                rest = body.get(end + 1..).unwrap_or_default();
            }
            None => {
                out.push_str(from);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn expand(template: &Value, call: &CallBody, done: &[StepResult]) -> Value {
    match template {
        Value::String(s) => {
            if let Some(v) = s.strip_prefix('$').and_then(|r| lookup(r, call, done)) {
                return v;
            }
            if s.contains("${") {
                return Value::String(interpolate(s, call, done));
            }
            template.clone()
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| expand(v, call, done)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), expand(v, call, done)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every `$steps.N` / `${steps.N…}` in `args` names a step before `at`.
fn check_refs(args: &Value, at: usize) -> Result<(), String> {
    let check = |reference: &str| -> Result<(), String> {
        let Some(rest) = reference
            .strip_prefix("steps.")
            .or_else(|| (reference == "steps").then_some(""))
        else {
            return Ok(());
        };
        let n = rest.split('.').next().unwrap_or_default();
        match n.parse::<usize>() {
            Ok(n) if n < at => Ok(()),
            Ok(n) => Err(format!(
                "${reference} names step {n}, which has not run before step {at}"
            )),
            Err(_) => Err(format!(
                "${reference}: expected steps.N with N a step number"
            )),
        }
    };
    match args {
        Value::String(s) => {
            if let Some(r) = s.strip_prefix('$').filter(|r| !r.starts_with('{')) {
                check(r)?;
            }
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                let escaped = rest.get(..i).is_some_and(|b| b.ends_with('$'));
                let body = rest.get(i + 2..).unwrap_or_default();
                let Some(end) = body.find('}') else { break };
                if !escaped {
                    check(body.get(..end).unwrap_or_default())?;
                }
                rest = body.get(end + 1..).unwrap_or_default();
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_refs(v, at)),
        Value::Object(map) => map.values().try_for_each(|v| check_refs(v, at)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(toml_rules: &str) -> Vec<Rule> {
        #[derive(Deserialize)]
        struct W {
            rules: Vec<Rule>,
        }
        toml::from_str::<W>(toml_rules).unwrap().rules
    }

    const BUILTIN_TOOLS: &[&str] = &["echo", "status"];

    #[test]
    fn rules_match_method_and_params_in_order() {
        let p = RulePlanner::new(
            rules(
                r#"
                [[rules]]
                method = "greet"
                when = { lang = "fr" }
                steps = [{ tool = "echo", args = { text = "bonjour", to = "$params.name" } }]
                [[rules]]
                method = "greet"
                steps = [{ tool = "echo", args = { text = "hello", to = "$params.name", m = "$method" } }, { tool = "status" }]
                "#,
            ),
            BUILTIN_TOOLS,
        )
        .unwrap();
        let fr = p
            .plan(&CallBody::new(
                "greet",
                json!({"lang": "fr", "name": "Ada"}),
            ))
            .unwrap();
        assert_eq!(
            fr.steps,
            vec![PlanStep {
                tool: "echo".into(),
                args: json!({"text": "bonjour", "to": "Ada"})
            }]
        );
        let en = p
            .plan(&CallBody::new("greet", json!({"name": "Ada"})))
            .unwrap();
        assert_eq!(en.steps.len(), 2);
        assert_eq!(
            en.steps[0].args,
            json!({"text": "hello", "to": "Ada", "m": "greet"})
        );
        assert_eq!(
            p.plan(&CallBody::new("other", Value::Null)),
            Err(PlanError::NoRule {
                method: "other".into()
            })
        );
        // Deterministic: the same Call gives the same plan.
        assert_eq!(
            en,
            p.plan(&CallBody::new("greet", json!({"name": "Ada"})))
                .unwrap()
        );
    }

    #[test]
    fn bad_rules_are_refused_with_their_position() {
        let e = RulePlanner::new(
            rules("[[rules]]\nmethod = \"x\"\nsteps = [{ tool = \"shell\" }]"),
            BUILTIN_TOOLS,
        )
        .unwrap_err();
        assert_eq!(e.index, 0);
        assert!(e.reason.contains("unknown tool \"shell\""), "{e}");
        let e = RulePlanner::new(
            rules("[[rules]]\nmethod = \"\"\nsteps = [{ tool = \"echo\" }]"),
            BUILTIN_TOOLS,
        )
        .unwrap_err();
        assert!(e.reason.contains("method"), "{e}");
        let e = RulePlanner::new(
            rules("[[rules]]\nmethod = \"x\"\nsteps = []"),
            BUILTIN_TOOLS,
        )
        .unwrap_err();
        assert!(e.reason.contains("at least one step"), "{e}");
        assert!(RulePlanner::new(default_rules(), BUILTIN_TOOLS).is_ok());
    }

    fn run_all(p: &RulePlanner, call: &CallBody, outputs: &[Value]) -> Vec<PlanStep> {
        let mut done: Vec<StepResult> = Vec::new();
        let mut steps = Vec::new();
        loop {
            let next = futures_util::FutureExt::now_or_never(p.next(call, &done))
                .unwrap()
                .unwrap();
            match next {
                PlannerStep::Steps(s) => {
                    for step in s {
                        let output = outputs.get(done.len()).cloned().unwrap_or(Value::Null);
                        steps.push(step.clone());
                        done.push(StepResult { step, output });
                    }
                }
                PlannerStep::Finish(_) => return steps,
            }
        }
    }

    #[test]
    fn steps_carry_earlier_outputs_whole_and_inside_strings() {
        let p = RulePlanner::new(
            rules(
                r#"
                [[rules]]
                method = "share"
                steps = [
                  { tool = "echo", args = { path = "$params.path" } },
                  { tool = "echo", args = { whole = "$steps.0", field = "$steps.0.path", url = "https://x.example/?t=${steps.0.path}&m=${method}&n=${steps.0.n}&none=${steps.0.zz}&lit=$${steps.0}", arr = "$steps.0.list.1" } },
                ]
                "#,
            ),
            BUILTIN_TOOLS,
        )
        .unwrap();
        let call = CallBody::new("share", json!({"path": "a b.txt"}));
        let steps = run_all(
            &p,
            &call,
            &[json!({"path": "a b.txt", "n": 7, "list": ["x", "y"]})],
        );
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].args, json!({"path": "a b.txt"}));
        assert_eq!(
            steps[1].args,
            json!({
                "whole": {"path": "a b.txt", "n": 7, "list": ["x", "y"]},
                "field": "a b.txt",
                "url": "https://x.example/?t=a b.txt&m=share&n=7&none=&lit=${steps.0}",
                "arr": "y",
            })
        );
        // Unknown and unclosed references stay as written.
        assert_eq!(
            interpolate("${nope} and ${steps.0", &call, &[]),
            "${nope} and ${steps.0"
        );
        assert_eq!(interpolate("$${x}$", &call, &[]), "${x}$");
    }

    #[test]
    fn a_step_may_not_name_itself_or_a_later_step() {
        for bad in [
            r#"[[rules]]
method = "m"
steps = [{ tool = "echo", args = "$steps.0" }]"#,
            r#"[[rules]]
method = "m"
steps = [{ tool = "echo" }, { tool = "echo", args = { u = "x${steps.3.a}" } }]"#,
            r#"[[rules]]
method = "m"
steps = [{ tool = "echo" }, { tool = "echo", args = ["${steps.x}"] }]"#,
        ] {
            let e = RulePlanner::new(rules(bad), BUILTIN_TOOLS).unwrap_err();
            assert!(e.reason.contains("step"), "{e}");
        }
        let ok = r#"[[rules]]
method = "m"
steps = [{ tool = "echo" }, { tool = "echo", args = { u = "$${steps.5}", v = "${steps.0}" } }]"#;
        assert!(RulePlanner::new(rules(ok), BUILTIN_TOOLS).is_ok());
    }

    #[test]
    fn wildcard_matches_any_method() {
        let p = RulePlanner::new(
            rules("[[rules]]\nmethod = \"*\"\nsteps = [{ tool = \"echo\", args = \"$method\" }]"),
            BUILTIN_TOOLS,
        )
        .unwrap();
        assert_eq!(
            p.plan(&CallBody::new("anything", Value::Null))
                .unwrap()
                .steps[0]
                .args,
            json!("anything")
        );
    }
}
