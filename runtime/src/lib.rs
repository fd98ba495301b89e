//! The MXP runtime: assembling an MXP node ([`node`], the `mxp-node`
//! binary) and the `mxp` command-line tool ([`cli`]). Both binaries are thin
//! `main`s around these modules.

pub mod cli;
pub mod node;
