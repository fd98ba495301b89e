//! The tool broker of an MXP node.
//!
//! Every tool the broker runs acts only through a
//! `mxp_actors::gate::Grant`: the gate decided, a capability token proves
//! it, the enforcer verified it. The checks each tool makes before acting
//! are pure functions here, tested without I/O; the tools around them are
//! thin: [`addr`] (the address rules of `http.fetch`), [`http`] (the
//! SSRF-proof `http.fetch` core), [`fs`] (the jailed
//! file operations), [`shell`] (the jailed `shell.exec`), [`secret`]
//! (secrets by reference) and [`outcome`] (what happened to each effect).
//! [`Broker::run`] is the one path every brokered act takes; [`tools`] are
//! the tools over it.
#![forbid(unsafe_code)]

pub mod addr;
mod broker;
pub mod fs;
pub mod http;
mod json_size;
pub mod outcome;
pub mod secret;
pub mod shell;
pub mod tools;

pub use broker::{Act, ActError, ActFuture, Broker, ToolLimits};
