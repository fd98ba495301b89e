//! Replacing secret values, and their encoded forms, in what a tool returns.

use std::collections::BTreeSet;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde_json::Value;
use zeroize::Zeroizing;

/// Derived forms (encodings, partial base64 alignments) shorter than this
/// are not searched for: they would match ordinary text. The raw value is
/// always searched for.
pub const MIN_DERIVED_LEN: usize = 6;

struct Needle {
    text: Zeroizing<String>,
    name: String,
}

/// What one [`Redactor`] pass replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redacted {
    /// Replacements made.
    pub count: usize,
    /// The secrets they were of.
    pub names: BTreeSet<String>,
}

impl Redacted {
    /// Whether anything was replaced.
    pub fn any(&self) -> bool {
        self.count > 0
    }

    fn add(&mut self, other: Redacted) {
        self.count += other.count;
        self.names.extend(other.names);
    }
}

/// Replaces secret values with `[redacted:NAME]`: the raw value, its hex
/// (either case), its percent-encoding (either case) and its base64 (standard
/// and URL-safe alphabets, at each of the three alignments it can have inside
/// a longer base64 text).
#[derive(Default)]
pub struct Redactor {
    // Longest first, so a value is replaced before a shorter form inside it.
    needles: Vec<Needle>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("forms", &self.needles.len())
            .finish()
    }
}

fn percent(value: &[u8], upper: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// The base64 characters that depend on `value` alone when it starts `k`
/// bytes into a longer text (k = 0, 1, 2).
fn base64_aligned(engine: &impl base64::Engine, value: &[u8], k: usize) -> Zeroizing<String> {
    let mut buf = Zeroizing::new(vec![0u8; k]);
    buf.extend_from_slice(value);
    let enc = Zeroizing::new(engine.encode(&*buf));
    let first = (8 * k).div_ceil(6);
    let last = (8 * (k + value.len())) / 6;
    Zeroizing::new(
        enc.get(first..last.max(first))
            .unwrap_or_default()
            .to_owned(),
    )
}

impl Redactor {
    /// A redactor for `secrets` (name, value).
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut needles = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let bytes = value.as_bytes();
            let mut forms: Vec<Zeroizing<String>> = vec![
                Zeroizing::new(hex::encode(bytes)),
                Zeroizing::new(hex::encode_upper(bytes)),
                Zeroizing::new(percent(bytes, true)),
                Zeroizing::new(percent(bytes, false)),
            ];
            for k in 0..3 {
                forms.push(base64_aligned(&STANDARD_NO_PAD, bytes, k));
                forms.push(base64_aligned(&URL_SAFE_NO_PAD, bytes, k));
            }
            needles.push(Needle {
                text: Zeroizing::new(value.to_owned()),
                name: name.to_owned(),
            });
            for f in forms {
                if f.len() >= MIN_DERIVED_LEN && f.as_str() != value {
                    needles.push(Needle {
                        text: f,
                        name: name.to_owned(),
                    });
                }
            }
        }
        needles.sort_by(|a, b| {
            b.text
                .len()
                .cmp(&a.text.len())
                .then_with(|| a.text.as_str().cmp(b.text.as_str()))
        });
        needles.dedup_by(|a, b| a.text == b.text);
        Redactor { needles }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `s` with every form replaced, if any was found.
    pub fn redact_str(&self, s: &str) -> Option<(String, Redacted)> {
        let mut out: Option<String> = None;
        let mut report = Redacted::default();
        for n in &self.needles {
            let cur = out.as_deref().unwrap_or(s);
            let hits = cur.matches(n.text.as_str()).count();
            if hits > 0 {
                let marker = format!("[redacted:{}]", n.name);
                out = Some(cur.replace(n.text.as_str(), &marker));
                report.count += hits;
                report.names.insert(n.name.clone());
            }
        }
        out.map(|o| (o, report))
    }

    /// `s` with every form replaced (unchanged if none was found).
    pub fn redact_string(&self, s: String) -> (String, Redacted) {
        match self.redact_str(&s) {
            Some(r) => r,
            None => (s, Redacted::default()),
        }
    }

    /// Replaces every form in the strings and object keys of `v`.
    pub fn redact_value(&self, v: &mut Value) -> Redacted {
        let mut report = Redacted::default();
        if self.is_empty() {
            return report;
        }
        // An explicit stack: a deep value can't overflow ours.
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) => {
                    if let Some((r, n)) = self.redact_str(s) {
                        *s = r;
                        report.add(n);
                    }
                }
                Value::Array(a) => stack.extend(a.iter_mut()),
                Value::Object(m) => {
                    let keys: Vec<String> = m.keys().cloned().collect();
                    for k in keys {
                        if let Some((nk, n)) = self.redact_str(&k) {
                            if let Some(val) = m.remove(&k) {
                                m.insert(nk, val);
                            }
                            report.add(n);
                        }
                    }
                    stack.extend(m.values_mut());
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use serde_json::json;

    const CANARY: &str = "s3cr3t/CANARY+value?";

    fn r() -> Redactor {
        Redactor::new([("API", CANARY)])
    }

    #[test]
    fn the_raw_value_and_each_encoding_are_replaced() {
        let red = r();
        let forms = [
            CANARY.to_owned(),
            hex::encode(CANARY),
            hex::encode_upper(CANARY),
            percent(CANARY.as_bytes(), true),
            percent(CANARY.as_bytes(), false),
            STANDARD.encode(CANARY),
            URL_SAFE.encode(CANARY),
        ];
        for f in forms {
            let text = format!("before {f} after");
            let (out, rep) = red.redact_str(&text).unwrap_or_else(|| panic!("{text}"));
            assert!(out.contains("[redacted:API]"), "{out}");
            assert!(
                out.starts_with("before ") && out.ends_with(" after"),
                "{out}"
            );
            assert!(rep.any());
        }
    }

    #[test]
    fn base64_inside_a_longer_text_is_found_at_every_alignment() {
        let red = r();
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            for suffix in ["", "x", "xy", "xyz"] {
                let plain = format!("{prefix}{CANARY}{suffix}");
                for enc in [STANDARD.encode(&plain), URL_SAFE.encode(&plain)] {
                    let (out, _) = red
                        .redact_str(&enc)
                        .unwrap_or_else(|| panic!("not found in {enc:?}"));
                    assert!(out.contains("[redacted:API]"));
                }
            }
        }
    }

    #[test]
    fn values_keys_and_nesting_are_redacted_and_counted() {
        let red = r();
        let mut v = json!({
            "ok": "nothing here",
            CANARY: [1, {"deep": format!("x{CANARY}y{CANARY}")}],
        });
        let rep = red.redact_value(&mut v);
        let s = v.to_string();
        assert!(!s.contains(CANARY), "{s}");
        assert_eq!(rep.count, 3);
        assert_eq!(rep.names.iter().collect::<Vec<_>>(), ["API"]);
        assert_eq!(v["ok"], "nothing here");
    }

    #[test]
    fn text_without_a_secret_is_left_alone() {
        assert!(r().redact_str("an ordinary answer, 200 OK").is_none());
        assert!(Redactor::new([("E", "")]).is_empty());
    }
}
