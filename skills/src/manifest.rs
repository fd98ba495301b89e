//! The skill manifest (`skill.toml`): pure parsing and validation.
//!
//! ```toml
//! name = "summarise"
//! version = "1.2.0"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! tools = ["fs.read"]
//!
//! [limits]
//! fuel = 10_000_000
//! memory_bytes = 1_048_576
//! max_output_bytes = 65_536
//! max_host_calls = 8
//! ```

use serde::Deserialize;
use thiserror::Error;

/// The most fuel a manifest may ask for per invocation.
pub const MAX_FUEL: u64 = 10_000_000_000;
/// The most linear memory a manifest may ask for (256 MiB).
pub const MAX_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
/// The least linear memory a manifest may ask for (one wasm page).
pub const MIN_MEMORY_BYTES: u64 = 64 * 1024;
/// The largest output a manifest may allow (16 MiB).
pub const MAX_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;
/// The most host calls a manifest may allow per invocation.
pub const MAX_HOST_CALLS: u32 = 10_000;
/// The most tools a manifest may list.
pub const MAX_TOOLS: usize = 256;
/// The longest skill or tool name.
pub const MAX_NAME_LEN: usize = 64;

/// A skill's manifest, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The skill's name: `[a-z0-9][a-z0-9_-]*`, at most 64 bytes.
    pub name: String,
    /// `MAJOR.MINOR.PATCH`, decimal numbers.
    pub version: String,
    /// SHA-256 of the module bytes, 64 lowercase hex digits.
    pub sha256: String,
    /// The tools the skill may ask the host for.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Per-invocation resource limits.
    pub limits: SkillLimits,
}

/// Per-invocation resource limits of a skill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillLimits {
    /// Wasmtime fuel (about one unit per wasm instruction), 1..=[`MAX_FUEL`].
    pub fuel: u64,
    /// Cap on linear memory, [`MIN_MEMORY_BYTES`]..=[`MAX_MEMORY_BYTES`].
    pub memory_bytes: u64,
    /// Cap on the output of an entry point and of each tool result copied in, 1..=[`MAX_OUTPUT_BYTES`].
    pub max_output_bytes: u64,
    /// Cap on `mxp.call_tool` calls, 0..=[`MAX_HOST_CALLS`].
    pub max_host_calls: u32,
}

/// Why a manifest was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    /// The TOML did not parse or did not match the format (this includes unknown fields).
    #[error("the skill manifest is not valid: {reason}")]
    Syntax {
        /// The parser's message, with the line and field.
        reason: String,
    },
    /// The name has characters outside `[a-z0-9_-]`, is empty or too long.
    #[error(
        "skill name {name:?} is not allowed: use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// The version is not `MAJOR.MINOR.PATCH`.
    #[error("skill version {version:?} is not MAJOR.MINOR.PATCH (for example 1.0.0)")]
    BadVersion {
        /// The version given.
        version: String,
    },
    /// The hash is not 64 lowercase hex digits.
    #[error("sha256 {hash:?} is not 64 lowercase hex digits")]
    BadHash {
        /// The hash given.
        hash: String,
    },
    /// A tool name is empty, too long, has characters outside `[a-z0-9_.-]`, or repeats.
    #[error(
        "tool name {tool:?} is not allowed or listed twice: use 1 to 64 of a-z, 0-9, '_', '.' and '-'"
    )]
    BadTool {
        /// The tool given.
        tool: String,
    },
    /// More tools than [`MAX_TOOLS`].
    #[error("the manifest lists {count} tools; at most {MAX_TOOLS} are allowed")]
    TooManyTools {
        /// How many were listed.
        count: usize,
    },
    /// A limit is zero or above its maximum.
    #[error("limit {field} = {value} is outside {min}..={max}")]
    LimitOutOfRange {
        /// The limit.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The least allowed.
        min: u64,
        /// The most allowed.
        max: u64,
    },
}

impl Manifest {
    /// Parse and validate a manifest.
    ///
    /// # Errors
    ///
    /// A [`ManifestError`] naming the first violation found.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Self = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            reason: e.to_string().trim().to_owned(),
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Check every field against the rules above.
    ///
    /// # Errors
    ///
    /// A [`ManifestError`] naming the first violation found.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !valid_name(&self.name, |c| c == '_' || c == '-') {
            return Err(ManifestError::BadName {
                name: self.name.clone(),
            });
        }
        if !valid_version(&self.version) {
            return Err(ManifestError::BadVersion {
                version: self.version.clone(),
            });
        }
        if !valid_hash(&self.sha256) {
            return Err(ManifestError::BadHash {
                hash: self.sha256.clone(),
            });
        }
        if self.tools.len() > MAX_TOOLS {
            return Err(ManifestError::TooManyTools {
                count: self.tools.len(),
            });
        }
        for (i, tool) in self.tools.iter().enumerate() {
            let repeated = self.tools.iter().take(i).any(|t| t == tool);
            if repeated || !valid_name(tool, |c| c == '_' || c == '-' || c == '.') {
                return Err(ManifestError::BadTool { tool: tool.clone() });
            }
        }
        self.limits.validate()
    }

    /// Whether the manifest grants `tool`.
    #[must_use]
    pub fn grants(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }
}

