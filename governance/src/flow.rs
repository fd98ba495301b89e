//! The flow rule, pure: which labelled data reaches a tool's arguments.
//!
//! Data that came from a *source* carries a label through a plan run:
//! the output of a file read (`fs.read`), anything derived from an opaque
//! computation that saw labelled data (a skill), and a secret, named by
//! reference (`{"$secret": "NAME"}`). Before a *sink* (a tool with an
//! external effect: `http.fetch`, `shell.exec`) acts, the gate asks which
//! labels its arguments carry ([`flows_into`]) and denies the step unless
//! policy allows each flow (`Mxp::Action::"flow"` on `Mxp::Source`).
//!
//! How a label is found in a sink's arguments ([`FlowMode`]):
//!
//! * [`FlowMode::Content`] (the default): a labelled value reaches the
//!   arguments when any of its text does, verbatim or percent-encoded: a
//!   shared run of at least [`MIN_MATCH`] bytes between a labelled string
//!   and any string or object key of the arguments (or that string
//!   percent-decoded), or a whole labelled string of [`MIN_SHORT`] bytes or
//!   more. Data a planner transforms otherwise (re-encoded, summarised) is
//!   not followed; use `Run` for planners that may.
//! * [`FlowMode::Run`]: every label seen so far in the run reaches every
//!   later sink, whatever its arguments (sound for any planner, and strict).
//!
//! A secret reference in a sink's arguments is a flow in either mode.
//!
//! Everything here is synchronous and allocation-bounded by its inputs:
//! the arguments (bounded by the policy limits) and the labelled outputs
//! (bounded by each tool's output limit).

use std::fmt;

use serde_json::Value;

/// The shortest shared run of bytes that counts as a labelled value
/// reaching an argument.
pub const MIN_MATCH: usize = 16;
/// The shortest labelled string found as a whole (shorter ones, such as
/// `"ok"`, would match almost anything).
pub const MIN_SHORT: usize = 6;
/// The key that makes a JSON object a secret reference.
pub const SECRET_REF_KEY: &str = "$secret";
/// The deepest nesting walked; deeper values are not searched (policy
/// limits arguments to 8 levels, tools' outputs are walked to this depth).
pub const MAX_DEPTH: usize = 64;

/// What labelled data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SourceKind {
    /// A file read (`fs.read`); the name is the path read.
    FileRead,
    /// A secret, by reference; the name is the secret's name.
    Secret,
    /// The output of a tool that saw labelled data and whose working is
    /// opaque (a skill); the name is the tool.
    Derived,
}

impl SourceKind {
    /// The kind's name, as policy reads it (`resource.kind`).
    pub const fn name(self) -> &'static str {
        match self {
            SourceKind::FileRead => "fs.read",
            SourceKind::Secret => "secret",
            SourceKind::Derived => "derived",
        }
    }
}

/// Where a label came from: the source step of a plan run, or a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowSource {
    /// What kind of source.
    pub kind: SourceKind,
    /// The path read, the secret's name, or the deriving tool.
    pub name: String,
    /// The plan step (0-based) whose output carries the label; `None` for
    /// a secret named in the sink's own arguments.
    pub step: Option<usize>,
}

impl FlowSource {
    /// A file read by plan step `step`.
    pub fn file(path: &str, step: usize) -> FlowSource {
        FlowSource {
            kind: SourceKind::FileRead,
            name: bounded(path),
            step: Some(step),
        }
    }

    /// A secret named in the arguments.
    pub fn secret(name: &str) -> FlowSource {
        FlowSource {
            kind: SourceKind::Secret,
            name: bounded(name),
            step: None,
        }
    }

    /// The Cedar entity id of the source (`Mxp::Source::"<id>"`):
    /// `fs.read:<path>`, `secret:<name>` or `derived:<tool>`.
    pub fn entity_id(&self) -> String {
        format!("{}:{}", self.kind.name(), self.name)
    }

    /// The same source, as seen from `step` (a label carried on).
    #[must_use]
    pub fn at_step(mut self, step: usize) -> FlowSource {
        self.step = Some(step);
        self
    }
}

impl fmt::Display for FlowSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.step) {
            (SourceKind::Secret, None) => write!(f, "secret {:?}", self.name),
            (SourceKind::Secret, Some(s)) => {
                write!(f, "secret {:?} (through step {s})", self.name)
            }
            (SourceKind::FileRead, Some(s)) => write!(f, "step {s} (fs.read {:?})", self.name),
            (SourceKind::Derived, Some(s)) => write!(f, "step {s} ({})", self.name),
            (k, None) => write!(f, "{} {:?}", k.name(), self.name),
        }
    }
}

