//! DECIMAL's binary form (`decimal2bin`, `strings/decimal.c`): the integer
//! and fractional digits in groups of nine, each group a big-endian integer
//! of 4 bytes (a leading or trailing partial group takes 1 to 4 bytes by its
//! digit count), every byte inverted for a negative value, then the top bit
//! of the first byte flipped.

use super::RowsError;

/// Bytes taken by a partial group of 0..=9 digits.
const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Bytes a DECIMAL(precision, scale) value takes.
pub fn decimal_len(precision: u8, scale: u8) -> usize {
    let intg = (precision - scale) as usize;
    let frac = scale as usize;
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (frac / 9) * 4 + DIG2BYTES[frac % 9]
}

fn push_group(out: &mut Vec<u8>, digits: &[u8]) {
    let v = digits
        .iter()
        .fold(0u32, |acc, d| acc * 10 + (d - b'0') as u32);
    let n = DIG2BYTES[digits.len()];
    out.extend_from_slice(&v.to_be_bytes()[4 - n..]);
}

/// Appends the value whose unscaled integer is `unscaled` (decimal text, an
/// optional `-` then digits, as Arrow's Decimal128/256 display it) as
/// DECIMAL(precision, scale).
pub fn push_decimal(
    out: &mut Vec<u8>,
    unscaled: &str,
    precision: u8,
    scale: u8,
) -> Result<(), RowsError> {
    let (neg, digits) = match unscaled.strip_prefix('-') {
        Some(d) => (true, d.as_bytes()),
        None => (false, unscaled.as_bytes()),
    };
    let (p, s) = (precision as usize, scale as usize);
    if s > p || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RowsError(format!(
            "`{unscaled}` is not a DECIMAL({precision},{scale}) value"
        )));
    }
    // Left-pad to precision digits: the integer part is then the first
    // precision-scale digits.
    let digits = match digits.iter().position(|d| *d != b'0') {
        Some(first) => &digits[first..],
        None => &[][..],
    };
    if digits.len() > p {
        return Err(RowsError(format!(
            "`{unscaled}` has more than {precision} digits for DECIMAL({precision},{scale})"
        )));
    }
    let mut all = vec![b'0'; p - digits.len()];
    all.extend_from_slice(digits);
    let (int, frac) = all.split_at(p - s);
    let start = out.len();
    let lead = int.len() % 9;
    push_group(out, &int[..lead]);
    for g in int[lead..].chunks(9) {
        push_group(out, g);
    }
    for g in frac.chunks(9) {
        push_group(out, g);
    }
    let bytes = &mut out[start..];
    if neg {
        bytes.iter_mut().for_each(|b| *b = !*b);
    }
    if let Some(first) = bytes.first_mut() {
        *first ^= 0x80;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str, p: u8, s: u8) -> String {
        let mut out = Vec::new();
        push_decimal(&mut out, v, p, s).unwrap();
        assert_eq!(out.len(), decimal_len(p, s));
        hex::encode(out)
    }

    #[test]
    fn known_vectors() {
        // The example of decimal.c: 1234567890.1234 as DECIMAL(14,4).
        assert_eq!(enc("12345678901234", 14, 4), "810dfb38d204d2");
        // Its negative: every byte inverted, then the sign bit.
        assert_eq!(enc("-12345678901234", 14, 4), "7ef204c72dfb2d");
        assert_eq!(enc("-99999", 5, 2), "7c189c");
        assert_eq!(enc("0", 5, 2), "800000");
        assert_eq!(enc("1", 18, 18), "8000000000000001");
    }

    #[test]
    fn wide_and_bad() {
        // 65 digits, 30 of them fractional.
        let nines = "9".repeat(65);
        assert_eq!(enc(&nines, 65, 30).len(), decimal_len(65, 30) * 2);
        assert_eq!(decimal_len(65, 30), 30);
        let mut out = Vec::new();
        assert!(push_decimal(&mut out, "123456", 5, 2).is_err());
        assert!(push_decimal(&mut out, "1.5", 5, 2).is_err());
    }
}
