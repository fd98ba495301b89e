//! `mxp frame`: decode and encode single MXP frames.

use std::io::{Read, Write};

use clap::{Args, Subcommand};

use super::CliError;

pub mod decode;
pub mod encode;

/// Arguments of `mxp frame`.
#[derive(Debug, Args)]
pub struct FrameArgs {
    /// What to do with frames.
    #[command(subcommand)]
    pub command: FrameCommand,
}

/// The `mxp frame` subcommands.
#[derive(Debug, Subcommand)]
pub enum FrameCommand {
    /// Validate frames from stdin (hex lines, or a binary capture with --raw) and print one JSON line per frame.
    #[command(long_about = decode::LONG_ABOUT)]
    Decode(decode::DecodeArgs),
    /// Build one frame from its fields and print it as hex (or raw bytes with --raw-out).
    #[command(long_about = encode::LONG_ABOUT)]
    Encode(encode::EncodeArgs),
}

/// Runs an `mxp frame` command.
///
/// # Errors
/// See [`CliError`].
pub fn run<R: Read, W: Write>(args: FrameArgs, input: R, out: &mut W) -> Result<(), CliError> {
    match args.command {
        FrameCommand::Decode(args) => decode::run(&args, input, out),
        FrameCommand::Encode(args) => encode::run(&args, input, out),
    }
}
