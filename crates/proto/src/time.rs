//! XEP-0082 timestamps in the one form Confab writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`) to and from
//! milliseconds since the Unix epoch, without a date library.

/// Milliseconds since the epoch for `text`, only when formatting them gives `text` back
/// exactly (so a typed timestamp always round-trips).
pub fn parse_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    let ms = ((days * 24 + num(11..13)?) * 60 + num(14..16)?) * 60_000
        + num(17..19)? * 1000
        + num(20..23)?;
    (format_ms(ms) == text).then_some(ms)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch (years 0..=9999 are exact).
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Days since 1970-01-01 (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_odd_forms_are_refused() {
        assert_eq!(parse_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_ms("2025-01-31T12:00:00.123Z"),
            Some(1_738_324_800_123)
        );
        assert_eq!(format_ms(1_738_324_800_123), "2025-01-31T12:00:00.123Z");
        assert_eq!(parse_ms("2000-02-29T23:59:59.999Z"), Some(951_868_799_999));
        for odd in [
            "2025-01-31T12:00:00Z",
            "2025-01-31T12:00:00.123+00:00",
            "2025-02-30T12:00:00.123Z",
            "2025-01-31T24:00:00.000Z",
            "2025-1-31T12:00:00.1234Z",
            "+025-01-31T12:00:00.123Z",
        ] {
            assert_eq!(parse_ms(odd), None, "{odd}");
        }
    }
}
