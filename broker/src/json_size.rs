//! The exact size of a JSON value as `serde_json` writes it, without
//! writing it: what the broker bounds an output by when nothing needs the
//! bytes themselves (a read's output is not recorded in the ledger).

use serde_json::Value;

/// `serde_json::to_vec(v).len()`, computed. Walks `v` with an explicit
/// stack (a deep value cannot overflow ours).
pub(crate) fn json_size(v: &Value) -> usize {
    let mut total = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(match v {
            Value::Null => 4,
            Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(n) => number_len(n),
            Value::String(s) => string_len(s),
            Value::Array(a) => {
                stack.extend(a.iter());
                // Brackets and the commas between elements.
                2 + a.len().saturating_sub(1)
            }
            Value::Object(m) => {
                stack.extend(m.values());
                // Braces, a colon per entry, commas between, and the keys.
                let keys: usize = m.keys().map(|k| string_len(k)).sum();
                2 + m.len() + m.len().saturating_sub(1) + keys
            }
        });
    }
    total
}

/// An upper bound of [`json_size`] that reads lengths only, never string
/// bytes: a string takes at most six bytes per byte (`\u00XX`) plus its
/// quotes, a number at most 24. When this is within a limit, so is the
/// exact size, and nothing needed to be scanned.
pub(crate) fn json_size_bound(v: &Value) -> usize {
    let string = |s: &str| s.len().saturating_mul(6).saturating_add(2);
    let mut total = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(match v {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 24,
            Value::String(s) => string(s),
            Value::Array(a) => {
                stack.extend(a.iter());
                2 + a.len()
            }
            Value::Object(m) => {
                stack.extend(m.values());
                let keys = m.keys().fold(0usize, |t, k| t.saturating_add(string(k)));
                (2 + 2 * m.len()).saturating_add(keys)
            }
        });
    }
    total
}

fn number_len(n: &serde_json::Number) -> usize {
    if let Some(u) = n.as_u64() {
        digits(u)
    } else if let Some(i) = n.as_i64() {
        1 + digits(i.unsigned_abs())
    } else {
        // Floats are rare in outputs; let serde_json format this one.
        serde_json::to_vec(n).map_or(0, |b| b.len())
    }
}

fn digits(mut u: u64) -> usize {
    let mut d = 1;
    while u >= 10 {
        u /= 10;
        d += 1;
    }
    d
}

/// A string with its quotes and escapes: `"` and `\` and the short control
/// escapes (`\b \t \n \f \r`) take two bytes, other control characters six
/// (`\u00XX`); everything else is written as it is.
fn string_len(s: &str) -> usize {
    let extra: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 1,
            0x00..=0x1f => 5,
            _ => 0,
        })
        .sum();
    2 + s.len() + extra
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same(v: &Value) {
        let exact = serde_json::to_vec(v).unwrap().len();
        assert_eq!(json_size(v), exact, "{v}");
        assert!(json_size_bound(v) >= exact, "{v}");
    }

    #[test]
    fn sizes_match_what_serde_json_writes() {
        let every_byte: String = (0u8..=127).map(char::from).collect();
        for v in [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(9),
            json!(10),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(-1),
            json!(1.5),
            json!(-0.000_012_5),
            json!(1e300),
            json!(""),
            json!("héllo \u{1F600} \"q\" \\ \n\t\r\u{8}\u{c}\u{0}\u{1f}\u{7f}"),
            json!(every_byte),
            json!([]),
            json!({}),
            json!([1, [2, [3, []]], {"a": {"b\n": [null, "x"]}}]),
            json!({"bytes": 4096, "content": "a".repeat(4096), "k\"ey": false}),
        ] {
            same(&v);
        }
    }

    #[test]
    fn generated_values_match_too() {
        // A deterministic spread of shapes: nesting, keys with escapes,
        // numbers of every length.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let mut v = json!([]);
            for _ in 0..(next() % 12) {
                let r = next();
                let leaf = match r % 5 {
                    0 => json!(r >> (r % 64)),
                    1 => json!(-((r >> 3) as i64 % 100_000)),
                    2 => json!(
                        char::from((r % 128) as u8)
                            .to_string()
                            .repeat((r % 7) as usize)
                    ),
                    3 => json!({ format!("k{}\u{1}", r % 9): [r % 3 == 0] }),
                    _ => json!((r % 1000) as f64 / 7.0),
                };
                v = json!([v, leaf]);
            }
            same(&v);
        }
    }
}
