//! The built-in, side-effect-free tools plan steps may run before governance
//! lands: `echo` and `status`.

use serde_json::{Value, json};

use crate::PlanStep;

/// What a tool may read about its agent.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The agent's status, as `status` reports it.
    pub status: Value,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The step names a tool that is not available.
    #[error("tool {0:?} is not available to this agent")]
    Unknown(String),
}

/// Runs one built-in step.
///
/// # Errors
/// [`ToolError::Unknown`] for a tool that is not built in.
pub fn run_builtin(step: &PlanStep, ctx: &ToolContext) -> Result<Value, ToolError> {
    match step.tool.as_str() {
        "echo" => Ok(step.args.clone()),
        "status" => Ok(ctx.status.clone()),
        other => Err(ToolError::Unknown(other.to_owned())),
    }
}

/// Runs a plan's steps in order; the result is the last step's output
/// (`null` for an empty plan), and every step's output is kept when there are
/// several: `{"result": last, "steps": [...]}`.
///
/// # Errors
/// The first failing step's [`ToolError`].
pub fn run_plan(steps: &[PlanStep], ctx: &ToolContext) -> Result<Value, ToolError> {
    let mut outputs = Vec::with_capacity(steps.len());
    for step in steps {
        outputs.push(run_builtin(step, ctx)?);
    }
    Ok(match outputs.len() {
        0 => Value::Null,
        1 => outputs.pop().unwrap_or(Value::Null),
        _ => json!({ "result": outputs.last().cloned().unwrap_or(Value::Null), "steps": outputs }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_status_and_unknown() {
        let ctx = ToolContext {
            status: json!({"state": "active"}),
        };
        let echo = PlanStep {
            tool: "echo".into(),
            args: json!([1, 2]),
        };
        let status = PlanStep {
            tool: "status".into(),
            args: Value::Null,
        };
        assert_eq!(
            run_plan(std::slice::from_ref(&echo), &ctx).unwrap(),
            json!([1, 2])
        );
        assert_eq!(
            run_plan(&[echo.clone(), status], &ctx).unwrap(),
            json!({"result": {"state": "active"}, "steps": [[1, 2], {"state": "active"}]})
        );
        let shell = PlanStep {
            tool: "shell".into(),
            args: Value::Null,
        };
        assert_eq!(
            run_plan(&[echo, shell], &ctx),
            Err(ToolError::Unknown("shell".into()))
        );
        assert_eq!(run_plan(&[], &ctx).unwrap(), Value::Null);
    }
}
