//! `skill.<name>`: a verified skill as a tool of an agent.
//!
//! Arguments: `{"entry": "run", "input": ...}`. `entry` (default `"run"`)
//! is the export to call; `input` is given to the skill as bytes: a JSON
//! string as its UTF-8 text, any other value as its compact JSON, absent or
//! `null` as no bytes. The result is
//! `{"output": ..., "fuel_used": n, "host_calls": n}`: the skill's output as
//! JSON if it parses as JSON, else as a string if it is UTF-8, else as
//! `"output_base64"`.
//!
//! The policy names the skill as the tool `skill.<name>`
//! (`Mxp::Action::"tool:skill.<name>"`); each of its host calls is a new
//! intent named as the tool it calls, decided, recorded and enforced like
//! a plan step. An invocation runs on a blocking thread and holds one of
//! the runner's pool slots (`skills.max_instances`); with all slots busy it
//! fails at once rather than queue (a skill calling skills cannot deadlock
//! the pool).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use mxp_actors::gate::Grant;
use mxp_actors::{ArgSchema, EffectClass, GovernedCalls, Tool, ToolContext, ToolError};
use mxp_protocol::payload::parse_json_bounded;
use serde_json::{Value, json};

use crate::error::SkillError;
use crate::gate_host::{GateHost, HOST_ARGS_JSON, HostLog};
use crate::host::SkillHost;
use crate::manifest::Manifest;
use crate::runner::SkillOutput;
use crate::service::Shared;

/// The tool-name prefix of skills.
pub const SKILL_PREFIX: &str = "skill.";

/// The entry point called when the arguments name none.
pub const DEFAULT_ENTRY: &str = "run";

/// The effect class of a skill whose manifest lists `manifest.tools`: the
/// strongest effect among them (`read_only` for none), each looked up with
/// `effect_of` (the agent's tools). A skill is at most as harmful as what
/// it can ask for, and each of its calls is gated on its own as well.
///
/// # Errors
/// The first tool of the manifest that `effect_of` does not know (the
/// agent does not have it).
pub fn skill_effect(
    manifest: &Manifest,
    effect_of: impl Fn(&str) -> Option<EffectClass>,
) -> Result<EffectClass, &str> {
    let mut effect = EffectClass::ReadOnly;
    for t in &manifest.tools {
        effect = effect.max(effect_of(t).ok_or(t.as_str())?);
    }
    Ok(effect)
}

/// One skill as a tool.
pub struct SkillTool {
    tool: String,
    skill: String,
    effect: EffectClass,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SkillTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkillTool")
            .field("tool", &self.tool)
            .field("effect", &self.effect)
            .finish_non_exhaustive()
    }
}

/// What a call asks the skill: the export and the input bytes.
fn request(args: &Value) -> Result<(String, Vec<u8>), String> {
    let Some(obj) = args.as_object() else {
        return Err("takes a JSON object {\"entry\": ..., \"input\": ...}".into());
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "entry" | "input"))
    {
        return Err(format!(
            "unknown field {:?} (a skill takes \"entry\" and \"input\")",
            k.chars().take(64).collect::<String>()
        ));
    }
    let entry = match obj.get("entry") {
        None | Some(Value::Null) => DEFAULT_ENTRY.to_owned(),
        Some(Value::String(e)) if !e.is_empty() && e.len() <= 256 => e.clone(),
        Some(_) => return Err("\"entry\" must be the name of an export (1 to 256 bytes)".into()),
    };
    let input = match obj.get("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        Some(v) => serde_json::to_vec(v).map_err(|e| e.to_string())?,
    };
    Ok((entry, input))
}

/// The skill's output as the tool's result.
fn result(out: SkillOutput) -> Value {
    let output = match parse_json_bounded("skill output", &out.bytes, HOST_ARGS_JSON) {
        Ok((v, _)) => json!({ "output": v }),
        Err(_) => match String::from_utf8(out.bytes) {
            Ok(text) => json!({ "output": text }),
            Err(e) => json!({
                "output_base64": base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            }),
        },
    };
    let mut v = output;
    if let Some(o) = v.as_object_mut() {
        o.insert("fuel_used".into(), json!(out.fuel_used));
        o.insert("host_calls".into(), json!(out.host_calls));
    }
    v
}

/// Marks the invocation's Call as gone when the tool's future is dropped.
struct CancelOnDrop(Arc<HostLog>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
    }
}

impl SkillTool {
    pub(crate) fn new(skill: &str, effect: EffectClass, shared: Arc<Shared>) -> SkillTool {
        SkillTool {
            tool: format!("{SKILL_PREFIX}{skill}"),
            skill: skill.to_owned(),
            effect,
            shared,
        }
    }

    /// How a skill's error reaches the caller, with its host calls'
    /// denials and failures when there were any.
    fn error(&self, e: SkillError, log: &HostLog) -> ToolError {
        let tool = self.tool.clone();
        let notes = log.notes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut reason = match &e {
            SkillError::UnknownSkill { .. } => format!(
                "skill {:?} is not loaded: it was refused when the skills were last verified (see the node's log, the audit log, `mxp skills verify`)",
                self.skill
            ),
            other => other.to_string(),
        };
        if !notes.is_empty() {
            reason.push_str(&format!("; its host calls: {}", notes.join("; ")));
        }
        match e {
            SkillError::InputTooLarge { .. } => ToolError::Malformed { tool, reason },
            SkillError::ToolNotInManifest { .. } | SkillError::HostCallsExceeded { .. } => {
                ToolError::Refused { tool, reason }
            }
            _ => ToolError::Failed { tool, reason },
        }
    }
}

