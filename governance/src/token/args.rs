//! The canonical encoding of a tool's JSON arguments and its digest.
//!
//! A token binds the *exact* arguments of the Call it authorises through
//! [`args_digest`]. Two JSON texts that differ only in object key order or
//! whitespace describe the same arguments and get the same digest; any other
//! difference (a value, a key, a number's spelling as serde_json prints it,
//! array order) gives another digest.
//!
//! # Canonical JSON
//!
//! [`canonical_json`] writes a [`serde_json::Value`] as:
//!
//! * objects: `{`, members sorted by key in ascending order of the keys'
//!   UTF-8 bytes (Rust's `str` order; this is *not* JCS's UTF-16 order),
//!   each written as `"key":value`, separated by `,`, then `}`;
//! * arrays: `[`, elements in their order, separated by `,`, then `]`;
//! * strings (and keys): as serde_json escapes them: `"` and `\` and the
//!   control characters U+0000 to U+001F escaped (`\n`, `\t`, `\"`, `\\`,
//!   `\b`, `\f`, `\r`, otherwise `\u00XX` lower-case hex), everything else
//!   written as UTF-8 as it is;
//! * numbers: as serde_json's `Number` prints them (integers in decimal,
//!   floats as the shortest text that reads back to the same `f64`);
//! * `true`, `false`, `null`;
//! * no whitespace anywhere.
//!
//! The walk uses an explicit stack, not recursion, so no `Value` (however
//! deep) overflows the thread's stack.
//!
//! # Digest
//!
//! `BLAKE3-derive_key(ARGS_DIGEST_CONTEXT, canonical_json(args))`: BLAKE3
//! in key-derivation mode with the context string [`ARGS_DIGEST_CONTEXT`],
//! so the digest of arguments can never equal a BLAKE3 hash of the same
//! bytes computed for any other purpose.

use std::fmt;

use serde_json::Value;

/// The BLAKE3 key-derivation context of [`args_digest`].
pub const ARGS_DIGEST_CONTEXT: &str =
    "mxp-runtime 2026-12-01 governance canonical tool arguments v1";

/// The 32-byte BLAKE3 digest of a tool's canonical arguments.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArgsDigest(pub [u8; 32]);

