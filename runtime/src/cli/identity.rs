//! `mxp identity`: the CLI's own identity, what an operator pins on a node.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{CliError, remote, write_out};

/// The long help of `mxp identity`.
pub const LONG_ABOUT: &str = "Print the fingerprint of the CLI's own identity, and its folder.\n\n\
    Every command that talks to a node (`mxp call`, `mxp agents`, `mxp agent suspend`, ...) \
    presents this identity (mutual TLS); a node that pins its peers must list this fingerprint, \
    and a node with operators must list it in node.operators for `mxp agent`. The identity (cert.der, key.der) is created on first \
    use in $MXP_CONFIG_DIR/identity, else $XDG_CONFIG_HOME/mxp/identity, else \
    ~/.config/mxp/identity, or in --identity-dir: the folder mode 0700, key.der 0600. \
    A key file group or others may read (e.g. mode 0644), or a folder they may write, is \
    refused with the `chmod` that fixes it; a folder they may only list is a warning on stderr.\n\n\
    Output:\n  \
    fingerprint: <64 hex digits>\n  \
    folder: <path>\n  \
    then two ready-to-paste ways to make this CLI an operator of a node: a line for \
    the [node] table of its TOML file, and the MXP_NODE__OPERATORS environment variable \
    (each replaces the node's list: merge with operators already there).\n\n\
    Exit codes: 0 success; 1 the identity cannot be read or created; 2 bad arguments.";

/// Arguments of `mxp identity`.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// Folder of the CLI's identity (created on first use) [default: $MXP_CONFIG_DIR/identity, else $XDG_CONFIG_HOME/mxp/identity, else ~/.config/mxp/identity].
    #[arg(long, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,
}

/// Runs `mxp identity`: loads (or creates) the identity and prints it.
///
/// # Errors
/// [`CliError::Io`] if the identity cannot be read or created,
/// [`CliError::Usage`] if there is no default folder.
pub fn run<W: Write>(args: &IdentityArgs, out: &mut W) -> Result<(), CliError> {
    let (identity, dir) = remote::load_identity(args.identity_dir.as_deref())?;
    let fp = identity.peer_id();
    let text = format!(
        "fingerprint: {fp}\nfolder: {}\n\n\
         To make this CLI an operator of a node, add its fingerprint to node.operators and restart the node:\n  \
         in the node's TOML, under [node]:  operators = [\"{fp}\"]\n  \
         or in its environment:            MXP_NODE__OPERATORS='[\"{fp}\"]'\n",
        dir.display()
    );
    write_out(out, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("mxp-identity-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args = IdentityArgs {
            identity_dir: Some(dir.join("id")),
        };
        let mut first = Vec::new();
        run(&args, &mut first).unwrap();
        let mut second = Vec::new();
        run(&args, &mut second).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8(first.clone()).unwrap();
        let fp = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("fingerprint: ")
            .unwrap();
        assert_eq!(fp.len(), 64);
        assert!(text.contains(&format!("folder: {}", dir.join("id").display())));
        assert_eq!(first, second);
        // The setting to paste is valid TOML for the node's configuration.
        let paste = text
            .lines()
            .find_map(|l| l.split_once("under [node]:").map(|(_, v)| v.trim()))
            .unwrap();
        let parsed: toml::Table = toml::from_str(paste).unwrap();
        assert_eq!(parsed["operators"][0].as_str(), Some(fp));
    }

    #[test]
    fn an_unusable_folder_is_an_io_error() {
        let file = std::env::temp_dir().join(format!("mxp-identity-file-{}", std::process::id()));
        std::fs::write(&file, b"not a folder").unwrap();
        let args = IdentityArgs {
            identity_dir: Some(file.clone()),
        };
        let err = run(&args, &mut Vec::new()).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(err.exit_code(), 1, "{err}");
    }
}
