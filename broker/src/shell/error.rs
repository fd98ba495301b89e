//! What can go wrong in `shell.exec`: each variant names the violation.

use std::path::PathBuf;

/// Why a `shell.exec` request was refused or could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// `shell.exec` is off (the default).
    #[error("shell.exec is disabled: set `enabled = true` in the shell settings to allow it")]
    Disabled,
    /// The program is not on the allowlist.
    #[error("program {program:?} is not on the shell.exec allowlist")]
    ProgramNotAllowed {
        /// The program as requested.
        program: String,
    },
    /// The program is not an absolute path (PATH is never searched).
    #[error("program {program:?} is not an absolute path; shell.exec never searches PATH")]
    RelativeProgram {
        /// The program as requested.
        program: String,
    },
    /// More arguments than `limits.max_args`.
    #[error("{count} arguments given, at most {max} are allowed")]
    TooManyArgs {
        /// Arguments given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One argument is longer than `limits.max_arg_bytes`.
    #[error("argument {index} is {len} bytes long, at most {max} are allowed")]
    ArgTooLong {
        /// Index of the argument (0 is the first after the program).
        index: usize,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The standard input is longer than `limits.max_stdin`.
    #[error("stdin is {len} bytes long, at most {max} are allowed")]
    StdinTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A NUL byte in the program, an argument or an environment value.
    #[error("{what} contains a NUL byte")]
    NulByte {
        /// Which part of the request.
        what: String,
    },
    /// The request asks for an environment variable the settings do not grant.
    #[error("environment variable {name:?} is not granted to shell.exec")]
    EnvNotGranted {
        /// The variable's name.
        name: String,
    },
    /// The request's JSON is not of the expected shape.
    #[error("bad shell.exec request: {reason}")]
    BadRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// An allowlist entry could not be resolved to a program.
    #[error("allowlist entry {path:?} cannot be used: {reason}")]
    BadAllowEntry {
        /// The configured path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A jail tool is missing or the kernel refuses the namespaces.
    #[error("the shell.exec jail is unavailable: {what}")]
    JailUnavailable {
        /// What is missing or refused.
        what: String,
    },
    /// The working directory of the run could not be made.
    #[error("cannot create the working directory for shell.exec: {source}")]
    Workdir {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The jail could not be started or waited for.
    #[error("cannot run the shell.exec jail: {source}")]
    Spawn {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
