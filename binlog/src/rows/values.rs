//! Packing of integers, floats, BIT, strings, ENUM/SET and the fixed binary
//! types INET4, INET6 and UUID (`Field_*::pack`), which pack like BINARY:
//! a 1-byte length, then their bytes without trailing zeros. DECIMAL and the temporal
//! types have files of their own.

use super::RowsError;

/// Appends the low `bytes` bytes of `v`, little-endian (integers, ENUM, SET).
pub fn push_int(out: &mut Vec<u8>, v: u64, bytes: u8) {
    out.extend_from_slice(&v.to_le_bytes()[..bytes as usize]);
}

/// Appends BIT(`width`): big-endian in `(width+7)/8` bytes.
pub fn push_bit(out: &mut Vec<u8>, v: u64, width: u8) {
    let n = (width as usize).div_ceil(8);
    out.extend_from_slice(&v.to_be_bytes()[8 - n..]);
}

/// Appends a length prefix of `prefix` bytes and `data`, refusing data
/// the prefix cannot count.
pub fn push_counted(out: &mut Vec<u8>, data: &[u8], prefix: u8) -> Result<(), RowsError> {
    let n = data.len() as u64;
    if prefix < 8 && n >> (8 * prefix as u32) != 0 {
        return Err(RowsError(format!(
            "a value of {n} bytes does not fit a {prefix}-byte length"
        )));
    }
    out.extend_from_slice(&n.to_le_bytes()[..prefix as usize]);
    out.extend_from_slice(data);
    Ok(())
}

/// Appends a CHAR/BINARY value: its bytes without trailing `pad` units.
pub fn push_fixed(
    out: &mut Vec<u8>,
    mut data: &[u8],
    prefix: u8,
    pad: &[u8],
) -> Result<(), RowsError> {
    while data.ends_with(pad) {
        data = &data[..data.len() - pad.len()];
    }
    push_counted(out, data, prefix)
}

/// INET4 text (`10.0.0.1`) to its 4 bytes.
pub fn inet4(text: &str) -> Result<[u8; 4], RowsError> {
    text.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets())
        .map_err(|_| RowsError(format!("`{text}` is not an INET4 address")))
}

/// INET6 text (`2001:db8::1`, `::ffff:1.2.3.4`) to its 16 bytes.
pub fn inet6(text: &str) -> Result<[u8; 16], RowsError> {
    text.parse::<std::net::Ipv6Addr>()
        .map(|a| a.octets())
        .map_err(|_| RowsError(format!("`{text}` is not an INET6 address")))
}

/// UUID text to its 16 bytes as written (the binlog carries this order:
/// checked against a 10.11 master, whose row images hold UUIDs of version 1
/// unswapped even though its records swap their segments).
pub fn uuid(text: &str) -> Result<[u8; 16], RowsError> {
    let bad = || RowsError(format!("`{text}` is not a UUID"));
    let hex: Vec<u8> = text.bytes().filter(|c| *c != b'-').collect();
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_counted() {
        let mut out = Vec::new();
        push_fixed(&mut out, b"ab\0\0", 1, b"\0").unwrap();
        push_fixed(&mut out, b"\0a\0 \0 ", 1, b"\0 ").unwrap();
        push_counted(&mut out, &[7; 3], 2).unwrap();
        assert_eq!(out, [2, b'a', b'b', 2, 0, b'a', 3, 0, 7, 7, 7]);
        assert!(push_counted(&mut out, &[0; 256], 1).is_err());
        let mut bits = Vec::new();
        push_bit(&mut bits, 0x100a, 13);
        push_bit(&mut bits, 1, 1);
        assert_eq!(bits, [0x10, 0x0a, 0x01]);
    }

    #[test]
    fn fixed_binary_types() {
        assert_eq!(
            hex::encode(uuid("123e4567-e89b-12d3-a456-426655440000").unwrap()),
            "123e4567e89b12d3a456426655440000"
        );
        assert!(uuid("123").is_err());
        assert_eq!(inet4("10.0.0.1").unwrap(), [10, 0, 0, 1]);
        assert_eq!(
            inet6("::ffff:1.2.3.4").unwrap()[10..],
            [0xff, 0xff, 1, 2, 3, 4]
        );
    }
}
