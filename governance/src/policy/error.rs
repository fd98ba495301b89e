//! The errors of loading a policy set and of building a request.

use std::fmt;
use std::path::PathBuf;

/// One problem in one policy file, at a position in it.
///
/// `line` and `column` count from 1; `column` counts characters (not
/// bytes) from the start of the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDiagnostic {
    /// The file name, as given to the loader.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for PolicyDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.reason
        )
    }
}

/// Why a policy set did not load. Loading either yields a whole, validated
/// set or this error; a caller reloading keeps its old engine on error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyLoadError {
    /// Some policies do not parse, do not validate against the schema, or
    /// carry malformed annotations. Every problem found is listed, in file
    /// order; the message shows each as `file:line:column: reason`.
    #[error("invalid policy set:\n{}", list(.diagnostics))]
    Invalid {
        /// The problems, at least one.
        diagnostics: Vec<PolicyDiagnostic>,
    },
    /// More files than [`MAX_POLICY_FILES`](super::MAX_POLICY_FILES).
    #[error("{got} policy files exceed the limit MAX_POLICY_FILES = {limit}")]
    TooManyFiles {
        /// How many were given.
        got: usize,
        /// The limit.
        limit: usize,
    },
    /// A file longer than [`MAX_POLICY_FILE_BYTES`](super::MAX_POLICY_FILE_BYTES).
    #[error("{file}: {got} bytes exceed the limit MAX_POLICY_FILE_BYTES = {limit}")]
    FileTooLarge {
        /// The file.
        file: String,
        /// Its size in bytes.
        got: u64,
        /// The limit.
        limit: usize,
    },
    /// More policies in all than [`MAX_POLICIES`](super::MAX_POLICIES).
    #[error("{got} policies exceed the limit MAX_POLICIES = {limit}")]
    TooManyPolicies {
        /// How many the files hold.
        got: usize,
        /// The limit.
        limit: usize,
    },
    /// Two files with the same name.
    #[error("{file}: the file name is given twice")]
    DuplicateFile {
        /// The name.
        file: String,
    },
    /// A file is not UTF-8.
    #[error("{file}: not UTF-8 text")]
    NotUtf8 {
        /// The file.
        file: String,
    },
    /// Reading the policy directory failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The schema (the embedded file plus the tool actions the policies
    /// name) does not build. Not expected: the embedded schema is tested.
    #[error("the policy schema does not build: {0}")]
    Schema(String),
}

fn list(diagnostics: &[PolicyDiagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why an intent's JSON arguments were not converted to a Cedar record.
/// A caller denies the intent (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentsError {
    /// Nested deeper than [`MAX_ARGS_DEPTH`](super::MAX_ARGS_DEPTH).
    #[error("arguments nest deeper than the limit MAX_ARGS_DEPTH = {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More values than [`MAX_ARGS_VALUES`](super::MAX_ARGS_VALUES).
    #[error("arguments hold more values than the limit MAX_ARGS_VALUES = {limit}")]
    TooManyValues {
        /// The limit.
        limit: usize,
    },
    /// More key and string bytes than [`MAX_ARGS_BYTES`](super::MAX_ARGS_BYTES).
    #[error("arguments hold more key and string bytes than the limit MAX_ARGS_BYTES = {limit}")]
    TooManyBytes {
        /// The limit.
        limit: usize,
    },
    /// Cedar refused the record (not expected for JSON input).
    #[error("arguments are not a Cedar record: {0}")]
    Record(String),
}

/// Why a text is not an [`Action`](super::Action).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// A tool name is 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[error("a tool name is 1 to 64 characters of A-Z a-z 0-9 . _ -, got {0:?}")]
    ToolName(String),
    /// Neither `tool:<name>` nor a node control method.
    #[error(
        "an action is tool:<name> or one of node.status, agents.list, agent.suspend, agent.resume, agent.retire, mesh.forward, policy.reload, killswitch.set, approvals.decide, approvals.list, audit.read, audit.replay, policy.what_if, audit.subscribe, audit.checkpoint, audit.cosign; got {0:?}"
    )]
    Unknown(String),
}

/// Why Cedar's inputs could not be built for a request. [`decide`] turns
/// this into a Deny (fail closed).
///
/// [`decide`]: super::PolicyEngine::decide
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The context record.
    #[error("building the request context: {0}")]
    Context(String),
    /// The principal, action or resource entities.
    #[error("building the request entities: {0}")]
    Entities(String),
    /// The Cedar request.
    #[error("building the request: {0}")]
    Request(String),
}
