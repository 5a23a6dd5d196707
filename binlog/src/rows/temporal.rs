//! YEAR, DATE and the MySQL 5.6 temporal formats MariaDB 10.11 writes by
//! default (`mysql56_temporal_format`): TIME2, DATETIME2, TIMESTAMP2
//! (`sql/compat56.cc`). All are big-endian but DATE, and carry a fraction of
//! 1 byte for 1-2 digits, 2 bytes for 3-4, 3 bytes for 5-6.
//!
//! Values arrive as the snapshot stores them: days, microseconds or a zero
//! date's text (the raw sidecar); [`Civil`] is the calendar form between.

use super::RowsError;

/// A calendar date and time of day as MariaDB holds it (zero parts allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Civil {
    /// Year.
    pub year: u32,
    /// Month, 0 to 12.
    pub month: u32,
    /// Day, 0 to 31.
    pub day: u32,
    /// Hour.
    pub hour: u32,
    /// Minute.
    pub minute: u32,
    /// Second.
    pub second: u32,
    /// Microseconds.
    pub micros: u32,
}

/// The calendar date of a day count since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (u32, u32, u32) {
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y as u32, m as u32, d as u32)
}

impl Civil {
    /// From a day count since 1970-01-01.
    pub fn from_days(days: i64) -> Civil {
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            ..Civil::default()
        }
    }

    /// From microseconds since 1970-01-01 00:00:00.
    pub fn from_micros(us: i64) -> Civil {
        let days = us.div_euclid(86_400_000_000);
        let in_day = us.rem_euclid(86_400_000_000);
        let secs = in_day / 1_000_000;
        Civil {
            hour: (secs / 3600) as u32,
            minute: (secs / 60 % 60) as u32,
            second: (secs % 60) as u32,
            micros: (in_day % 1_000_000) as u32,
            ..Civil::from_days(days)
        }
    }

    /// From the raw sidecar's text: `YYYY-MM-DD[ HH:MM:SS[.ffffff]]`.
    pub fn parse(text: &str) -> Result<Civil, RowsError> {
        let bad = || RowsError(format!("`{text}` is not a date-time"));
        let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
        let (date, time) = match text.split_once(' ') {
            Some((d, t)) => (d, Some(t)),
            None => (text, None),
        };
        let mut d = date.splitn(3, '-');
        let mut c = Civil {
            year: num(d.next().ok_or_else(bad)?)?,
            month: num(d.next().ok_or_else(bad)?)?,
            day: num(d.next().ok_or_else(bad)?)?,
            ..Civil::default()
        };
        if let Some(t) = time {
            let (hms, frac) = match t.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (t, None),
            };
            let mut p = hms.splitn(3, ':');
            c.hour = num(p.next().ok_or_else(bad)?)?;
            c.minute = num(p.next().ok_or_else(bad)?)?;
            c.second = num(p.next().ok_or_else(bad)?)?;
            if let Some(f) = frac {
                if f.is_empty() || f.len() > 6 {
                    return Err(bad());
                }
                c.micros = num(f)? * 10u32.pow(6 - f.len() as u32);
            }
        }
        Ok(c)
    }
}

/// Appends the fraction `frac` (microseconds, possibly negative: TIME) in
/// the width `dec` digits take.
fn push_fraction(out: &mut Vec<u8>, frac: i64, dec: u8) {
    match dec {
        1 | 2 => out.push((frac / 10_000) as i8 as u8),
        3 | 4 => out.extend_from_slice(&((frac / 100) as i16).to_be_bytes()),
        5 | 6 => out.extend_from_slice(&(frac as i32).to_be_bytes()[1..]),
        _ => {}
    }
}

/// Appends YEAR: one byte, 0 for the year 0000, else year - 1900.
pub fn push_year(out: &mut Vec<u8>, year: u16) {
    out.push(if year == 0 { 0 } else { (year - 1900) as u8 });
}

/// Appends DATE: `day + month*32 + year*512`, 3 bytes little-endian.
pub fn push_date(out: &mut Vec<u8>, c: &Civil) {
    let v = c.day + c.month * 32 + c.year * 512;
    out.extend_from_slice(&v.to_le_bytes()[..3]);
}

