//! The brokered tools: thin [`mxp_actors::Tool`]s over the jailed cores,
//! each act running through [`crate::Broker::run`].

mod args;
pub mod fs;
pub mod shell;

pub use fs::fs_tools;
pub use shell::ShellTool;
