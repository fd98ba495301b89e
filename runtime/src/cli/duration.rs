//! Durations on the command line: `500ms`, `5s`, `2m`, or plain seconds (`5`).

use std::time::Duration;

/// The forms [`parse_duration`] accepts, for error messages and help texts.
pub const DURATION_FORMS: &str =
    "a whole number with a unit ms, s or m (500ms, 5s, 2m), or plain seconds (5)";

/// Parses a duration: a whole number followed by `ms`, `s` or `m`, or a
/// plain whole number of seconds. Zero is refused (a deadline of zero can
/// never be met).
///
/// ```
/// use std::time::Duration;
/// use mxp_runtime::cli::duration::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
/// assert!(parse_duration("1.5s").is_err());
/// ```
///
/// # Errors
/// A message naming the text and the accepted forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a duration: expected {DURATION_FORMS}"
        ));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: the number is too large"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        other => {
            return Err(format!(
                "{text:?} is not a duration: unknown unit {other:?}; expected {DURATION_FORMS}"
            ));
        }
    };
    let millis = n
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("{text:?} is not a duration: the number is too large"))?;
    if millis == 0 {
        return Err(format!("{text:?}: the duration must be greater than zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest unit
/// that keeps it exact: `500ms`, `5s`, `2m`.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis.is_multiple_of(60_000) && millis > 0 {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1_000) && millis > 0 {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_units_and_plain_seconds() {
        for (text, want) in [
            ("500ms", Duration::from_millis(500)),
            ("1ms", Duration::from_millis(1)),
            ("5s", Duration::from_secs(5)),
            ("2m", Duration::from_secs(120)),
            ("7", Duration::from_secs(7)),
            (" 3s ", Duration::from_secs(3)),
            ("0500ms", Duration::from_millis(500)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_everything_else_naming_the_text() {
        for (bad, why) in [
            ("", "expected"),
            ("s", "expected"),
            ("-5s", "expected"),
            ("+5s", "expected"),
            ("1.5s", "unknown unit \".5s\""),
            ("5x", "unknown unit \"x\""),
            ("5 s", "unknown unit \" s\""),
            ("5h", "unknown unit \"h\""),
            ("5S", "unknown unit \"S\""),
            ("0", "greater than zero"),
            ("0ms", "greater than zero"),
            ("99999999999999999999", "too large"),
            ("18446744073709551615m", "too large"),
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit_and_round_trips() {
        for (d, text) in [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }
}
