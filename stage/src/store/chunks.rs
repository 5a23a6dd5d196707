//! Chunk files: writing one (Parquet through a hashing upload), the
//! Parquet settings, opening one for reading, and fetching one from a
//! [`Stage`] into the spool directory, checked against the manifest.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;

use super::Stage;
use crate::error::StageError;
use crate::manifest::Chunk;
use crate::upload::UploadSink;

impl Stage {
    /// Starts writing a chunk file at `rel` (relative to the stage root).
    pub fn chunk_writer(
        &self,
        rel: &str,
        schema: SchemaRef,
        props: &ChunkProps,
    ) -> Result<ChunkWriter, StageError> {
        let sink = HashingWriter {
            inner: UploadSink::new(
                self.store.clone(),
                self.object_path(rel),
                self.aborts.clone(),
            ),
            state: Arc::new(Mutex::new((Sha256::new(), 0))),
        };
        let state = sink.state.clone();
        let writer =
            AsyncArrowWriter::try_new(sink, schema.clone(), Some(props.writer_properties(&schema)))
                .map_err(|e| StageError::Parquet {
                    key: rel.to_string(),
                    source: e,
                })?;
        Ok(ChunkWriter {
            writer,
            rel: rel.to_string(),
            rows: 0,
            state,
        })
    }

    /// Waits until the uploads of dropped, unfinished chunk writers are
    /// aborted (a failed or interrupted extract leaves no multipart upload
    /// behind, which S3 would keep and bill without listing it).
    pub async fn settle_uploads(&self) {
        let mut quiet_rounds = 0;
        while quiet_rounds < 3 {
            let pending: Vec<_> = std::mem::take(&mut *self.aborts.lock().expect("aborts"));
            if pending.is_empty() {
                quiet_rounds += 1;
                // Workers being cancelled drop their writers a moment later.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            quiet_rounds = 0;
            for h in pending {
                let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
            }
        }
    }

    /// Reads a chunk's bytes into a private file in `spool`, hashing them on
    /// the way, and checks size and SHA-256 against the manifest: the file
    /// returned holds exactly the bytes hashed. A `file://` stage's chunk is
    /// copied too, not used in place: whoever can write to the stage could
    /// change it between the hash and the load.
    pub async fn fetch_chunk(
        &self,
        chunk: &Chunk,
        spool: &std::path::Path,
    ) -> Result<LocalChunk, StageError> {
        let key = chunk.path.clone();
        let io = |what: &str, e: std::io::Error| {
            match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StageError::Io {
                what: format!(
                    "{what} for chunk `{key}`: the spool directory {} is full (a chunk of {} bytes did not fit); free space there or give --spool-dir a larger disk, then run the same load again (it resumes)",
                    spool.display(),
                    chunk.bytes
                ),
                source: e,
            },
            _ => StageError::Io {
                what: format!("{what} for chunk `{key}`"),
                source: e,
            },
        }
        };
        let tmp = tempfile::Builder::new()
            .prefix("replseed-chunk-")
            .suffix(".parquet")
            .tempfile_in(spool)
            .map_err(|e| io("creating spool file", e))?;
        let spooled = tmp.reopen().map_err(|e| io("opening spool file", e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        if let Some(root) = &self.local_root {
            let path = root.join(&chunk.path);
            let (h, n) = tokio::task::spawn_blocking(move || -> std::io::Result<(Sha256, u64)> {
                use std::io::{Read, Write};
                let mut f = std::fs::File::open(&path)?;
                let mut out = spooled;
                let mut h = Sha256::new();
                let mut n = 0u64;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let r = f.read(&mut buf)?;
                    if r == 0 {
                        break;
                    }
                    h.update(&buf[..r]);
                    out.write_all(&buf[..r])?;
                    n += r as u64;
                }
                out.flush()?;
                Ok((h, n))
            })
            .await
            .expect("copy task")
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StageError::ChunkCorrupt {
                        key: key.clone(),
                        reason: "the file is missing".into(),
                    }
                } else {
                    io("copying", e)
                }
            })?;
            hasher = h;
            size = n;
        } else {
            let mut file = tokio::fs::File::from_std(spooled);
            let obj = self.object_path(&chunk.path);
            let got = match self.store.get(&obj).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(StageError::ChunkCorrupt {
                        key,
                        reason: "the object is missing".into(),
                    })
                }
                Err(e) => return Err(self.store_err(&key, e)),
            };
            let mut stream = got.into_stream();
            use tokio::io::AsyncWriteExt;
            while let Some(part) = stream.next().await {
                let part = part.map_err(|e| self.store_err(&key, e))?;
                hasher.update(&part);
                size += part.len() as u64;
                file.write_all(&part)
                    .await
                    .map_err(|e| io("writing spool file", e))?;
            }
            file.flush()
                .await
                .map_err(|e| io("writing spool file", e))?;
        }
        let local = LocalChunk {
            path: tmp.path().to_path_buf(),
            _tmp: tmp,
        };
        if size != chunk.bytes {
            return Err(StageError::ChunkCorrupt {
                key,
                reason: format!("{size} bytes, the manifest says {}", chunk.bytes),
            });
        }
        let digest = hex::encode(hasher.finalize());
        if digest != chunk.sha256 {
            return Err(StageError::ChunkCorrupt {
                key,
                reason: format!("SHA-256 is {digest}, the manifest says {}", chunk.sha256),
            });
        }
        Ok(local)
    }
}

/// Decoded bytes a reader of a chunk holds in one batch.
const READ_BATCH_BYTES: u64 = 8 << 20;

