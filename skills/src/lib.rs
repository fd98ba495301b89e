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
//!
//! In a node: [`SkillService`] verifies the skills at start and is the
//! node service whose supervised actor (`actor.rs`) holds the runner;
//! [`tool::SkillTool`] is a skill as an agent's tool (`skill.<name>`), whose
//! host calls go through the gate ([`gate_host`]).
#![forbid(unsafe_code)]

pub mod abi;
mod actor;
pub mod error;
pub mod gate_host;
pub mod host;
pub mod manifest;
pub mod runner;
pub mod service;
pub mod supply;
pub mod tool;

pub use error::SkillError;
pub use host::{HostCallError, SkillHost};
pub use manifest::{Manifest, ManifestError, SkillLimits};
pub use runner::{RunnerConfig, SkillOutput, SkillRunner};
pub use service::{SkillService, SkillsSettings};
pub use supply::{Pins, SkillReport, SkillStatus, VerifiedSkill};
pub use tool::{SKILL_PREFIX, SkillTool, skill_effect};
