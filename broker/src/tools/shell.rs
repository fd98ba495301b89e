//! `shell.exec`: the jailed programs of [`crate::shell`] as a tool.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use mxp_actors::gate::Grant;
use mxp_actors::{ArgSchema, EffectClass, Tool, ToolContext, ToolError};
use serde_json::{Value, json};

use crate::broker::{Act, ActError, ActFuture, Broker, ToolLimits};
use crate::shell::{ExitStatus, ShellError, ShellJail, ShellOutput, ShellRequest};

/// `shell.exec` over one jail. It exists only when the shell settings
/// enable it ([`ShellJail::new`] refuses otherwise).
pub struct ShellTool {
    jail: ShellJail,
    broker: Arc<Broker>,
    limits: ToolLimits,
}

impl std::fmt::Debug for ShellTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellTool").finish_non_exhaustive()
    }
}

impl ShellTool {
    /// The tool. `limits.timeout` should exceed the jail's own timeout,
    /// which kills the jail first and reports what it printed.
    pub fn new(jail: ShellJail, broker: Arc<Broker>, limits: ToolLimits) -> ShellTool {
        ShellTool {
            jail,
            broker,
            limits,
        }
    }
}

pub(crate) fn act_error(e: ShellError) -> ActError {
    let text = e.to_string();
    match e {
        ShellError::Disabled
        | ShellError::ProgramNotAllowed { .. }
        | ShellError::RelativeProgram { .. }
        | ShellError::EnvNotGranted { .. } => ActError::Refused(text),
        ShellError::TooManyArgs { .. }
        | ShellError::ArgTooLong { .. }
        | ShellError::StdinTooLong { .. }
        | ShellError::NulByte { .. }
        | ShellError::BadRequest { .. } => ActError::Malformed(text),
        // Nothing ran.
        _ => ActError::Failed(text),
    }
}

fn output(o: &ShellOutput) -> Value {
    let status = match o.status {
        ExitStatus::Exit { code } => json!({ "exit": code }),
        ExitStatus::Signal { sig } => json!({ "signal": sig }),
        ExitStatus::TimedOut => json!("timed_out"),
    };
    json!({
        "status": status,
        "stdout": String::from_utf8_lossy(&o.stdout),
        "stderr": String::from_utf8_lossy(&o.stderr),
        "stdout_truncated": o.stdout_truncated,
        "stderr_truncated": o.stderr_truncated,
    })
}

impl Tool for ShellTool {
    fn name(&self) -> &str {
        "shell.exec"
    }

    fn effect(&self) -> EffectClass {
        EffectClass::ExternalWrite
    }

    fn args(&self) -> ArgSchema {
        ArgSchema::Object
    }

    fn execute<'a>(
        &'a self,
        _ctx: &'a ToolContext<'a>,
        grant: Grant<'a>,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            self.broker
                .run(self.name(), self.effect(), &self.limits, &grant, self)
                .await
        })
    }
}

impl Act for ShellTool {
    fn act<'x>(&'x self, args: &'x Value) -> ActFuture<'x> {
        Box::pin(async move {
            let req = ShellRequest::from_json(args).map_err(act_error)?;
            let out = self.jail.exec(&req).await.map_err(act_error)?;
            if out.status == ExitStatus::TimedOut {
                // It ran, and was cut off: what it did is unknown.
                return Err(ActError::InDoubt(format!(
                    "the program was killed at its timeout; what it did is unknown: {}",
                    output(&out)
                )));
            }
            Ok(output(&out))
        })
    }
}
