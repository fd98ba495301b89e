//! `--since` times: RFC 3339 (`2025-06-01T12:00:00Z`, with a fraction or
//! an offset), unix milliseconds (`1748779200000`), or a duration ago
//! (`90s`, `30m`, `1h`, `7d`).

/// The forms [`parse_since`] accepts, for error messages and help texts.
pub const SINCE_FORMS: &str = "an RFC 3339 time (2025-06-01T12:00:00Z, 2025-06-01T14:00:00.5+02:00), unix milliseconds (1748779200000), or a duration ago: a whole number with a unit s, m, h or d (90s, 30m, 1h, 7d)";

/// The unix millisecond `text` names, with `now_ms` the time now (for a
/// duration ago). A time before 1970 is refused; a duration longer than
/// the time since 1970 means 0.
///
/// ```
/// use mxp_runtime::cli::since::parse_since;
/// assert_eq!(parse_since("1700000000000", 0), Ok(1_700_000_000_000));
/// assert_eq!(parse_since("1h", 10_000_000), Ok(10_000_000 - 3_600_000));
/// assert_eq!(parse_since("1970-01-01T00:00:01Z", 0), Ok(1000));
/// assert!(parse_since("yesterday", 0).is_err());
/// ```
///
/// # Errors
/// A message naming the text and the accepted forms.
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, String> {
    let t = text.trim();
    let bad = |why: &str| format!("{text:?} is not a time ({why}): expected {SINCE_FORMS}");
    if t.is_empty() {
        return Err(bad("empty"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map_err(|_| bad("the number is too large"));
    }
    if t.contains('-') && t.contains(':') {
        return rfc3339_ms(t).map_err(bad);
    }
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| bad("a duration is a whole number and a unit"))?;
    let per: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad("unknown unit")),
    };
    let ago = n
        .checked_mul(per)
        .ok_or_else(|| bad("the duration is too large"))?;
    Ok(now_ms.saturating_sub(ago))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (a `t`, `_` or space for
/// the `T`; `z` for `Z`) as unix milliseconds.
fn rfc3339_ms(t: &str) -> Result<u64, &'static str> {
    let b = t.as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, &'static str> {
        let s = t.get(from..from + len).ok_or("too short")?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err("a date or time field is not a number");
        }
        s.parse::<i64>()
            .map_err(|_| "a date or time field is not a number")
    };
    let sep = |i: usize, ok: &[u8]| b.get(i).is_some_and(|c| ok.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt _") && sep(13, b":") && sep(16, b":")) {
        return Err("RFC 3339 is YYYY-MM-DDTHH:MM:SS and a zone");
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day");
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let digits = b
            .get(i + 1..)
            .unwrap_or_default()
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err("a fraction needs digits");
        }
        // Milliseconds: the first three digits, the rest cut.
        let frac = t.get(i + 1..i + 1 + digits.min(3)).unwrap_or("0");
        millis =
            frac.parse::<i64>().map_err(|_| "bad fraction")? * 10i64.pow(3 - digits.min(3) as u32);
        i += 1 + digits;
    }
    let offset_min = match t.get(i..) {
        Some("Z" | "z") => 0,
        Some(zone) if zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-')) => {
            if zone.as_bytes().get(3) != Some(&b':') {
                return Err("an offset is ±HH:MM");
            }
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return Err("no such offset");
            }
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return Err("the time needs a zone: Z or ±HH:MM"),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    let ms = secs * 1000 + millis;
    u64::try_from(ms).map_err(|_| "before 1970")
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_bad_ones_say_why() {
        let now = 1_750_000_000_000;
        assert_eq!(
            parse_since("2025-06-01T12:00:00Z", now),
            Ok(1_748_779_200_000)
        );
        assert_eq!(
            parse_since("2025-06-01T14:00:00+02:00", now),
            Ok(1_748_779_200_000)
        );
        assert_eq!(
            parse_since("2025-06-01 11:30:00.250-00:30", now),
            Ok(1_748_779_200_250)
        );
        assert_eq!(
            parse_since("2024-02-29T00:00:00.123456z", now),
            Ok(1_709_164_800_123)
        );
        assert_eq!(
            parse_since("2000-03-01T00:00:00Z", now),
            Ok(951_868_800_000)
        );
        assert_eq!(parse_since("1748779200000", now), Ok(1_748_779_200_000));
        assert_eq!(parse_since("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since("30m", now), Ok(now - 1_800_000));
        assert_eq!(parse_since("7d", now), Ok(now - 604_800_000));
        assert_eq!(parse_since("100000d", 5), Ok(0));
        for bad in [
            "",
            "yesterday",
            "1.5h",
            "3w",
            "2025-02-29T00:00:00Z",
            "2025-06-01T24:00:00Z",
            "2025-06-01T12:00:00",
            "2025-06-01T12:00:00+0200",
            "1969-12-31T23:59:59Z",
            "99999999999999999999",
            "99999999999999999999d",
        ] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains("expected an RFC 3339 time"), "{bad}: {e}");
        }
    }
}
