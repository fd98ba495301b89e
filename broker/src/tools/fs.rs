//! `fs.read`, `fs.write`, `fs.list`, `fs.stat`: the jailed file operations
//! of [`crate::fs`] as tools.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::BoxFuture;
use mxp_actors::gate::Grant;
use mxp_actors::{ArgSchema, EffectClass, FlowSource, Tool, ToolContext, ToolError};
use serde_json::{Value, json};

use super::args::{opt_string, string};
use crate::broker::{Act, ActError, ActFuture, Broker, ToolLimits};
use crate::fs::{FsError, FsRoot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    List,
    Stat,
}

/// One file tool.
pub struct FsTool {
    op: Op,
    root: Arc<FsRoot>,
    broker: Arc<Broker>,
    limits: ToolLimits,
}

impl std::fmt::Debug for FsTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsTool").field("op", &self.op).finish()
    }
}

/// The four file tools over one root.
pub fn fs_tools(root: FsRoot, broker: Arc<Broker>, limits: ToolLimits) -> Vec<Arc<dyn Tool>> {
    fs_tools_with(root, broker, |_| limits)
}

/// The four file tools over one root, each with the limits `limits` gives
/// for its name (`fs.read`, `fs.write`, `fs.list`, `fs.stat`).
pub fn fs_tools_with(
    root: FsRoot,
    broker: Arc<Broker>,
    limits: impl Fn(&str) -> ToolLimits,
) -> Vec<Arc<dyn Tool>> {
    let root = Arc::new(root);
    [Op::Read, Op::Write, Op::List, Op::Stat]
        .into_iter()
        .map(|op| {
            let mut tool = FsTool {
                op,
                root: root.clone(),
                broker: broker.clone(),
                limits: ToolLimits::default(),
            };
            tool.limits = limits(tool.name());
            Arc::new(tool) as Arc<dyn Tool>
        })
        .collect()
}

/// How a file error reaches the caller.
pub(crate) fn act_error(e: FsError) -> ActError {
    let text = e.to_string();
    match e {
        FsError::EmptyPath
        | FsError::PathTooLong { .. }
        | FsError::ComponentTooLong { .. }
        | FsError::NulByte { .. }
        | FsError::Backslash { .. } => ActError::Malformed(text),
        FsError::AbsolutePath { .. }
        | FsError::ParentComponent { .. }
        | FsError::ReservedName { .. }
        | FsError::EscapesRoot { .. }
        | FsError::SymlinkLoop { .. }
        | FsError::NotRegularFile { .. }
        | FsError::TooLarge { .. }
        | FsError::PermissionDenied { .. } => ActError::Refused(text),
        _ => ActError::Failed(text),
    }
}

fn content(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(s) => json!({ "bytes": s.len(), "content": s }),
        Err(e) => {
            let b = e.into_bytes();
            json!({ "bytes": b.len(), "content_base64": STANDARD.encode(&b) })
        }
    }
}

impl Act for FsTool {
    // File operations are bounded (sizes, entries) and run inline: a read
    // of a small file costs less than a hop to a thread.
    fn act<'x>(&'x self, args: &'x Value) -> ActFuture<'x> {
        Box::pin(std::future::ready(self.act_now(args)))
    }
}

impl FsTool {
    fn act_now(&self, args: &Value) -> Result<Value, ActError> {
        let path = string(args, "path")?;
        let root = &self.root;
        match self.op {
            Op::Read => root.read(path).map(content).map_err(act_error),
            Op::Write => {
                let bytes = match (
                    opt_string(args, "content")?,
                    opt_string(args, "content_base64")?,
                ) {
                    (Some(s), None) => s.as_bytes().to_vec(),
                    (None, Some(b)) => STANDARD.decode(b).map_err(|e| {
                        ActError::Malformed(format!("\"content_base64\" is not base64: {e}"))
                    })?,
                    _ => {
                        return Err(ActError::Malformed(
                            "give exactly one of \"content\" and \"content_base64\"".into(),
                        ));
                    }
                };
                let r = root.write(path, &bytes).map_err(act_error)?;
                Ok(json!({ "path": path, "bytes": r.bytes, "replaced": r.replaced }))
            }
            Op::List => {
                let l = root.list(path).map_err(act_error)?;
                let entries: Vec<Value> = l
                    .entries
                    .iter()
                    .map(|e| json!({ "name": e.name, "kind": kind(e.kind), "size": e.size }))
                    .collect();
                Ok(json!({ "path": path, "entries": entries, "truncated": l.truncated }))
            }
            Op::Stat => {
                let s = root.stat(path).map_err(act_error)?;
                Ok(json!({
                    "path": path,
                    "kind": kind(s.kind),
                    "size": s.size,
                    "modified_ms": s.modified_ms,
                    "readonly": s.readonly,
                }))
            }
        }
    }
}

fn kind(k: crate::fs::Kind) -> &'static str {
    use crate::fs::Kind;
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
        Kind::Device => "device",
        _ => "other",
    }
}

impl Tool for FsTool {
    fn name(&self) -> &str {
        match self.op {
            Op::Read => "fs.read",
            Op::Write => "fs.write",
            Op::List => "fs.list",
            Op::Stat => "fs.stat",
        }
    }

    fn effect(&self) -> EffectClass {
        match self.op {
            Op::Write => EffectClass::LocalWrite,
            _ => EffectClass::ReadOnly,
        }
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
            let out = self
                .broker
                .run(self.name(), self.effect(), &self.limits, &grant, self)
                .await;
            // What a read returns is the file's data: it carries the file's
            // label through the plan run (the flow rule).
            if self.op == Op::Read
                && out.is_ok()
                && let Some(path) = grant.args().get("path").and_then(Value::as_str)
            {
                ctx.label_output(FlowSource::file(path, ctx.step()));
            }
            out
        })
    }
}
