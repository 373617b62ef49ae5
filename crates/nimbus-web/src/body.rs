//! Request bodies: streamed, gzip-decoded when the client compressed them,
//! and read into memory only up to a stated limit.

use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use warp::Filter;

/// A request body as a byte stream.
pub type BodyReader = Pin<Box<dyn AsyncRead + Send + Sync>>;

/// Extract the body as a [`BodyReader`].
pub fn body_reader() -> impl Filter<Extract = (BodyReader,), Error = warp::Rejection> + Clone {
    warp::body::stream().map(|stream| {
        let stream = futures::TryStreamExt::map_err(stream, std::io::Error::other);
        Box::pin(tokio_util::io::StreamReader::new(stream)) as BodyReader
    })
}

/// A body that records whether it was read to its end.
pub struct Tracked {
    inner: BodyReader,
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Tracked {
    /// `body`, and the flag that is set once it has been read to its end.
    pub fn wrap(body: BodyReader) -> (BodyReader, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tracked = Tracked {
            inner: body,
            finished: finished.clone(),
        };
        (Box::pin(tracked), finished)
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let asked = buf.remaining() > 0;
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if asked && matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() == before
        {
            self.finished
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("Content-Encoding {encoding:?} is not supported; use gzip or none")]
    UnsupportedEncoding { encoding: String },
    #[error("reading the request body failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Wrap `body` in a decoder for its `Content-Encoding`.
pub fn decoded(body: BodyReader, encoding: Option<&str>) -> Result<BodyReader, BodyError> {
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") | Some("x-gzip") => Ok(Box::pin(
            async_compression::tokio::bufread::GzipDecoder::new(BufReader::new(body)),
        )),
        Some(other) => Err(BodyError::UnsupportedEncoding {
            encoding: other.to_owned(),
        }),
    }
}

/// Read a whole (decoded) body, refusing more than `limit` bytes.
pub async fn read_limited(body: BodyReader, limit: u64) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    body.take(limit + 1).read_to_end(&mut out).await?;
    if out.len() as u64 > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(data: Vec<u8>) -> BodyReader {
        Box::pin(std::io::Cursor::new(data))
    }

    #[tokio::test]
    async fn tracked_bodies_know_when_they_were_read_to_the_end() {
        let (body, finished) = Tracked::wrap(reader(vec![7; 100]));
        let mut body = body;
        let mut first = [0u8; 10];
        body.read_exact(&mut first).await.expect("read");
        assert!(!finished.load(std::sync::atomic::Ordering::Relaxed));
        let rest = read_limited(body, 1000).await.expect("read");
        assert_eq!(rest.len(), 90);
        assert!(finished.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let ok = read_limited(reader(vec![1; 10]), 10)
            .await
            .expect("at the limit");
        assert_eq!(ok.len(), 10);
        let err = read_limited(reader(vec![1; 11]), 10)
            .await
            .expect_err("over");
        assert!(matches!(err, BodyError::TooLarge { limit: 10 }));
        assert_eq!(
            err.to_string(),
            "the request body is larger than the limit of 10 bytes"
        );
    }

    #[tokio::test]
    async fn gzip_bodies_are_decoded_and_other_encodings_refused() {
        use async_compression::tokio::write::GzipEncoder;
        use tokio::io::AsyncWriteExt;
        let mut encoder = GzipEncoder::new(Vec::new());
        encoder.write_all(b"0000").await.expect("compress");
        encoder.shutdown().await.expect("finish");
        let compressed = encoder.into_inner();
        let body = decoded(reader(compressed), Some("gzip")).expect("gzip is supported");
        assert_eq!(read_limited(body, 100).await.expect("read"), b"0000");
        assert!(matches!(
            decoded(reader(Vec::new()), Some("br")),
            Err(BodyError::UnsupportedEncoding { .. })
        ));
    }
}
