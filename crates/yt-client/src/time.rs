//! The few timestamp operations paging needs: YTsaurus prints instants as ISO 8601 UTC with
//! microseconds (`2026-08-06T09:28:16.796136Z`); [`Instant`] parses that, shifts it by
//! microseconds and prints it back, without a date-time dependency.

use std::fmt;

/// An instant in microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub i64);

impl Instant {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (fraction of any length up to 9 digits; only the
    /// first 6 count). Returns `None` for anything else.
    pub fn parse(text: &str) -> Option<Instant> {
        let text = text.trim();
        let text = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
        let (date, time) = text.split_once(['T', 't', ' '])?;
        let mut date_parts = date.splitn(3, '-');
        let year: i64 = parse_digits(date_parts.next()?, 4)?;
        let month: i64 = parse_digits(date_parts.next()?, 2)?;
        let day: i64 = parse_digits(date_parts.next()?, 2)?;
        let (clock, fraction) = match time.split_once('.') {
            Some((clock, fraction)) => (clock, Some(fraction)),
            None => (time, None),
        };
        let mut clock_parts = clock.splitn(3, ':');
        let hour: i64 = parse_digits(clock_parts.next()?, 2)?;
        let minute: i64 = parse_digits(clock_parts.next()?, 2)?;
        let second: i64 = parse_digits(clock_parts.next()?, 2)?;
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let mut micros: i64 = 0;
        if let Some(fraction) = fraction {
            if fraction.is_empty()
                || fraction.len() > 9
                || !fraction.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            for (i, b) in fraction.bytes().take(6).enumerate() {
                micros += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
            }
        }
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
        Some(Instant(seconds * 1_000_000 + micros))
    }

    /// This instant shifted by `delta` microseconds.
    pub fn add_micros(self, delta: i64) -> Instant {
        Instant(self.0.saturating_add(delta))
    }
}

impl fmt::Display for Instant {
    /// Prints `YYYY-MM-DDTHH:MM:SS.ffffffZ`, the form YTsaurus prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.rem_euclid(1_000_000);
        let seconds = self.0.div_euclid(1_000_000);
        let days = seconds.div_euclid(86_400);
        let in_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            in_day / 3_600,
            (in_day / 60) % 60,
            in_day % 60
        )
    }
}

fn parse_digits(text: &str, len: usize) -> Option<i64> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian `(year, month, day)` of a count of days since 1970-01-01
/// (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_shifts() {
        let t = Instant::parse("2026-08-06T09:28:16.796136Z").unwrap();
        assert_eq!(t.to_string(), "2026-08-06T09:28:16.796136Z");
        assert_eq!(
            Instant::parse("1970-01-01T00:00:00Z").unwrap(),
            Instant(0),
            "epoch"
        );
        let midnight = Instant::parse("2025-01-01T00:00:00.000000Z").unwrap();
        assert_eq!(
            midnight.add_micros(-1).to_string(),
            "2024-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            Instant::parse("2024-02-29T12:00:00.5Z")
                .unwrap()
                .to_string(),
            "2024-02-29T12:00:00.500000Z"
        );
        assert!(
            Instant::parse("2026-08-06T09:28:16.7961361Z").unwrap()
                > Instant::parse("2026-08-06T09:28:16.796135Z").unwrap()
        );
        for bad in [
            "",
            "2026-08-06",
            "2026-08-06T09:28:16",
            "2026-13-06T09:28:16Z",
            "2026-08-06T09:28:16.Z",
            "x026-08-06T09:28:16Z",
        ] {
            assert!(Instant::parse(bad).is_none(), "{bad}");
        }
    }
}
