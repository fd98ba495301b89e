//! `mxp`: the MXP command-line tool. Run `mxp --help` for the commands.

use std::process::ExitCode;

fn main() -> ExitCode {
    mxp_runtime::cli::main()
}
