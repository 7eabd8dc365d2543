//! Values as Go reads them (`strconv.ParseBool`, `time.ParseDuration`): Reloader, a Go program, reads its
//! annotations so, and hashroll reads them the same way.

use std::time::Duration;

/// Go's `strconv.ParseBool`: `1`, `t`, `T`, `TRUE`, `true`, `True` and `0`, `f`, `F`, `FALSE`, `false`,
/// `False`; None for anything else.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses a duration as Go's `time.ParseDuration` does: an optional sign, then numbers with an
/// optional fraction, each followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is
/// zero. None when malformed, negative or beyond Go's range (about 292 years).
pub fn go_duration(s: &str) -> Option<Duration> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(digits(a)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        // Digits beyond the 18th are below a nanosecond even for hours.
        let (mut num, mut den) = (0u128, 1u128);
        for d in fraction.bytes().take(18) {
            num = num * 10 + u128::from(d - b'0');
            den *= 10;
        }
        nanos = nanos
            .checked_add(whole.checked_mul(scale)?)?
            .checked_add(num * scale / den)?;
        if nanos > i64::MAX as u128 {
            return None;
        }
        rest = after;
    }
    if negative && nanos > 0 {
        return None;
    }
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_booleans() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t:?}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f:?}");
        }
        for bad in ["", "yes", "TrUe", " true", "2"] {
            assert_eq!(parse_bool(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn go_durations() {
        let ms = |v: &str| go_duration(v).map(|d| d.as_millis());
        assert_eq!(ms("0"), Some(0));
        assert_eq!(ms("300ms"), Some(300));
        assert_eq!(ms("3s"), Some(3_000));
        assert_eq!(ms("+5m"), Some(300_000));
        assert_eq!(ms("1h30m"), Some(5_400_000));
        assert_eq!(ms("1.5h"), Some(5_400_000));
        assert_eq!(ms(".5s"), Some(500));
        assert_eq!(ms("1.s"), Some(1_000));
        assert_eq!(ms("2h45m30.5s"), Some(9_930_500));
        assert_eq!(go_duration("1500us"), go_duration("1.5ms"));
        assert_eq!(go_duration("2\u{b5}s"), Some(Duration::from_micros(2)));
        assert_eq!(go_duration("2\u{3bc}s"), Some(Duration::from_micros(2)));
        assert_eq!(go_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(ms("-0s"), Some(0));
        for bad in [
            "", "5", "s", ".s", "5 m", "5M", "1d", "-5m", "1h-5m", "3000000h",
        ] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }
}