impl SkillLimits {
    /// Check each limit is within its range.
    ///
    /// # Errors
    ///
    /// [`ManifestError::LimitOutOfRange`] naming the limit.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let checks = [
            ("fuel", self.fuel, 1, MAX_FUEL),
            (
                "memory_bytes",
                self.memory_bytes,
                MIN_MEMORY_BYTES,
                MAX_MEMORY_BYTES,
            ),
            (
                "max_output_bytes",
                self.max_output_bytes,
                1,
                MAX_OUTPUT_BYTES,
            ),
            (
                "max_host_calls",
                u64::from(self.max_host_calls),
                0,
                u64::from(MAX_HOST_CALLS),
            ),
        ];
        for (field, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(ManifestError::LimitOutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }
}

/// Whether `name` is a valid skill name: 1 to 64 of `a-z 0-9 _ -`,
/// starting with a letter or digit.
#[must_use]
pub fn valid_skill_name(name: &str) -> bool {
    valid_name(name, |c| c == '_' || c == '-')
}

fn valid_name(name: &str, extra: impl Fn(char) -> bool) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_NAME_LEN
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra(c))
}

fn valid_version(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `hash` is 64 lowercase hex digits.
#[must_use]
pub fn valid_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn text(name: &str, version: &str, hash: &str, tools: &str, limits: &str) -> String {
        format!(
            "name = \"{name}\"\nversion = \"{version}\"\nsha256 = \"{hash}\"\ntools = [{tools}]\n[limits]\n{limits}\n"
        )
    }

    const LIMITS: &str =
        "fuel = 1000\nmemory_bytes = 65536\nmax_output_bytes = 100\nmax_host_calls = 2";

    #[test]
    fn a_good_manifest_parses() {
        let m = Manifest::parse(&text("sum-up_2", "1.20.3", HASH, "\"fs.read\"", LIMITS)).unwrap();
        assert_eq!(m.name, "sum-up_2");
        assert!(m.grants("fs.read"));
        assert!(!m.grants("fs.write"));
        assert_eq!(m.limits.max_host_calls, 2);
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad_name = Manifest::parse(&text("Sum", "1.0.0", HASH, "", LIMITS));
        assert!(matches!(bad_name, Err(ManifestError::BadName { .. })));
        let slash = Manifest::parse(&text("a/b", "1.0.0", HASH, "", LIMITS));
        assert!(matches!(slash, Err(ManifestError::BadName { .. })));
        let bad_version = Manifest::parse(&text("a", "1.0", HASH, "", LIMITS));
        assert!(matches!(bad_version, Err(ManifestError::BadVersion { .. })));
        let upper = HASH.to_uppercase();
        let bad_hash = Manifest::parse(&text("a", "1.0.0", &upper, "", LIMITS));
        assert!(matches!(bad_hash, Err(ManifestError::BadHash { .. })));
        let short = Manifest::parse(&text("a", "1.0.0", "abc", "", LIMITS));
        assert!(matches!(short, Err(ManifestError::BadHash { .. })));
        let dup = Manifest::parse(&text("a", "1.0.0", HASH, "\"x\", \"x\"", LIMITS));
        assert!(matches!(dup, Err(ManifestError::BadTool { .. })));
        let empty_tool = Manifest::parse(&text("a", "1.0.0", HASH, "\"\"", LIMITS));
        assert!(matches!(empty_tool, Err(ManifestError::BadTool { .. })));
    }

    #[test]
    fn unknown_fields_are_refused_at_both_levels() {
        let top = format!("{}extra = 1\n", text("a", "1.0.0", HASH, "", LIMITS));
        assert!(matches!(
            Manifest::parse(&top),
            Err(ManifestError::Syntax { .. })
        ));
        let inner = text("a", "1.0.0", HASH, "", &format!("{LIMITS}\nwall_ms = 5"));
        let err = Manifest::parse(&inner).unwrap_err();
        assert!(err.to_string().contains("wall_ms"), "{err}");
    }

    #[test]
    fn huge_or_zero_limits_are_refused() {
        let huge =
            "fuel = 1000\nmemory_bytes = 68719476736\nmax_output_bytes = 100\nmax_host_calls = 2";
        let err = Manifest::parse(&text("a", "1.0.0", HASH, "", huge)).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::LimitOutOfRange {
                field: "memory_bytes",
                ..
            }
        ));
        let zero = "fuel = 0\nmemory_bytes = 65536\nmax_output_bytes = 100\nmax_host_calls = 2";
        let err = Manifest::parse(&text("a", "1.0.0", HASH, "", zero)).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::LimitOutOfRange { field: "fuel", .. }
        ));
        let calls =
            "fuel = 1\nmemory_bytes = 65536\nmax_output_bytes = 100\nmax_host_calls = 10001";
        let err = Manifest::parse(&text("a", "1.0.0", HASH, "", calls)).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::LimitOutOfRange {
                field: "max_host_calls",
                ..
            }
        ));
    }
}
