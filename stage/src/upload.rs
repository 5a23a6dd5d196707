//! Writing one staged object as a stream: small objects in one `put`,
//! larger ones as a multipart upload with bounded parts in flight. A writer
//! dropped before it finished (a failed or cancelled chunk) lets the parts
//! in flight complete and then aborts the upload, so that no multipart
//! upload is left behind (S3 keeps and bills those without listing them).
//! Waiting matters: a part that reaches the server after the abort would
//! otherwise be stored anyway.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, PutPayloadMut, WriteMultipart,
};
use tokio::io::AsyncWrite;

/// Bytes kept before an object becomes a multipart upload.
const BUFFER: usize = 8 << 20;
/// Part size of a multipart upload (S3's minimum).
const PART: usize = 5 << 20;
/// Parts uploading at once per object.
const IN_FLIGHT: usize = 2;
/// Bytes taken per write at most. The payload buffers copy each write into
/// a block of that write's size, which stays under [`crate::MMAP_THRESHOLD`]
/// this way; whole row groups of 8-32 MiB in one write were mapped and
/// faulted in afresh.
const WRITE_MAX: usize = crate::MMAP_THRESHOLD / 4;

/// Aborts of unfinished uploads, for [`crate::Stage::settle_uploads`].
pub type Aborts = Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>;

type Result<T> = object_store::Result<T>;

enum State {
    /// Bytes kept in blocks (no reallocation, no copy on the way out).
    Buffering(PutPayloadMut),
    Creating(
        BoxFuture<'static, Result<Box<dyn MultipartUpload>>>,
        PutPayload,
    ),
    Uploading(WriteMultipart),
    Finishing(BoxFuture<'static, Result<()>>),
    Done,
}

/// An [`AsyncWrite`] into one object of a store.
pub struct UploadSink {
    store: Arc<dyn ObjectStore>,
    path: Path,
    state: State,
    aborts: Aborts,
}

fn io(e: object_store::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl UploadSink {
    /// A writer of `path` in `store`; aborts go to `aborts`.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, aborts: Aborts) -> UploadSink {
        UploadSink {
            store,
            path,
            state: State::Buffering(PutPayloadMut::new()),
            aborts,
        }
    }

    fn start_upload(&mut self, buf: PutPayload) {
        let (store, path) = (self.store.clone(), self.path.clone());
        let create = async move { store.put_multipart(&path).await }.boxed();
        self.state = State::Creating(create, buf);
    }

    /// Drives a multipart upload being created; `Ready` once it uploads.
    fn poll_created(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let State::Creating(create, buf) = &mut self.state {
            let upload = ready!(create.poll_unpin(cx)).map_err(io)?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            for bytes in std::mem::take(buf) {
                w.put(bytes);
            }
            self.state = State::Uploading(w);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for UploadSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_created(cx))?;
        let buf = &buf[..buf.len().min(WRITE_MAX)];
        match &mut this.state {
            State::Buffering(b) => {
                b.extend_from_slice(buf);
                if b.content_length() >= BUFFER {
                    let b = std::mem::take(b).freeze();
                    this.start_upload(b);
                }
                Poll::Ready(Ok(buf.len()))
            }
            State::Uploading(w) => {
                ready!(w.poll_for_capacity(cx, IN_FLIGHT)).map_err(io)?;
                w.write(buf);
                Poll::Ready(Ok(buf.len()))
            }
            _ => Poll::Ready(Err(std::io::Error::other("write after shutdown"))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            ready!(this.poll_created(cx))?;
            match std::mem::replace(&mut this.state, State::Done) {
                State::Buffering(b) => {
                    let (store, path) = (this.store.clone(), this.path.clone());
                    this.state = State::Finishing(
                        async move { store.put(&path, b.freeze()).await.map(|_| ()) }.boxed(),
                    );
                }
                State::Uploading(w) => {
                    this.state =
                        State::Finishing(async move { w.finish().await.map(|_| ()) }.boxed());
                }
                State::Finishing(mut f) => {
                    return match f.poll_unpin(cx) {
                        Poll::Ready(r) => Poll::Ready(r.map_err(io)),
                        Poll::Pending => {
                            this.state = State::Finishing(f);
                            Poll::Pending
                        }
                    };
                }
                State::Done => return Poll::Ready(Ok(())),
                State::Creating(..) => unreachable!("driven above"),
            }
        }
    }
}

impl Drop for UploadSink {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Done);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cleanup = match state {
            State::Buffering(_) | State::Done => return,
            State::Creating(create, _) => async move {
                if let Ok(mut upload) = create.await {
                    let _ = upload.abort().await;
                }
            }
            .boxed(),
            State::Uploading(mut w) => async move {
                // Let the parts in flight land, then abort: a part arriving
                // after the abort would be kept.
                let _ = w.wait_for_capacity(0).await;
                if let Err(e) = w.abort().await {
                    tracing::warn!(error = %e, "could not abort an unfinished upload");
                }
            }
            .boxed(),
            // A finish under way completes; the extract's cleanup removes
            // the object with the rest of the unpublished snapshot.
            State::Finishing(f) => async move {
                let _ = f.await;
            }
            .boxed(),
        };
        let h = rt.spawn(cleanup);
        self.aborts.lock().expect("aborts").push(h);
    }
}
