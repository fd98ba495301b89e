//! Pure checks on the relative path string a caller gives a file tool.
//!
//! These run before any I/O. They refuse what can never name a file
//! inside the root, so the refusal is named and the file system is not
//! touched. The jail itself is the opened directory handle (see
//! [`super::FsRoot`]): these checks are the first of two layers, not the
//! only one.
//!
//! Rules, in the order they are checked:
//! - the empty string is refused ([`FsError::EmptyPath`]);
//! - longer than `max_path_len` bytes is refused ([`FsError::PathTooLong`]);
//! - a NUL byte anywhere is refused ([`FsError::NulByte`]);
//! - a backslash anywhere is refused ([`FsError::Backslash`]): on Unix it
//!   is a legal file name byte, but it is a separator on Windows and in
//!   many policy writers' heads, so `a\..\b` would mean one thing to a
//!   reviewer and another to the kernel;
//! - a leading `/` is refused ([`FsError::AbsolutePath`]);
//! - a `..` component anywhere is refused ([`FsError::ParentComponent`]),
//!   even where it would stay inside the root (`a/../b`): a path names one
//!   place, read left to right;
//! - a component longer than [`MAX_COMPONENT_LEN`] bytes is refused
//!   ([`FsError::ComponentTooLong`]).
//!
//! Empty components (`a//b`, a trailing `/`) and `.` components are
//! dropped; what remains is the normalised [`RelPath`]. A path of only
//! `.` components names the root itself.
//!
//! Nothing is decoded: `%2e%2e%2f` is a file name of nine bytes, and
//! Unicode lookalikes (`．．`, `‥`, `∕`) are ordinary file name bytes the
//! kernel never treats as dots or separators.

use std::path::PathBuf;

use super::FsError;

/// The longest single path component accepted, in bytes (`NAME_MAX` on
/// Linux and most Unix file systems).
pub const MAX_COMPONENT_LEN: usize = 255;

/// A relative path that passed [`check`]: its components, none empty,
/// `.` or `..`, none holding `/`, `\` or NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    components: Vec<String>,
}

impl RelPath {
    /// Whether the path names the root itself (it was only `.`s).
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The normalised components, in order.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// The path relative to the root, for the directory handle (`.` for
    /// the root itself).
    pub fn to_path(&self) -> PathBuf {
        if self.components.is_empty() {
            return PathBuf::from(".");
        }
        self.components.iter().collect()
    }

    /// The parent (relative, `.` for the root) and the final component,
    /// or `None` for the root itself.
    pub fn split_last(&self) -> Option<(PathBuf, &str)> {
        let (last, parent) = self.components.split_last()?;
        let parent = if parent.is_empty() {
            PathBuf::from(".")
        } else {
            parent.iter().collect()
        };
        Some((parent, last.as_str()))
    }
}

/// Checks a caller's relative path string against the rules above.
///
/// # Errors
///
/// The [`FsError`] variant naming the first rule `rel` breaks.
pub fn check(rel: &str, max_path_len: usize) -> Result<RelPath, FsError> {
    let named = || rel.to_owned();
    if rel.is_empty() {
        return Err(FsError::EmptyPath);
    }
    if rel.len() > max_path_len {
        return Err(FsError::PathTooLong {
            len: rel.len(),
            limit: max_path_len,
        });
    }
    if rel.contains('\0') {
        return Err(FsError::NulByte {
            path: rel.replace('\0', "\\0"),
        });
    }
    if rel.contains('\\') {
        return Err(FsError::Backslash { path: named() });
    }
    if rel.starts_with('/') {
        return Err(FsError::AbsolutePath { path: named() });
    }
    let mut components = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(FsError::ParentComponent { path: named() }),
            _ if part.len() > MAX_COMPONENT_LEN => {
                return Err(FsError::ComponentTooLong {
                    path: named(),
                    limit: MAX_COMPONENT_LEN,
                });
            }
            _ => components.push(part.to_owned()),
        }
    }
    Ok(RelPath { components })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 4096;

    fn ok(rel: &str) -> Vec<String> {
        check(rel, MAX).unwrap().components().to_vec()
    }

    #[test]
    fn plain_relative_paths_pass_normalised() {
        assert_eq!(ok("a"), ["a"]);
        assert_eq!(ok("a/b/c.txt"), ["a", "b", "c.txt"]);
        assert_eq!(ok("./a//b/"), ["a", "b"]);
        assert_eq!(ok("a/./b"), ["a", "b"]);
        assert!(check(".", MAX).unwrap().is_root());
        assert!(check("././/", MAX).unwrap().is_root());
    }

    #[test]
    fn empty_is_refused() {
        assert!(matches!(check("", MAX), Err(FsError::EmptyPath)));
    }

    #[test]
    fn absolute_is_refused() {
        for p in ["/", "/etc/passwd", "//etc", "/./a"] {
            assert!(
                matches!(check(p, MAX), Err(FsError::AbsolutePath { .. })),
                "{p}"
            );
        }
    }

    #[test]
    fn parent_components_are_refused_anywhere() {
        for p in [
            "..",
            "../a",
            "a/..",
            "a/../b",
            "./../a",
            "a/b/../../..",
            "a//../",
        ] {
            assert!(
                matches!(check(p, MAX), Err(FsError::ParentComponent { .. })),
                "{p}"
            );
        }
    }

    #[test]
    fn dotted_names_that_are_not_parent_pass() {
        assert_eq!(ok("..."), ["..."]);
        assert_eq!(ok("..a"), ["..a"]);
        assert_eq!(ok(".hidden"), [".hidden"]);
    }

    #[test]
    fn nul_and_backslash_are_refused() {
        assert!(matches!(check("a\0b", MAX), Err(FsError::NulByte { .. })));
        assert!(matches!(check(".\0", MAX), Err(FsError::NulByte { .. })));
        assert!(matches!(
            check("a\\..\\b", MAX),
            Err(FsError::Backslash { .. })
        ));
        assert!(matches!(check("\\", MAX), Err(FsError::Backslash { .. })));
    }

    #[test]
    fn percent_encoding_is_not_decoded() {
        assert_eq!(ok("%2e%2e%2fetc"), ["%2e%2e%2fetc"]);
        assert_eq!(ok("..%2f..%2f"), ["..%2f..%2f"]);
    }

    #[test]
    fn unicode_lookalikes_are_plain_names() {
        assert_eq!(ok("\u{ff0e}\u{ff0e}/x"), ["\u{ff0e}\u{ff0e}", "x"]);
        assert_eq!(ok("\u{2025}"), ["\u{2025}"]);
        assert_eq!(ok("a\u{2215}b"), ["a\u{2215}b"]);
    }

    #[test]
    fn length_limits_hold() {
        let long = "a/".repeat(2048) + "b";
        assert!(matches!(
            check(&long, MAX),
            Err(FsError::PathTooLong { limit: MAX, .. })
        ));
        let at_limit = "a".repeat(MAX_COMPONENT_LEN);
        assert_eq!(ok(&at_limit).len(), 1);
        let over = "a".repeat(MAX_COMPONENT_LEN + 1);
        assert!(matches!(
            check(&over, MAX),
            Err(FsError::ComponentTooLong { .. })
        ));
    }

    #[test]
    fn split_last_gives_parent_and_name() {
        let p = check("a/b/c", MAX).unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent, PathBuf::from("a/b"));
        assert_eq!(name, "c");
        let p = check("c", MAX).unwrap();
        assert_eq!(p.split_last().unwrap().0, PathBuf::from("."));
        assert!(check(".", MAX).unwrap().split_last().is_none());
    }
}
