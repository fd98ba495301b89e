//! Loading skills from disk: manifest, module, pinned hash, quarantine.
//!
//! Layout: `<skills>/<name>/skill.toml` and `<skills>/<name>/skill.wasm`.
//! The node configuration pins `name -> sha256`; the manifest carries the
//! same hash. Both must agree with the SHA-256 of `skill.wasm`. A module that
//! differs is refused and moved (never deleted) to
//! `<quarantine>/<name>-<actual hash>.wasm`, which must be on the same
//! filesystem as the skills.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::SkillError;
use crate::manifest::Manifest;

/// The manifest file in a skill directory.
pub const MANIFEST_FILE: &str = "skill.toml";
/// The module file in a skill directory.
pub const MODULE_FILE: &str = "skill.wasm";
/// The largest module accepted (32 MiB).
pub const MAX_MODULE_BYTES: u64 = 32 * 1024 * 1024;
/// The counter of quarantined modules.
pub const QUARANTINED_METRIC: &str = "mxp_skills_quarantined_total";

/// The node configuration's pins: skill name to SHA-256 (lowercase hex).
pub type Pins = BTreeMap<String, String>;

/// A skill whose module bytes match its pin; the input of [`crate::SkillRunner::load`].
#[derive(Debug, Clone)]
pub struct VerifiedSkill {
    pub(crate) manifest: Manifest,
    pub(crate) bytes: Vec<u8>,
}

impl VerifiedSkill {
    /// The skill's manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// The SHA-256 of `bytes`, lowercase hex.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SkillError + '_ {
    move |source| SkillError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest, SkillError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let manifest = Manifest::parse(&text)?;
    if dir.file_name().and_then(|n| n.to_str()) != Some(manifest.name.as_str()) {
        return Err(SkillError::NameMismatch {
            dir: dir.to_path_buf(),
            name: manifest.name,
        });
    }
    Ok(manifest)
}

/// Load the skill in `dir`, checking its module against `pins`.
///
/// # Errors
///
/// [`SkillError::Manifest`], [`SkillError::NameMismatch`], [`SkillError::NotPinned`],
/// [`SkillError::PinDisagrees`], [`SkillError::ModuleTooLarge`], [`SkillError::Io`];
/// [`SkillError::HashMismatch`] after moving the module to `quarantine`
/// (or [`SkillError::Quarantine`] if it could not be moved).
pub fn load(dir: &Path, pins: &Pins, quarantine: &Path) -> Result<VerifiedSkill, SkillError> {
    let manifest = read_manifest(dir)?;
    let Some(pinned) = pins.get(&manifest.name) else {
        return Err(SkillError::NotPinned {
            name: manifest.name,
        });
    };
    if *pinned != manifest.sha256 {
        return Err(SkillError::PinDisagrees {
            name: manifest.name.clone(),
            pinned: pinned.clone(),
            manifest: manifest.sha256.clone(),
        });
    }
    let path = dir.join(MODULE_FILE);
    let len = std::fs::metadata(&path).map_err(io(&path))?.len();
    if len > MAX_MODULE_BYTES {
        return Err(SkillError::ModuleTooLarge {
            len,
            max: MAX_MODULE_BYTES,
        });
    }
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let actual = sha256_hex(&bytes);
    if actual != *pinned {
        let quarantined_to = quarantine.join(format!("{}-{actual}.wasm", manifest.name));
        let moved = std::fs::create_dir_all(quarantine)
            .and_then(|()| std::fs::rename(&path, &quarantined_to));
        metrics::counter!(QUARANTINED_METRIC).increment(1);
        if let Err(source) = moved {
            tracing::warn!(skill = %manifest.name, expected = %pinned, %actual, error = %source,
                "skill module does not match its pin and could not be quarantined");
            return Err(SkillError::Quarantine { path, source });
        }
        tracing::warn!(skill = %manifest.name, expected = %pinned, %actual,
            quarantined_to = %quarantined_to.display(), "skill module does not match its pin: quarantined");
        return Err(SkillError::HashMismatch {
            name: manifest.name,
            expected: pinned.clone(),
            actual,
            quarantined_to,
        });
    }
    Ok(VerifiedSkill { manifest, bytes })
}

/// What `mxp skills verify` / `mxp skills list` show for one skill.
#[derive(Debug)]
pub struct SkillReport {
    /// The skill directory's name.
    pub name: String,
    /// The manifest's version, if the manifest was read.
    pub version: Option<String>,
    /// The SHA-256 the manifest declares for its module, if it was read
    /// (what a pin must say; `list` does not hash the module itself).
    pub sha256: Option<String>,
    /// The manifest's tools, if the manifest was read.
    pub tools: Vec<String>,
    /// The hash pinned in the node configuration, if any.
    pub pinned: Option<String>,
    /// The outcome.
    pub status: SkillStatus,
}

