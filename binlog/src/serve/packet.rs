//! MySQL protocol framing for the server side: packets of up to 16 MiB - 1
//! with a sequence id, larger payloads split, and the few packets a
//! replica's IO thread needs built by hand (OK, EOF, ERR, text result sets;
//! it does not negotiate `CLIENT_DEPRECATE_EOF`).

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

const MAX_PAYLOAD: usize = 0xff_ffff;

/// One client connection's packets.
pub struct Packets {
    stream: BufWriter<TcpStream>,
    seq: u8,
}

impl Packets {
    /// Wraps an accepted connection.
    pub fn new(stream: TcpStream) -> Packets {
        let _ = stream.set_nodelay(true);
        Packets {
            stream: BufWriter::with_capacity(1 << 16, stream),
            seq: 0,
        }
    }

    /// Reads one payload (joining split packets); `None` at end of stream.
    pub async fn read(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut payload = Vec::new();
        loop {
            let mut head = [0u8; 4];
            match self.stream.get_mut().read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && payload.is_empty() => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
            let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
            self.seq = head[3].wrapping_add(1);
            let start = payload.len();
            payload.resize(start + len, 0);
            self.stream
                .get_mut()
                .read_exact(&mut payload[start..])
                .await?;
            if len < MAX_PAYLOAD {
                return Ok(Some(payload));
            }
        }
    }

    /// A new command starts its sequence at 0 (the client's packet).
    pub fn reset(&mut self) {
        self.seq = 0;
    }

    /// Writes one payload (split as the protocol asks), without flushing.
    pub async fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            let len = (n as u32).to_le_bytes();
            self.stream
                .write_all(&[len[0], len[1], len[2], self.seq])
                .await?;
            self.stream.write_all(&rest[..n]).await?;
            self.seq = self.seq.wrapping_add(1);
            rest = &rest[n..];
            if n < MAX_PAYLOAD {
                return Ok(());
            }
        }
    }

    /// Sends what was written.
    pub async fn flush(&mut self) -> std::io::Result<()> {
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
        let mut p = vec![0xff];
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state.as_bytes());
        p.extend_from_slice(message.as_bytes());
        self.write(&p).await?;
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
                put_lenenc_str(&mut p, v.as_bytes());
            }
            self.write(&p).await?;
        }
        self.eof().await?;
        self.flush().await
    }
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
