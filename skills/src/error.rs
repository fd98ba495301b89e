//! Why a skill was refused at load or stopped while running.

use std::path::PathBuf;

use thiserror::Error;

use crate::manifest::ManifestError;

/// Why a skill was refused or an invocation stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SkillError {
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A skill file could not be read.
    #[error("could not read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The skill's directory name differs from the manifest's name.
    #[error("skill directory {dir} holds a manifest named {name:?}; rename one so they agree")]
    NameMismatch {
        /// The directory.
        dir: PathBuf,
        /// The manifest's name.
        name: String,
    },
    /// The node configuration pins no hash for this skill.
    #[error(
        "skill {name:?} is not pinned in the node configuration; add its sha256 under the skill pins to allow it"
    )]
    NotPinned {
        /// The skill.
        name: String,
    },
    /// The configuration's pin and the manifest's hash differ.
    #[error(
        "skill {name:?} is pinned to {pinned} but its manifest says {manifest}; one of them is stale"
    )]
    PinDisagrees {
        /// The skill.
        name: String,
        /// The hash in the node configuration.
        pinned: String,
        /// The hash in the manifest.
        manifest: String,
    },
    /// The module file is bigger than any skill may be.
    #[error("module of {len} bytes is larger than the {max}-byte limit")]
    ModuleTooLarge {
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The module bytes do not hash to the pinned value; the file was quarantined.
    #[error(
        "skill {name:?} was refused: its module hashes to {actual}, not the pinned {expected}; it was moved to {quarantined_to}"
    )]
    HashMismatch {
        /// The skill.
        name: String,
        /// The pinned hash.
        expected: String,
        /// The hash of the bytes found.
        actual: String,
        /// Where the module now is.
        quarantined_to: PathBuf,
    },
    /// A mismatching module could not be moved to quarantine (it is refused all the same).
    #[error(
        "skill module {path} does not match its pin and could not be moved to quarantine: {source}"
    )]
    Quarantine {
        /// The module file.
        path: PathBuf,
        /// The I/O error (the quarantine must be on the same filesystem).
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly module.
    #[error("the module is not valid WebAssembly: {reason}")]
    BadModule {
        /// The validator's message.
        reason: String,
    },
    /// The module imports something other than the host functions.
    #[error(
        "the module imports {module}.{name}, which skills may not have (no WASI: the only import allowed is mxp.call_tool)"
    )]
    ForbiddenImport {
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
    },
    /// The module breaks the skill ABI (missing exports, wrong types, pointers out of bounds).
    #[error("the skill breaks the ABI: {reason}")]
    BadAbi {
        /// What was wrong.
        reason: String,
    },
    /// The manifest asks for more memory than this runner gives any skill.
    #[error(
        "the skill asks for {limit} bytes of memory but this node gives skills at most {runner}"
    )]
    MemoryAboveRunner {
        /// The manifest's cap.
        limit: u64,
        /// The runner's cap.
        runner: u64,
    },
    /// No loaded skill has this name.
    #[error("no skill named {name:?} is loaded")]
    UnknownSkill {
        /// The name asked for.
        name: String,
    },
    /// The invocation used all its fuel.
    #[error(
        "the skill ran out of fuel after {fuel} units; it may loop, or its manifest's limits.fuel is too low"
    )]
    OutOfFuel {
        /// The fuel it had.
        fuel: u64,
    },
    /// The skill tried to grow its memory past its cap.
    #[error("the skill tried to grow its memory past its {limit}-byte cap")]
    MemoryCap {
        /// The cap in bytes.
        limit: u64,
    },
    /// The skill trapped (unreachable, out-of-bounds access, stack overflow...).
    #[error("the skill trapped: {message}")]
    Trap {
        /// Wasmtime's description.
        message: String,
    },
    /// The skill asked for a tool its manifest does not list; the host was not called.
    #[error("the skill asked for tool {tool:?}, which its manifest does not list")]
    ToolNotInManifest {
        /// The tool asked for.
        tool: String,
    },
    /// The skill made more host calls than its manifest allows.
    #[error("the skill made more than its {limit} allowed host calls")]
    HostCallsExceeded {
        /// The limit.
        limit: u32,
    },
    /// The input is larger than the skill's memory cap.
    #[error("the input of {len} bytes is larger than the skill's {limit}-byte memory")]
    InputTooLarge {
        /// Input size.
        len: usize,
        /// The memory cap.
        limit: u64,
    },
    /// The output (or a tool result to copy in) is over the manifest's max_output_bytes.
    #[error("{len} bytes of output are over the skill's {limit}-byte limit")]
    OutputTooLarge {
        /// The size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The entry point returned a negative code of its own.
    #[error("the skill reported failure code {code}")]
    SkillFailed {
        /// The code.
        code: i64,
    },
    /// Wasmtime refused to set up the engine or an instance (for example the pool is full).
    #[error("the wasm engine could not run the skill: {reason}")]
    Engine {
        /// Wasmtime's message.
        reason: String,
    },
}