/// Names longer than this are cut (a label names, it does not carry).
const MAX_NAME: usize = 256;

fn bounded(s: &str) -> String {
    if s.len() <= MAX_NAME {
        return s.to_owned();
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

/// How labels are followed through a run (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FlowMode {
    /// By content: a label reaches a sink whose arguments hold its text.
    #[default]
    Content,
    /// By run: every label seen so far reaches every later sink.
    Run,
}

impl FlowMode {
    /// The setting's text: `content` or `run`.
    pub const fn name(self) -> &'static str {
        match self {
            FlowMode::Content => "content",
            FlowMode::Run => "run",
        }
    }
}

impl std::str::FromStr for FlowMode {
    type Err = String;
    fn from_str(s: &str) -> Result<FlowMode, String> {
        match s {
            "content" => Ok(FlowMode::Content),
            "run" => Ok(FlowMode::Run),
            other => Err(format!(
                "unknown flow mode {other:?}: expected \"content\" or \"run\""
            )),
        }
    }
}

/// The secrets `args` names by reference (`{"$secret": "NAME"}`), in
/// order of first appearance, each once. A malformed reference (not a
/// one-key object with a string) is named `"<malformed>"`: it is still
/// secret data, and the broker refuses it anyway.
pub fn secret_refs(args: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stack = vec![(args, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            continue;
        }
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get(SECRET_REF_KEY) {
                    let name = match r {
                        Value::String(n) if m.len() == 1 => bounded(n),
                        _ => "<malformed>".to_owned(),
                    };
                    if !out.contains(&name) {
                        out.push(name);
                    }
                    continue;
                }
                // Reverse, so the walk meets values in document order.
                stack.extend(m.values().rev().map(|x| (x, depth + 1)));
            }
            Value::Array(a) => stack.extend(a.iter().rev().map(|x| (x, depth + 1))),
            _ => {}
        }
    }
    out
}

/// One labelled output of a run: the sources it carries and the value.
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    /// Where it came from (one or more sources).
    pub sources: &'a [FlowSource],
    /// The output.
    pub output: &'a Value,
}

/// The sources whose data reaches `args`: every secret it references, and
/// each labelled output whose text it holds (or, in [`FlowMode::Run`],
/// every labelled output), each source once, in a stable order.
pub fn flows_into(args: &Value, labelled: &[Labelled<'_>], mode: FlowMode) -> Vec<FlowSource> {
    let mut found: Vec<FlowSource> = secret_refs(args)
        .iter()
        .map(|n| FlowSource::secret(n))
        .collect();
    let mut add = |sources: &[FlowSource]| {
        for s in sources {
            if !found.contains(s) {
                found.push(s.clone());
            }
        }
    };
    match mode {
        FlowMode::Run => {
            for l in labelled {
                add(l.sources);
            }
        }
        FlowMode::Content => {
            if labelled.is_empty() {
                return found;
            }
            let haystack = Haystack::of(args);
            for l in labelled {
                if haystack.holds_any(l.output) {
                    add(l.sources);
                }
            }
        }
    }
    found
}

/// The strings of a sink's arguments, as they may carry labelled text:
/// each string and object key, and its percent-decoded forms, with an
/// index of every [`MIN_MATCH`]-byte window.
struct Haystack {
    texts: Vec<Vec<u8>>,
    /// (hash of the window, text index, offset), sorted.
    windows: Vec<(u64, u32, u32)>,
}

impl Haystack {
    fn of(args: &Value) -> Haystack {
        let mut texts: Vec<Vec<u8>> = Vec::new();
        let mut push = |s: &str| {
            let raw = s.as_bytes();
            if raw.contains(&b'%') || raw.contains(&b'+') {
                let decoded = percent_decode(raw, false);
                if decoded != raw {
                    texts.push(decoded);
                }
                let plus = percent_decode(raw, true);
                if plus != raw {
                    texts.push(plus);
                }
            }
            texts.push(raw.to_vec());
        };
        let mut stack = vec![(args, 0usize)];
        while let Some((v, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                continue;
            }
            match v {
                Value::String(s) => push(s),
                Value::Object(m) => {
                    for (k, x) in m {
                        push(k);
                        stack.push((x, depth + 1));
                    }
                }
                Value::Array(a) => stack.extend(a.iter().map(|x| (x, depth + 1))),
                _ => {}
            }
        }
        let mut windows = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            for_each_window(t, |off, h| {
                windows.push((h, i, u32::try_from(off).unwrap_or(u32::MAX)));
            });
        }
        windows.sort_unstable();
        Haystack { texts, windows }
    }

    /// Whether any string of `output` reaches these texts.
    fn holds_any(&self, output: &Value) -> bool {
        let mut stack = vec![(output, 0usize)];
        while let Some((v, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                continue;
            }
            match v {
                Value::String(s) if self.holds(s.as_bytes()) => return true,
                Value::Object(m) => stack.extend(m.values().map(|x| (x, depth + 1))),
                Value::Array(a) => stack.extend(a.iter().map(|x| (x, depth + 1))),
                _ => {}
            }
        }
        false
    }

    /// Whether `needle` (a labelled string) reaches these texts.
    fn holds(&self, needle: &[u8]) -> bool {
        if needle.len() < MIN_SHORT {
            return false;
        }
        if needle.len() < MIN_MATCH {
            return self.texts.iter().any(|t| contains(t, needle));
        }
        let mut hit = false;
        for_each_window(needle, |off, h| {
            if hit {
                return;
            }
            let Some(window) = needle.get(off..off + MIN_MATCH) else {
                return;
            };
            let start = self.windows.partition_point(|w| w.0 < h);
            for &(wh, ti, toff) in self.windows.get(start..).unwrap_or_default() {
                if wh != h {
                    break;
                }
                let toff = toff as usize;
                let same = self
                    .texts
                    .get(ti as usize)
                    .and_then(|t| t.get(toff..toff + MIN_MATCH))
                    .is_some_and(|w| w == window);
                if same {
                    hit = true;
                    return;
                }
            }
        });
        hit
    }
}

