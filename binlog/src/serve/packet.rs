//! MySQL protocol framing for the server side, with mysql_common's
//! `PacketCodec`: packets of up to 16 MiB - 1 with a sequence id, larger
//! payloads split. What a client sends is bounded before it is read: the
//! codec refuses a header whose length (with the continuation packets
//! before it) exceeds the cap, so a header claiming 16 MiB commits nothing
//! and the input buffer never holds more than the cap and one read. The
//! few packets a replica's IO thread needs are built by hand (OK, EOF,
//! ERR, text result sets; it does not negotiate `CLIENT_DEPRECATE_EOF`).

use bytes::BytesMut;
use mysql_common::proto::codec::error::PacketCodecError;
use mysql_common::proto::codec::PacketCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::{Link, ServeTls};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4 << 10;
/// Written bytes are sent once this many are buffered.
const WRITE_BUFFER: usize = 64 << 10;

/// One client connection's packets.
pub struct Packets {
    /// Plain TCP, or TLS once the client asked for it (`tls.rs`).
    stream: Link,
    codec: PacketCodec,
    /// The largest payload read (see `limits.rs`).
    cap: usize,
    input: BytesMut,
    output: BytesMut,
}

/// A client's packet over the cap (the connection is to be dropped).
pub fn is_too_large(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TooLarge>())
}

#[derive(Debug, thiserror::Error)]
#[error("a packet larger than {0} bytes")]
struct TooLarge(usize);

impl Packets {
    /// Wraps an accepted connection; payloads read are at most `cap` bytes.
    pub fn new(stream: TcpStream, cap: usize) -> Packets {
        let _ = stream.set_nodelay(true);
        Packets {
            stream: Link::Plain(stream),
            codec: PacketCodec::default(),
            cap,
            input: BytesMut::new(),
            output: BytesMut::new(),
        }
    }

    /// Sets the largest payload read from now on.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Reads one payload (joining split packets); `None` at end of stream.
    /// A packet over the cap is an error for which [`is_too_large`] holds.
    pub async fn read(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut payload = Vec::new();
        loop {
            // The codec has one limit for both directions: ours is on reads.
            self.codec.max_allowed_packet = self.cap;
            match self.codec.decode(&mut self.input, &mut payload) {
                Ok(true) => return Ok(Some(payload)),
                Ok(false) => {}
                Err(PacketCodecError::PacketTooLarge) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        TooLarge(self.cap),
                    ))
                }
                Err(PacketCodecError::Io(e)) => return Err(e),
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e.to_string(),
                    ))
                }
            }
            self.input.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.input).await? == 0 {
                if payload.is_empty() && self.input.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Hands the TCP stream to rustls after an SSLRequest; the codec (and
    /// its sequence id) carries on over TLS. Bytes the client sent after
    /// its SSLRequest, before the TLS handshake, would be read as if they
    /// came over TLS: refused.
    pub async fn upgrade(&mut self, tls: &ServeTls) -> std::io::Result<()> {
        if !self.input.is_empty() || !self.output.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "plain bytes after the SSLRequest",
            ));
        }
        let Link::Plain(tcp) = std::mem::replace(&mut self.stream, Link::Gone) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a second SSLRequest",
            ));
        };
        self.stream = tls.accept(tcp).await?;
        Ok(())
    }

    /// The TLS version and cipher suite; `None` on a plain connection.
    pub fn tls_params(&self) -> Option<(String, String)> {
        self.stream.tls_params()
    }

    /// A new command starts its sequence at 0 (the client's packet).
    pub fn reset(&mut self) {
        self.codec.reset_seq_id();
    }

    /// Writes one payload (split as the protocol asks), sending it once
    /// enough is buffered.
    pub async fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        // What is written is the archive's events, as large as the master
        // wrote them: no cap on this side.
        self.codec.max_allowed_packet = usize::MAX;
        self.codec
            .encode(&mut &payload[..], &mut self.output)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if self.output.len() >= WRITE_BUFFER {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.output).await?;
        self.output.clear();
        if self.output.capacity() > 4 * WRITE_BUFFER {
            // After a large event: do not keep its buffer.
            self.output = BytesMut::new();
        }
        Ok(())
    }

    /// Sends what was written.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.send().await?;
        self.stream.flush().await
    }

    /// OK, flushed.
    pub async fn ok(&mut self) -> std::io::Result<()> {
        self.write(&[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00])
            .await?;
        self.flush().await
    }

    /// ERR `code` with SQLSTATE `state`, flushed.
    pub async fn err(&mut self, code: u16, state: &str, message: &str) -> std::io::Result<()> {
        self.write(&err_payload(code, state, message)).await?;
        self.flush().await
    }

    async fn eof(&mut self) -> std::io::Result<()> {
        self.write(&[0xfe, 0x00, 0x00, 0x02, 0x00]).await
    }

    /// A text result set of string columns, flushed.
    pub async fn result_set(
        &mut self,
        columns: &[&str],
        rows: &[Vec<String>],
    ) -> std::io::Result<()> {
        let rows: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| r.iter().cloned().map(Some).collect())
            .collect();
        self.result_set_nullable(columns, &rows).await
    }

    /// A text result set of string columns, `None` sent as NULL, flushed.
    pub async fn result_set_nullable(
        &mut self,
        columns: &[&str],
        rows: &[Vec<Option<String>>],
    ) -> std::io::Result<()> {
        let mut count = Vec::new();
        put_lenenc_int(&mut count, columns.len() as u64);
        self.write(&count).await?;
        for c in columns {
            let mut d = Vec::new();
            for s in ["def", "", "", ""] {
                put_lenenc_str(&mut d, s.as_bytes());
            }
            put_lenenc_str(&mut d, c.as_bytes());
            put_lenenc_str(&mut d, c.as_bytes());
            d.push(0x0c);
            d.extend_from_slice(&33u16.to_le_bytes()); // utf8_general_ci
            d.extend_from_slice(&1024u32.to_le_bytes());
            d.push(0xfd); // VAR_STRING
            d.extend_from_slice(&0u16.to_le_bytes());
            d.push(0);
            d.extend_from_slice(&[0, 0]);
            self.write(&d).await?;
        }
        self.eof().await?;
        for r in rows {
            let mut p = Vec::new();
            for v in r {
                match v {
                    Some(v) => put_lenenc_str(&mut p, v.as_bytes()),
                    None => p.push(0xfb),
                }
            }
            self.write(&p).await?;
        }
        self.eof().await?;
        self.flush().await
    }
}

/// An ERR packet's payload.
pub fn err_payload(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

/// An ERR packet as the first (and only) packet of a connection, framed:
/// what is sent instead of the greeting to a client that is refused.
pub fn refusal(code: u16, state: &str, message: &str) -> Vec<u8> {
    let p = err_payload(code, state, message);
    let mut out = BytesMut::new();
    mysql_common::proto::codec::packet_to_chunks(0, &mut &p[..], &mut out);
    out.to_vec()
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(b: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => b.push(v as u8),
        251..=0xffff => {
            b.push(0xfc);
            b.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            b.push(0xfd);
            b.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            b.push(0xfe);
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_str(b: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(b, s.len() as u64);
    b.extend_from_slice(s);
}

/// Reads a length-encoded integer at `*at`, advancing it.
pub fn get_lenenc_int(b: &[u8], at: &mut usize) -> Option<u64> {
    let first = *b.get(*at)?;
    *at += 1;
    let n = match first {
        0..=250 => return Some(u64::from(first)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = b.get(*at..*at + n)?;
    *at += n;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some(u64::from_le_bytes(v))
}
