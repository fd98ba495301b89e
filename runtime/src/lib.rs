//! The MXP runtime: assembling an MXP node, and the `mxp` command-line tool.
//!
//! For now the crate holds the tool's logic in [`cli`]; the `mxp` binary
//! (`src/bin/mxp.rs`) only calls [`cli::main`].

pub mod cli;
