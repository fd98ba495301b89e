//! WebAssembly skills of an MXP node.
//!
//! A skill is a core WebAssembly module (not a component) with a TOML
//! manifest, kept in its own directory. The node pins each skill's SHA-256 in
//! its configuration; [`supply`] refuses (and quarantines) any module whose
//! bytes differ. [`runner::SkillRunner`] runs verified skills in a sandbox
//! with no WASI at all: the only import a module may have is
//! `mxp.call_tool`, which reaches the node's tools through [`SkillHost`]
//! (the coordinator wires that trait to the governance gate, so every tool
//! call a skill makes is a new governed intent; the skill never sees a token).
//!
//! The ABI is documented in [`abi`].
#![forbid(unsafe_code)]

pub mod abi;
pub mod error;
pub mod host;
pub mod manifest;
pub mod runner;
pub mod supply;

pub use error::SkillError;
pub use host::{HostCallError, SkillHost};
pub use manifest::{Manifest, ManifestError, SkillLimits};
pub use runner::{RunnerConfig, SkillOutput, SkillRunner};
pub use supply::{Pins, SkillReport, SkillStatus, VerifiedSkill};