/// Calls `f(offset, hash)` for every [`MIN_MATCH`]-byte window of `bytes`
/// (a polynomial rolling hash; equal windows have equal hashes, and every
/// hash hit is confirmed byte for byte).
fn for_each_window(bytes: &[u8], mut f: impl FnMut(usize, u64)) {
    const BASE: u64 = 0x0100_0000_01b3;
    if bytes.len() < MIN_MATCH {
        return;
    }
    // BASE^(MIN_MATCH-1), to take the outgoing byte off.
    let mut top: u64 = 1;
    for _ in 1..MIN_MATCH {
        top = top.wrapping_mul(BASE);
    }
    let mut h: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if i >= MIN_MATCH {
            let out = bytes.get(i - MIN_MATCH).copied().unwrap_or(0);
            h = h.wrapping_sub((u64::from(out) + 1).wrapping_mul(top));
        }
        h = h.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1);
        if i + 1 >= MIN_MATCH {
            f(i + 1 - MIN_MATCH, h);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `%XX` decoded (invalid escapes kept as they are); with `plus`, `+` is
/// a space too (form encoding).
fn percent_decode(s: &[u8], plus: bool) -> Vec<u8> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(if plus && b == b'+' { b' ' } else { b });
        i += 1;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(step: usize) -> Vec<FlowSource> {
        vec![FlowSource::file("notes.txt", step)]
    }

    const CONTENT: &str = "the quarterly numbers are 4,211,009 and nobody may know them";

    #[test]
    fn a_fragment_of_a_read_file_in_a_url_is_a_flow() {
        let out = json!({"bytes": CONTENT.len(), "content": CONTENT});
        let src = file(0);
        let labelled = [Labelled {
            sources: &src,
            output: &out,
        }];
        for url in [
            format!("https://x.example/?q={CONTENT}"),
            "https://x.example/?q=numbers are 4,211,009".to_owned(),
            "https://x.example/?q=numbers%20are%204%2C211%2C009".to_owned(),
            "https://x.example/?q=numbers+are+4%2c211%2c009".to_owned(),
        ] {
            let found = flows_into(&json!({ "url": url }), &labelled, FlowMode::Content);
            assert_eq!(found, src, "{url}");
        }
        // In a header value, a body, a key.
        let found = flows_into(
            &json!({"url": "https://x.example/", "headers": {"x-data": "are 4,211,009 and nobody"}}),
            &labelled,
            FlowMode::Content,
        );
        assert_eq!(found, src);
        let found = flows_into(
            &json!({"url": "https://x.example/", "body": {"nobody may know them!": 1}}),
            &labelled,
            FlowMode::Content,
        );
        assert_eq!(found, src);
    }

    #[test]
    fn unrelated_arguments_carry_no_label() {
        let out = json!({"content": CONTENT});
        let src = file(0);
        let labelled = [Labelled {
            sources: &src,
            output: &out,
        }];
        for args in [
            json!({"url": "https://x.example/weather?city=Paris"}),
            // Shorter shared runs than MIN_MATCH do not count.
            json!({"url": "https://x.example/?q=the quarterly"}),
            json!({"url": "https://x.example/", "count": 4211009}),
        ] {
            assert!(
                flows_into(&args, &labelled, FlowMode::Content).is_empty(),
                "{args}"
            );
        }
    }

    #[test]
    fn short_values_count_whole_and_tiny_ones_never() {
        let out = json!({"content": "hunter2!"});
        let tiny = json!({"content": "ok"});
        let (a, b) = (file(0), file(1));
        let labelled = [
            Labelled {
                sources: &a,
                output: &out,
            },
            Labelled {
                sources: &b,
                output: &tiny,
            },
        ];
        let found = flows_into(
            &json!({"url": "https://x.example/login?pw=hunter2!"}),
            &labelled,
            FlowMode::Content,
        );
        assert_eq!(found, a);
        assert!(
            flows_into(
                &json!({"url": "https://x.example/ok"}),
                &labelled,
                FlowMode::Content
            )
            .is_empty()
        );
    }

    #[test]
    fn secrets_by_reference_are_flows_in_every_mode() {
        let args = json!({"url": "https://api.example/", "headers": {"authorization": {"$secret": "API_KEY"}}, "x": [{"$secret": "B"}, {"$secret": "API_KEY"}]});
        for mode in [FlowMode::Content, FlowMode::Run] {
            let found = flows_into(&args, &[], mode);
            assert_eq!(
                found,
                vec![FlowSource::secret("API_KEY"), FlowSource::secret("B")]
            );
        }
        assert_eq!(
            secret_refs(&json!({"a": {"$secret": 3}})),
            vec!["<malformed>".to_owned()]
        );
        assert_eq!(
            secret_refs(&json!({"a": {"$secret": "X", "y": 1}})),
            vec!["<malformed>".to_owned()]
        );
    }

    #[test]
    fn run_mode_carries_every_label_to_every_sink() {
        let out = json!({"content": CONTENT});
        let src = file(2);
        let labelled = [Labelled {
            sources: &src,
            output: &out,
        }];
        let found = flows_into(
            &json!({"url": "https://x.example/"}),
            &labelled,
            FlowMode::Run,
        );
        assert_eq!(found, src);
    }

    #[test]
    fn sources_name_their_step() {
        assert_eq!(
            FlowSource::file("a/b.txt", 3).to_string(),
            "step 3 (fs.read \"a/b.txt\")"
        );
        assert_eq!(FlowSource::secret("K").to_string(), "secret \"K\"");
        assert_eq!(FlowSource::file("a", 0).entity_id(), "fs.read:a");
        assert_eq!(FlowSource::secret("K").entity_id(), "secret:K");
        assert_eq!("run".parse::<FlowMode>(), Ok(FlowMode::Run));
        assert!("strict".parse::<FlowMode>().is_err());
    }

    #[test]
    fn hash_windows_agree_with_direct_comparison() {
        // Every window of a text is found in the same text, and a run that
        // differs in one byte is not.
        let text: String = (0..300)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        let out = json!({"content": text});
        let src = file(0);
        let labelled = [Labelled {
            sources: &src,
            output: &out,
        }];
        for start in 0..(text.len() - MIN_MATCH) {
            let frag = &text[start..start + MIN_MATCH];
            assert_eq!(
                flows_into(&json!({ "u": frag }), &labelled, FlowMode::Content).len(),
                1,
                "{start}"
            );
        }
        let mut changed = text.as_bytes()[10..10 + MIN_MATCH].to_vec();
        changed[7] = b'Z';
        let changed = String::from_utf8(changed).unwrap();
        assert!(flows_into(&json!({ "u": changed }), &labelled, FlowMode::Content).is_empty());
    }

    #[test]
    fn deep_and_hostile_arguments_stay_bounded() {
        let mut v = json!("x");
        for _ in 0..1_000 {
            v = json!([v]);
        }
        let out = json!({"content": CONTENT});
        let src = file(0);
        let labelled = [Labelled {
            sources: &src,
            output: &out,
        }];
        assert!(flows_into(&v, &labelled, FlowMode::Content).is_empty());
        assert!(percent_decode(b"%", false) == b"%");
        assert!(percent_decode(b"%zz%4", false) == b"%zz%4");
        assert_eq!(percent_decode(b"a%41+b", true), b"aA b");
    }
}