impl Tool for SkillTool {
    fn name(&self) -> &str {
        &self.tool
    }

    fn effect(&self) -> EffectClass {
        self.effect
    }

    fn args(&self) -> ArgSchema {
        ArgSchema::Object
    }

    fn execute<'a>(
        &'a self,
        ctx: &'a ToolContext<'a>,
        grant: Grant<'a>,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let failed = |reason: String| ToolError::Failed {
                tool: self.tool.clone(),
                reason,
            };
            let (entry, input) = request(grant.args()).map_err(|reason| ToolError::Malformed {
                tool: self.tool.clone(),
                reason,
            })?;
            let runner = self.shared.runner().ok_or_else(|| {
                failed("the skill runner is restarting (or stopped); try again".into())
            })?;
            let permit = self.shared.slots.clone().try_acquire_owned().map_err(|_| {
                failed(format!(
                    "all {} skill instances are busy (skills.max_instances); try again",
                    self.shared.settings.runner.max_instances
                ))
            })?;
            let log = Arc::new(HostLog::default());
            let _cancel = CancelOnDrop(log.clone());
            let governed = ctx.governed();
            let host = GateHost::new(
                governed.clone(),
                tokio::runtime::Handle::current(),
                log.clone(),
            );
            let skill = self.skill.clone();
            let run = tokio::task::spawn_blocking(move || {
                let _slot = permit;
                let mut host: Box<dyn SkillHost> = Box::new(host);
                runner.invoke(&skill, &entry, &input, &mut host)
            });
            match run.await {
                Ok(Ok(out)) => {
                    // What a skill returns may hold anything it was given or
                    // its calls returned: it carries their labels (the flow
                    // rule; the skill's working is opaque).
                    for source in governed.iter().flat_map(GovernedCalls::labels) {
                        ctx.label_output(source);
                    }
                    Ok(result(out))
                }
                Ok(Err(e)) => Err(self.error(e, &log)),
                Err(join) => {
                    let why = if join.is_panic() {
                        "the invocation panicked"
                    } else {
                        "the invocation was cancelled"
                    };
                    self.shared.crashed(format!("{} ({why})", self.tool));
                    Err(failed(format!("{why}; the skill runner restarts")))
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn manifest(tools: &[&str]) -> Manifest {
        let tools = tools
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Manifest::parse(&format!(
            "name = \"s\"\nversion = \"1.0.0\"\nsha256 = \"{}\"\ntools = [{tools}]\n[limits]\nfuel = 1\nmemory_bytes = 65536\nmax_output_bytes = 1\nmax_host_calls = 0\n",
            "0".repeat(64)
        ))
        .unwrap()
    }

    #[test]
    fn a_skill_is_as_strong_as_the_strongest_tool_it_may_call() {
        let of = |t: &str| match t {
            "fs.read" => Some(EffectClass::ReadOnly),
            "fs.write" => Some(EffectClass::LocalWrite),
            "http.fetch" => Some(EffectClass::ExternalWrite),
            _ => None,
        };
        assert_eq!(skill_effect(&manifest(&[]), of), Ok(EffectClass::ReadOnly));
        assert_eq!(
            skill_effect(&manifest(&["fs.read"]), of),
            Ok(EffectClass::ReadOnly)
        );
        assert_eq!(
            skill_effect(&manifest(&["fs.read", "fs.write"]), of),
            Ok(EffectClass::LocalWrite)
        );
        assert_eq!(
            skill_effect(&manifest(&["http.fetch", "fs.read"]), of),
            Ok(EffectClass::ExternalWrite)
        );
        assert_eq!(
            skill_effect(&manifest(&["fs.read", "shell.exec"]), of),
            Err("shell.exec")
        );
    }

    #[test]
    fn arguments_name_an_entry_and_give_input_bytes() {
        assert_eq!(request(&json!({})).unwrap(), ("run".to_owned(), Vec::new()));
        assert_eq!(
            request(&json!({"entry": "sum", "input": "text"})).unwrap(),
            ("sum".to_owned(), b"text".to_vec())
        );
        assert_eq!(
            request(&json!({"input": {"a": [1]}})).unwrap().1,
            br#"{"a":[1]}"#.to_vec()
        );
        for bad in [
            json!([1]),
            json!({"entry": 3}),
            json!({"entry": ""}),
            json!({"extra": 1}),
        ] {
            assert!(request(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn output_is_json_text_or_base64() {
        let out = |bytes: &[u8]| {
            result(SkillOutput {
                bytes: bytes.to_vec(),
                fuel_used: 7,
                host_calls: 1,
            })
        };
        assert_eq!(out(br#"{"n":1}"#)["output"], json!({"n": 1}));
        assert_eq!(out(b"plain words")["output"], "plain words");
        let v = out(&[0xff, 0x00]);
        assert_eq!(v["output_base64"], "/wA=");
        assert_eq!(v["fuel_used"], 7);
        assert_eq!(v["host_calls"], 1);
    }
}
