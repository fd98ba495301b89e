//! `mxp skills list|verify`: a node's WebAssembly skills, read offline from
//! its configuration (`--config`) or from `--dir` and `--pins`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use mxp_skills::supply::{self, Pins, SkillReport, SkillStatus};
use serde_json::{Value, json};

use super::{CliError, write_out};

/// The long help of `mxp skills`.
pub const LONG_ABOUT: &str = "List or verify a node's WebAssembly skills, offline (no node needed).\n\n\
    A skill is a folder <skills dir>/<name>/ holding skill.toml (its manifest) and skill.wasm \
    (its module); the node loads it only if the SHA-256 of the module equals the pin in \
    skills.pins (docs/SKILLS.md). `list` reads the manifests (name, version, the module hash \
    the manifest declares, the tools it may ask for) and hashes nothing. `verify` checks every \
    module against its pin as the node does at start: a module that differs is refused and \
    MOVED to the quarantine folder, never deleted. Pinned skills with no folder are reported \
    missing.\n\n\
    Where the skills are: --config reads a node configuration as mxp-node does (the file, then \
    MXP_<SECTION>__<KEY> variables) and takes skills.dir, skills.quarantine_dir and skills.pins \
    from it; or give --dir, --pins NAME=SHA256 (repeat it, or separate with commas) and, for \
    verify, --quarantine-dir.\n\n\
    Examples:\n  \
    mxp skills list --config node.toml\n  \
    mxp skills verify --config node.toml\n  \
    mxp skills list --dir ./skills\n  \
    mxp skills verify --dir ./skills --quarantine-dir ./quarantine \
    --pins summarise=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n\n\
    Exit codes: 0 success (list: every manifest read; verify: every skill verified, none \
    missing); 1 local failure (the skills folder cannot be read); 2 bad arguments or input \
    (an invalid configuration, a manifest that does not read, a skill refused or missing).";

/// Arguments of `mxp skills`.
#[derive(Debug, Args)]
pub struct SkillsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SkillsCommand,
}

/// The `mxp skills` commands.
#[derive(Debug, Subcommand)]
pub enum SkillsCommand {
    /// List the skills of the folder from their manifests (hashes nothing).
    #[command(long_about = LONG_ABOUT)]
    List(Source),
    /// Check every module against its pin as the node does; a module that differs is quarantined.
    #[command(long_about = LONG_ABOUT)]
    Verify(Source),
}

/// Where the skills and their pins are.
#[derive(Debug, Args)]
pub struct Source {
    /// A node configuration file (its `[skills]` section, after MXP_ variables).
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with_all = ["dir", "pins", "quarantine_dir"])]
    pub config: Option<PathBuf>,
    /// The skills folder.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Pins, NAME=SHA256 (64 lower-case hex digits); repeat or separate with commas.
    #[arg(long, value_name = "NAME=SHA256", value_delimiter = ',')]
    pub pins: Vec<String>,
    /// Where verify moves a module that does not match its pin (same filesystem as --dir).
    #[arg(long, value_name = "DIR")]
    pub quarantine_dir: Option<PathBuf>,
    /// One JSON object per skill, one per line, instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The folder, pins and quarantine a command works on.
struct Resolved {
    dir: PathBuf,
    pins: Pins,
    quarantine: Option<PathBuf>,
}

fn parse_pins(raw: &[String]) -> Result<Pins, CliError> {
    let mut pins = Pins::new();
    for p in raw {
        let (name, hash) = p
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--pins {p:?}: write NAME=SHA256")))?;
        if !mxp_skills::manifest::valid_skill_name(name) {
            return Err(CliError::Usage(format!(
                "--pins {p:?}: {name:?} is not a skill name (1 to 64 of a-z 0-9 _ -)"
            )));
        }
        if !mxp_skills::manifest::valid_hash(hash) {
            return Err(CliError::Usage(format!(
                "--pins {p:?}: the SHA-256 must be 64 lower-case hex digits"
            )));
        }
        if pins.insert(name.to_owned(), hash.to_owned()).is_some() {
            return Err(CliError::Usage(format!("--pins: {name:?} is pinned twice")));
        }
    }
    Ok(pins)
}

fn from_config(path: &Path) -> Result<Resolved, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let loaded = crate::node::Config::load_with_warnings(
        Some((&path.display().to_string(), &text)),
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    )
    .map_err(|e| CliError::Usage(format!("invalid configuration: {e}")))?;
    for w in &loaded.warnings {
        eprintln!("mxp: warning: environment variable {w}");
    }
    let skills = loaded.config.skills;
    if !skills.enabled() {
        return Err(CliError::Usage(format!(
            "{} configures no skills (skills.dir is empty)",
            path.display()
        )));
    }
    Ok(Resolved {
        dir: PathBuf::from(&skills.dir),
        pins: skills.pins,
        quarantine: Some(PathBuf::from(&skills.quarantine_dir)),
    })
}