impl ArgsDigest {
    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ArgsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ArgsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArgsDigest(")?;
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The digest of `args` in its canonical JSON encoding (see the module
/// documentation).
///
/// ```
/// use mxp_governance::token::args::args_digest;
/// let a: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": [true, null]}"#)?;
/// let b: serde_json::Value = serde_json::from_str(r#"{"a":[true,null],"b":1}"#)?;
/// assert_eq!(args_digest(&a), args_digest(&b));
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn args_digest(args: &Value) -> ArgsDigest {
    let mut hasher = blake3::Hasher::new_derive_key(ARGS_DIGEST_CONTEXT);
    write_canonical(args, &mut |bytes| {
        hasher.update(bytes);
    });
    ArgsDigest(*hasher.finalize().as_bytes())
}

/// The canonical JSON text of `args` (see the module documentation): the
/// exact bytes [`args_digest`] hashes.
///
/// ```
/// use mxp_governance::token::args::canonical_json;
/// let v = serde_json::json!({"z": "\n", "a": {"y": 1.5, "x": -0}});
/// assert_eq!(canonical_json(&v), r#"{"a":{"x":0,"y":1.5},"z":"\n"}"#);
/// ```
pub fn canonical_json(args: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(args, &mut |bytes| out.extend_from_slice(bytes));
    // Only UTF-8 is ever written: JSON punctuation, serde_json's string
    // escapes and number texts, and the UTF-8 of `str`s.
    String::from_utf8(out).unwrap_or_default()
}

/// One step of the iterative walk.
enum Step<'a> {
    /// Write this value.
    Value(&'a Value),
    /// Write these bytes (punctuation).
    Raw(&'static [u8]),
    /// Write this string as a JSON string.
    Str(&'a str),
}

fn write_canonical(value: &Value, sink: &mut dyn FnMut(&[u8])) {
    let mut stack: Vec<Step<'_>> = vec![Step::Value(value)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Raw(bytes) => sink(bytes),
            Step::Str(s) => write_str(s, sink),
            Step::Value(v) => match v {
                Value::Null => sink(b"null"),
                Value::Bool(true) => sink(b"true"),
                Value::Bool(false) => sink(b"false"),
                Value::Number(n) => sink(n.to_string().as_bytes()),
                Value::String(s) => write_str(s, sink),
                Value::Array(items) => {
                    sink(b"[");
                    stack.push(Step::Raw(b"]"));
                    for (i, item) in items.iter().enumerate().rev() {
                        stack.push(Step::Value(item));
                        if i > 0 {
                            stack.push(Step::Raw(b","));
                        }
                    }
                }
                Value::Object(map) => {
                    sink(b"{");
                    stack.push(Step::Raw(b"}"));
                    let mut members: Vec<(&String, &Value)> = map.iter().collect();
                    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                    for (i, (key, item)) in members.into_iter().enumerate().rev() {
                        stack.push(Step::Value(item));
                        stack.push(Step::Raw(b":"));
                        stack.push(Step::Str(key));
                        if i > 0 {
                            stack.push(Step::Raw(b","));
                        }
                    }
                }
            },
        }
    }
}

/// A JSON string exactly as serde_json escapes it.
fn write_str(s: &str, sink: &mut dyn FnMut(&[u8])) {
    sink(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x00..=0x1f => None,
            _ => continue,
        };
        sink(bytes.get(start..i).unwrap_or_default());
        match escape {
            Some(e) => sink(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
                sink(&[b'\\', b'u', b'0', b'0', hi, lo]);
            }
        }
        start = i + 1;
    }
    sink(bytes.get(start..).unwrap_or_default());
    sink(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let v: Value =
            serde_json::from_str(r#" { "b" : [ 1 , 2 ] , "a" : { "d": null, "c": false } } "#)
                .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":false,"d":null},"b":[1,2]}"#
        );
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        for s in [
            "plain",
            "quote\" back\\ slash",
            "\u{0}\u{1f}\u{7f}\n\r\t\u{8}\u{c}",
            "é ünïcode 🦀",
            "</script>",
        ] {
            let v = Value::String(s.to_owned());
            assert_eq!(
                canonical_json(&v),
                serde_json::to_string(&v).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn numbers_print_as_serde_json_prints_them() {
        let v: Value = serde_json::from_str(
            "[1, -0, 1.0, 1e3, 0.1, 18446744073709551615, -9223372036854775808, 2.5e-8]",
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v),
            "[1,-0.0,1.0,1000.0,0.1,18446744073709551615,-9223372036854775808,2.5e-8]"
        );
        assert_eq!(canonical_json(&v), serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn key_order_is_by_utf8_bytes() {
        let v = json!({"é": 1, "z": 2, "Z": 3, "": 4, "aa": 5, "a": 6});
        assert_eq!(
            canonical_json(&v),
            r#"{"":4,"Z":3,"a":6,"aa":5,"z":2,"é":1}"#
        );
    }

    #[test]
    fn digest_is_domain_separated_and_order_free() {
        let a = json!({"path": "/tmp/x", "mode": 420});
        let b: Value = serde_json::from_str(r#"{"mode":420,"path":"/tmp/x"}"#).unwrap();
        assert_eq!(args_digest(&a), args_digest(&b));
        assert_ne!(
            args_digest(&a),
            args_digest(&json!({"path": "/tmp/y", "mode": 420}))
        );
        assert_ne!(
            args_digest(&a).0,
            *blake3::hash(canonical_json(&a).as_bytes()).as_bytes()
        );
        assert_ne!(args_digest(&json!([1, 2])), args_digest(&json!([2, 1])));
        assert_ne!(args_digest(&json!("1")), args_digest(&json!(1)));
    }

    #[test]
    fn deep_values_do_not_overflow_the_stack() {
        let mut v = json!(0);
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        let text = canonical_json(&v);
        assert_eq!(text.len(), 200_001);
        let _ = args_digest(&v);
        // Drop iteratively too: serde_json's Drop of a 100 000-deep value recurses.
        let mut cur = v;
        while let Value::Array(mut items) = cur {
            cur = items.pop().unwrap_or(Value::Null);
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_text_parses_back_to_the_same_value(v in arb_json()) {
            let text = canonical_json(&v);
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(canonical_json(&back), text);
        }
    }
}