/// The outcome for one skill in a report.
#[derive(Debug)]
#[non_exhaustive]
pub enum SkillStatus {
    /// The module matches its pin (`verify`).
    Verified,
    /// The manifest was read; the module was not hashed (`list`).
    Listed,
    /// The skill was refused.
    Refused(SkillError),
    /// The configuration pins a skill with no directory.
    Missing,
}

impl fmt::Display for SkillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.name,
            self.version.as_deref().unwrap_or("-")
        )?;
        match &self.pinned {
            Some(p) => write!(f, " pinned {p}")?,
            None => write!(f, " not pinned")?,
        }
        if !self.tools.is_empty() {
            write!(f, " tools [{}]", self.tools.join(", "))?;
        }
        match &self.status {
            SkillStatus::Verified => write!(f, ": verified"),
            SkillStatus::Listed => write!(f, ": listed (not verified)"),
            SkillStatus::Refused(e) => write!(f, ": REFUSED: {e}"),
            SkillStatus::Missing => write!(f, ": MISSING: pinned but no skill directory"),
        }
    }
}

fn skill_dirs(skills: &Path) -> Result<Vec<PathBuf>, SkillError> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(skills).map_err(io(skills))? {
        let entry = entry.map_err(io(skills))?;
        if entry.file_type().map_err(io(&entry.path()))?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn report(dir: &Path, pins: &Pins, status: impl FnOnce(&Manifest) -> SkillStatus) -> SkillReport {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pinned = pins.get(&name).cloned();
    match read_manifest(dir) {
        Ok(m) => {
            let status = status(&m);
            SkillReport {
                name,
                version: Some(m.version),
                sha256: Some(m.sha256),
                tools: m.tools,
                pinned,
                status,
            }
        }
        Err(e) => SkillReport {
            name,
            version: None,
            sha256: None,
            tools: Vec::new(),
            pinned,
            status: SkillStatus::Refused(e),
        },
    }
}

fn missing(seen: &[SkillReport], pins: &Pins) -> Vec<SkillReport> {
    pins.iter()
        .filter(|(name, _)| !seen.iter().any(|r| &r.name == *name))
        .map(|(name, hash)| SkillReport {
            name: name.clone(),
            version: None,
            sha256: None,
            tools: Vec::new(),
            pinned: Some(hash.clone()),
            status: SkillStatus::Missing,
        })
        .collect()
}

/// `mxp skills verify`: load every skill under `skills`, quarantining mismatches.
///
/// # Errors
///
/// [`SkillError::Io`] if `skills` cannot be listed; per-skill failures are in the reports.
pub fn verify(
    skills: &Path,
    pins: &Pins,
    quarantine: &Path,
) -> Result<Vec<SkillReport>, SkillError> {
    load_all(skills, pins, quarantine).map(|(_, reports)| reports)
}

/// Loads every skill under `skills` as [`verify`] does, keeping the
/// verified ones for a runner: the verified skills, and a report for every
/// skill directory and every pin without one.
///
/// # Errors
///
/// [`SkillError::Io`] if `skills` cannot be listed; per-skill failures are in the reports.
pub fn load_all(
    skills: &Path,
    pins: &Pins,
    quarantine: &Path,
) -> Result<(Vec<VerifiedSkill>, Vec<SkillReport>), SkillError> {
    let mut verified = Vec::new();
    let mut reports: Vec<SkillReport> = skill_dirs(skills)?
        .iter()
        .map(|dir| {
            report(dir, pins, |_| match load(dir, pins, quarantine) {
                Ok(skill) => {
                    verified.push(skill);
                    SkillStatus::Verified
                }
                Err(e) => SkillStatus::Refused(e),
            })
        })
        .collect();
    let absent = missing(&reports, pins);
    reports.extend(absent);
    Ok((verified, reports))
}

/// `mxp skills list`: read every manifest under `skills` without hashing modules.
///
/// # Errors
///
/// [`SkillError::Io`] if `skills` cannot be listed; per-skill failures are in the reports.
pub fn list(skills: &Path, pins: &Pins) -> Result<Vec<SkillReport>, SkillError> {
    let mut reports: Vec<SkillReport> = skill_dirs(skills)?
        .iter()
        .map(|dir| report(dir, pins, |_| SkillStatus::Listed))
        .collect();
    let absent = missing(&reports, pins);
    reports.extend(absent);
    Ok(reports)
}
