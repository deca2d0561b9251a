//! Identifiers and timestamps: YT-shaped object ids (`a6e04b98-bf982394-103e8-55754a49`) and
//! ISO-8601 times with microseconds (`2026-08-06T09:28:16.796136Z`), plus a clock whose readings
//! are strictly increasing so that operation start times are unique.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The cell tag part of operation ids (as in the captured fixtures).
const OPERATION_TAG: u32 = 0x103e8;
/// The cell tag part of job ids.
const JOB_TAG: u32 = 0x10384;

static ID_COUNTER: AtomicU32 = AtomicU32::new(1);

fn make_id(tag: u32) -> String {
    let counter = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let a: u32 = rand::random();
    let d: u32 = rand::random();
    // The counter keeps ids unique within a process even when random parts collide.
    format!(
        "{a:x}-{:x}-{tag:x}-{d:x}",
        counter.wrapping_mul(0x9e37_79b9) ^ a
    )
}

/// A new operation id: four lowercase hex groups separated by `-`.
pub fn operation_id() -> String {
    make_id(OPERATION_TAG)
}

/// A new job id, shaped like an operation id.
pub fn job_id() -> String {
    make_id(JOB_TAG)
}

/// A new Cypress node id.
pub fn node_id() -> String {
    make_id(0x1f5)
}

/// A new transaction id (object type 1, as master transactions have).
pub fn transaction_id() -> String {
    make_id(0x1)
}

/// A new lock id (object type 0x12c).
pub fn lock_id() -> String {
    make_id(0x12c)
}

/// The next Cypress revision: strictly increasing across the whole tree, as the master's
/// mutation counter is.
pub fn next_revision() -> u64 {
    static REVISION: AtomicU64 = AtomicU64::new(1);
    REVISION.fetch_add(1, Ordering::Relaxed)
}

/// Whether `s` has the shape of a YT id: four non-empty groups of 1..=8 lowercase hex digits.
pub fn is_yt_id(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 4
        && groups.iter().all(|g| {
            !g.is_empty()
                && g.len() <= 8
                && g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A clock whose readings never repeat: each is at least one microsecond after the previous.
#[derive(Debug, Default)]
pub struct UniqueClock {
    last: AtomicU64,
}

impl UniqueClock {
    pub fn next(&self) -> u64 {
        let now = now_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = now.max(last + 1);
            match self.last.compare_exchange_weak(
                last,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(actual) => last = actual,
            }
        }
    }
}

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_time(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` (the `Z` is optional) into microseconds since the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim().strip_suffix('Z').unwrap_or(s.trim());
    let (date, time) = s.split_once('T').or_else(|| s.split_once(' '))?;
    let mut dp = date.splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut tp = hms.splitn(3, ':');
    let hh: u64 = tp.next()?.parse().ok()?;
    let mm: u64 = tp.next()?.parse().ok()?;
    let ss: u64 = tp.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut micros_frac = 0u64;
    for (i, b) in frac.bytes().take(6).enumerate() {
        micros_frac += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
    }
    let days = days_from_civil(y, m, d);
    if days < 0 {
        return None;
    }
    Some(((days as u64) * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000 + micros_frac)
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_yt_shape_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = operation_id();
            assert!(is_yt_id(&id), "{id}");
            assert!(seen.insert(id));
            assert!(is_yt_id(&job_id()));
        }
        assert!(is_yt_id("4f5a087b-aac92287-103e8-a74d2331"));
        assert!(!is_yt_id("4f5a087b-aac92287-103e8"));
        assert!(!is_yt_id("4f5a087b-aac92287-103e8-A74D2331"));
        assert!(!is_yt_id("4f5a087b-aac92287--a74d2331"));
    }

    #[test]
    fn time_round_trips() {
        let t = "2026-08-06T09:28:16.796136Z";
        let us = parse_time(t).unwrap();
        assert_eq!(format_time(us), t);
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            parse_time("2024-02-29T23:59:59Z").map(format_time).unwrap(),
            "2024-02-29T23:59:59.000000Z"
        );
        assert_eq!(parse_time("2026-08-06T09:28:16.7Z"), Some(us - 96_136));
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("2026-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn unique_clock_is_strictly_increasing() {
        let c = UniqueClock::default();
        let mut prev = 0;
        for _ in 0..1000 {
            let t = c.next();
            assert!(t > prev);
            prev = t;
        }
    }
}