fn resolve(s: &Source) -> Result<Resolved, CliError> {
    match (&s.config, &s.dir) {
        (Some(path), _) => from_config(path),
        (None, Some(dir)) => Ok(Resolved {
            dir: dir.clone(),
            pins: parse_pins(&s.pins)?,
            quarantine: s.quarantine_dir.clone(),
        }),
        (None, None) => Err(CliError::Usage(
            "say where the skills are: --config node.toml, or --dir DIR (with --pins NAME=SHA256)"
                .into(),
        )),
    }
}

fn status_word(s: &SkillStatus) -> &'static str {
    match s {
        SkillStatus::Verified => "verified",
        SkillStatus::Listed => "listed",
        SkillStatus::Refused(_) => "refused",
        SkillStatus::Missing => "missing",
        _ => "unknown",
    }
}

fn as_json(r: &SkillReport) -> Value {
    json!({
        "name": r.name,
        "version": r.version,
        "sha256": r.sha256,
        "pinned": r.pinned,
        "tools": r.tools,
        "status": status_word(&r.status),
        "reason": match &r.status {
            SkillStatus::Refused(e) => Some(e.to_string()),
            SkillStatus::Missing => Some("pinned, but there is no folder for it".to_owned()),
            _ => None,
        },
    })
}

fn as_text(r: &SkillReport, listing: bool) -> String {
    let mut line = format!("{} {}", r.name, r.version.as_deref().unwrap_or("-"));
    if listing && let Some(h) = &r.sha256 {
        line.push_str(&format!(" sha256 {h}"));
    }
    match (&r.pinned, &r.sha256) {
        (Some(p), Some(h)) if p == h => line.push_str(" pinned"),
        (Some(p), Some(_)) => {
            line.push_str(&format!(" pinned to {p} (the manifest says otherwise)"))
        }
        (Some(p), None) => line.push_str(&format!(" pinned {p}")),
        (None, _) => line.push_str(" NOT PINNED"),
    }
    if !r.tools.is_empty() {
        line.push_str(&format!(" tools [{}]", r.tools.join(", ")));
    }
    match &r.status {
        SkillStatus::Refused(e) => line.push_str(&format!(": REFUSED: {e}")),
        SkillStatus::Missing => line.push_str(": MISSING: pinned, but there is no folder for it"),
        other => line.push_str(&format!(": {}", status_word(other))),
    }
    line.push('\n');
    line
}

/// Runs `mxp skills ...`.
///
/// # Errors
/// [`CliError::Usage`] (exit 2) for bad arguments, an invalid
/// configuration, or a skill that is refused or missing;
/// [`CliError::Io`] (exit 1) when the skills folder cannot be read.
pub fn run<W: Write>(args: &SkillsArgs, out: &mut W) -> Result<(), CliError> {
    let (source, verifying) = match &args.command {
        SkillsCommand::List(s) => (s, false),
        SkillsCommand::Verify(s) => (s, true),
    };
    let r = resolve(source)?;
    let reports = if verifying {
        let quarantine = r.quarantine.as_deref().ok_or_else(|| {
            CliError::Usage(
                "verify moves a module that does not match its pin: give --quarantine-dir".into(),
            )
        })?;
        supply::verify(&r.dir, &r.pins, quarantine)
    } else {
        supply::list(&r.dir, &r.pins)
    }
    .map_err(|e| CliError::Io(e.to_string()))?;
    for rep in &reports {
        let text = if source.json {
            format!("{}\n", as_json(rep))
        } else {
            as_text(rep, !verifying)
        };
        write_out(out, text.as_bytes())?;
    }
    let bad = reports
        .iter()
        .filter(|rep| match rep.status {
            SkillStatus::Refused(_) => true,
            SkillStatus::Missing => verifying,
            _ => false,
        })
        .count();
    let ok = reports.len() - bad;
    if !source.json {
        let summary = format!(
            "{} skill(s) in {}: {ok} {}, {bad} {}\n",
            reports.len(),
            r.dir.display(),
            if verifying { "verified" } else { "listed" },
            if verifying {
                "refused or missing"
            } else {
                "unreadable"
            },
        );
        write_out(out, summary.as_bytes())?;
    }
    if bad > 0 {
        return Err(CliError::Usage(format!(
            "{bad} skill(s) {}",
            if verifying {
                "refused or missing (see above)"
            } else {
                "with a manifest that does not read (see above)"
            }
        )));
    }
    Ok(())
}
