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
/// Argument templates: a string `"$params"` is replaced by the Call's whole
/// params, `"$params.KEY"` by `params[KEY]` (null if absent), `"$method"` by
/// the method; other values are kept as they are.
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
            for step in &rule.steps {
                if !tools.contains(&step.tool.as_str()) {
                    return Err(err(format!(
                        "unknown tool {:?} (available: {})",
                        step.tool,
                        tools.join(", ")
                    )));
                }
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
        let step = if done.is_empty() {
            self.plan(call).map(|p| PlannerStep::Steps(p.steps))
        } else {
            Ok(PlannerStep::Finish(None))
        };
        Box::pin(std::future::ready(step))
    }
}

impl RulePlanner {
    /// The whole plan for `call`: the first matching rule's steps.
    ///
    /// # Errors
    /// [`PlanError::NoRule`] when no rule matches.
    pub fn plan(&self, call: &CallBody) -> Result<Plan, PlanError> {
        let rule = self
            .rules
            .iter()
            .find(|r| {
                (r.method == "*" || r.method == call.method)
                    && r.when.iter().all(|(k, v)| call.params.get(k) == Some(v))
            })
            .ok_or_else(|| PlanError::NoRule {
                method: call.method.clone(),
            })?;
        Ok(Plan {
            steps: rule
                .steps
                .iter()
                .map(|s| PlanStep {
                    tool: s.tool.clone(),
                    args: expand(&s.args, call),
                })
                .collect(),
        })
    }
}

fn expand(template: &Value, call: &CallBody) -> Value {
    match template {
        Value::String(s) if s == "$params" => call.params.clone(),
        Value::String(s) if s == "$method" => Value::String(call.method.clone()),
        Value::String(s) => match s.strip_prefix("$params.") {
            Some(key) => call.params.get(key).cloned().unwrap_or(Value::Null),
            None => template.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|v| expand(v, call)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), expand(v, call)))
                .collect(),
        ),
        other => other.clone(),
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
