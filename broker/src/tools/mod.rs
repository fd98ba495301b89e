//! The brokered tools: thin [`mxp_actors::Tool`]s over the jailed cores,
//! each act running through [`crate::Broker::run`].

mod args;
pub mod fs;
pub mod http;
pub mod shell;

pub use fs::{fs_tools, fs_tools_with};
pub use http::HttpTool;
pub use shell::ShellTool;