/// Appends DATETIME2 with `dec` fractional digits.
pub fn push_datetime(out: &mut Vec<u8>, c: &Civil, dec: u8) {
    let ymd = (((c.year * 13 + c.month) as u64) << 5) | c.day as u64;
    let hms = ((c.hour as u64) << 12) | ((c.minute as u64) << 6) | c.second as u64;
    let int = ((ymd << 17) | hms) + 0x80_0000_0000;
    out.extend_from_slice(&int.to_be_bytes()[3..]);
    push_fraction(out, c.micros as i64, dec);
}

/// Appends TIMESTAMP2: seconds since the epoch (4 bytes), then the fraction.
pub fn push_timestamp(out: &mut Vec<u8>, secs: u32, micros: u32, dec: u8) {
    out.extend_from_slice(&secs.to_be_bytes());
    push_fraction(out, micros as i64, dec);
}

/// Appends TIME2 with `dec` fractional digits for a signed duration in
/// microseconds (`TIME_to_longlong_time_packed`, `my_time_packed_to_binary`).
pub fn push_time(out: &mut Vec<u8>, micros: i64, dec: u8) {
    let a = micros.unsigned_abs();
    let secs = a / 1_000_000;
    let hms = ((secs / 3600) << 12) | ((secs / 60 % 60) << 6) | (secs % 60);
    let packed = ((hms << 24) + a % 1_000_000) as i64;
    let nr = if micros < 0 { -packed } else { packed };
    match dec {
        5 | 6 => out.extend_from_slice(&(nr + 0x8000_0000_0000).to_be_bytes()[2..]),
        _ => {
            let int = (nr >> 24) + 0x80_0000;
            out.extend_from_slice(&(int as u32).to_be_bytes()[1..]);
            push_fraction(out, nr % (1 << 24), dec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        hex::encode(out)
    }

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let c = Civil::from_micros(-1);
        assert_eq!((c.year, c.second, c.micros), (1969, 59, 999_999));
        assert_eq!(
            Civil::parse("2024-00-15 10:11:12.5").unwrap(),
            Civil {
                year: 2024,
                month: 0,
                day: 15,
                hour: 10,
                minute: 11,
                second: 12,
                micros: 500_000
            }
        );
        assert!(Civil::parse("2024-x-01").is_err());
    }

    #[test]
    fn known_vectors() {
        // 2024-02-29: 29 + 2*32 + 2024*512.
        let d = Civil::parse("2024-02-29").unwrap();
        assert_eq!(hex_of(|o| push_date(o, &d)), "5d d0 0f".replace(' ', ""));
        // DATETIME2 of 0000-00-00 00:00:00 is the offset alone.
        let z = Civil::default();
        assert_eq!(hex_of(|o| push_datetime(o, &z, 0)), "8000000000");
        // 2017-10-25 14:33:56.123 at 3 digits: ymd 2017*13+10, hms.
        let c = Civil::parse("2017-10-25 14:33:56.123").unwrap();
        assert_eq!(hex_of(|o| push_datetime(o, &c, 3)), "999df2e87804ce");
        assert_eq!(
            hex_of(|o| push_timestamp(o, 1, 999_999, 6)),
            "000000010f423f"
        );
        // TIME2: 00:00:00 is 0x800000; -00:00:00.5 at one digit keeps the
        // C arithmetic (int part -1, fraction -50).
        assert_eq!(hex_of(|o| push_time(o, 0, 0)), "800000");
        assert_eq!(hex_of(|o| push_time(o, -500_000, 1)), "7fffffce");
        assert_eq!(hex_of(|o| push_time(o, -1, 6)), "7fffffffffff");
        // 838:59:59 and its negative.
        let max = (838 * 3600 + 59 * 60 + 59) * 1_000_000i64;
        assert_eq!(hex_of(|o| push_time(o, max, 0)), "b46efb");
        assert_eq!(hex_of(|o| push_time(o, -max, 0)), "4b9105");
        assert_eq!(hex_of(|o| push_year(o, 1901)), "01");
    }
}