/// How wide a chunk's rows are, from its Parquet metadata, so that readers
/// size their batches in bytes: a batch of 4096 rows of 600 KiB blobs
/// would hold 2.4 GB.
#[derive(Debug, Clone, Copy)]
pub struct ChunkRows {
    /// Uncompressed bytes per row, in its widest row group (at least 1).
    pub row_bytes: u64,
}

/// Opens a chunk file for reading in batches of about 8 MiB decoded (at
/// most `max_rows` rows each); every reader of chunk files opens them here.
pub fn open_chunk(
    file: std::fs::File,
    max_rows: usize,
) -> Result<
    (
        parquet::arrow::arrow_reader::ParquetRecordBatchReader,
        ChunkRows,
    ),
    parquet::errors::ParquetError,
> {
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    let width = ChunkRows::of(builder.metadata());
    let reader = builder
        .with_batch_size(width.batch_rows(max_rows))
        .build()?;
    Ok((reader, width))
}

impl ChunkRows {
    /// From a chunk file's metadata.
    fn of(meta: &parquet::file::metadata::ParquetMetaData) -> ChunkRows {
        let row_bytes = meta
            .row_groups()
            .iter()
            .filter(|g| g.num_rows() > 0)
            .map(|g| g.total_byte_size().max(0) as u64 / g.num_rows() as u64)
            .max()
            .unwrap_or(0)
            .max(1);
        ChunkRows { row_bytes }
    }

    /// Rows per decoded batch: about 8 MiB, at most `max`, at least 1.
    fn batch_rows(&self, max: usize) -> usize {
        ((READ_BATCH_BYTES / self.row_bytes) as usize).clamp(1, max.max(1))
    }
}

/// A chunk copied into the spool directory (deleted on drop).
#[derive(Debug)]
pub struct LocalChunk {
    /// Path of the Parquet file.
    pub path: PathBuf,
    _tmp: tempfile::NamedTempFile,
}

/// Parquet settings for chunks.
#[derive(Debug, Clone)]
pub struct ChunkProps {
    /// zstd level.
    pub zstd_level: i32,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Bytes per row group at most: a writer holds one row group in memory.
    pub row_group_bytes: usize,
}

impl Default for ChunkProps {
    fn default() -> Self {
        ChunkProps {
            zstd_level: 1,
            row_group_rows: 128 * 1024,
            row_group_bytes: 64 << 20,
        }
    }
}

impl ChunkProps {
    /// Row groups sized for `writers` writers at once: together they hold
    /// at most 64 MiB (8 to 32 MiB each), so that memory does not grow with
    /// the thread count (a loader reads one row group at a time too).
    pub fn for_writers(mut self, writers: usize) -> Self {
        self.row_group_bytes = ((64usize << 20) / writers.max(1)).clamp(8 << 20, 32 << 20);
        self
    }

    /// The compression as recorded in the manifest.
    pub fn compression_name(&self) -> String {
        format!("zstd({})", self.zstd_level)
    }

    fn writer_properties(&self, schema: &arrow::datatypes::Schema) -> WriterProperties {
        let mut b = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(self.zstd_level).unwrap_or_default(),
            ))
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_max_row_group_bytes(Some(self.row_group_bytes))
            // Dictionary pages pay off for low-cardinality columns only (for
            // high-cardinality ones they cost time and, measured on
            // sysbench data, 3% more bytes).
            .set_dictionary_enabled(false)
            // Pages of 256 KiB instead of parquet's 1 MiB: their buffers stay
            // under MMAP_THRESHOLD. Measured on 4M sysbench rows: extract CPU
            // 9.5 -> 8.2 s (system time 1.9 -> 0.9 s), 0.4% more bytes.
            .set_data_page_size_limit(crate::MMAP_THRESHOLD / 4)
            .set_created_by(format!("replseed {}", env!("CARGO_PKG_VERSION")));
        for f in schema.fields() {
            let kind = f
                .metadata()
                .get(crate::types::META_KIND)
                .map(|s| s.as_str());
            if matches!(kind, Some("enum" | "set" | "year" | "bit")) {
                b = b.set_column_dictionary_enabled(
                    parquet::schema::types::ColumnPath::from(f.name().as_str()),
                    true,
                );
            }
        }
        b.build()
    }
}

/// Writes one chunk file, hashing its bytes on the way to the store.
pub struct ChunkWriter {
    writer: AsyncArrowWriter<HashingWriter>,
    rel: String,
    rows: u64,
    state: Arc<Mutex<(Sha256, u64)>>,
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("path", &self.rel)
            .field("rows", &self.rows)
            .finish()
    }
}

impl ChunkWriter {
    /// Appends a batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), StageError> {
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|e| StageError::Parquet {
                key: self.rel.clone(),
                source: e,
            })
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written so far, the buffered row group included (approximate).
    pub fn bytes(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Finishes the file and returns its manifest entry (without key range).
    pub async fn finish(self) -> Result<Chunk, StageError> {
        let rel = self.rel.clone();
        self.writer.close().await.map_err(|e| StageError::Parquet {
            key: rel.clone(),
            source: e,
        })?;
        let (hasher, n) = {
            let mut g = self.state.lock().expect("hash state");
            std::mem::replace(&mut *g, (Sha256::new(), 0))
        };
        Ok(Chunk {
            path: rel,
            rows: self.rows,
            bytes: n,
            sha256: hex::encode(hasher.finalize()),
            key_range: None,
        })
    }
}

/// AsyncWrite adapter that hashes and counts what it passes on.
struct HashingWriter {
    inner: UploadSink,
    state: Arc<Mutex<(Sha256, u64)>>,
}

impl AsyncWrite for HashingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                let mut g = this.state.lock().expect("hash state");
                g.0.update(&buf[..n]);
                g.1 += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
