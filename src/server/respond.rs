//! Response forms (SPEC §2.2): text, JSON, NDJSON, chosen by `Accept`; and
//! the one-line rejections of §2.1.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc::UnboundedReceiver;

pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// The form of a run's answer, from the request's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Text,
    Json,
    Ndjson,
}

/// Picks the preferred form: the highest `q` among the types servo speaks,
/// the earliest on a tie; text when nothing matches.
pub fn negotiate(accept: Option<&str>) -> Form {
    let Some(accept) = accept else {
        return Form::Text;
    };
    let mut best: Option<(f32, Form)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|v| v.trim().parse::<f32>().ok())
            })
            .next()
            .unwrap_or(1.0);
        let form = match media.as_str() {
            "application/json" => Form::Json,
            "application/x-ndjson" | "application/ndjson" => Form::Ndjson,
            "text/plain" | "text/*" | "*/*" => Form::Text,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, form));
        }
    }
    best.map(|(_, f)| f).unwrap_or(Form::Text)
}

pub fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// A rejection before the run starts: one line, or `{"error": ...}` for JSON clients.
pub fn reject(status: StatusCode, form: Form, reason: &str) -> Response<ResponseBody> {
    match form {
        Form::Json | Form::Ndjson => full(
            status,
            "application/json",
            format!("{}\n", serde_json::json!({ "error": reason })),
        ),
        Form::Text => full(status, "text/plain; charset=utf-8", format!("{reason}\n")),
    }
}

/// Most bytes [`ChannelBody`] puts in one frame: what is queued up to it
/// goes out as one chunk.
const FRAME_BYTES: usize = 64 * 1024;

/// A chunked body fed by a channel: the NDJSON stream of a run.
///
/// A run's log comes one line at a time; a frame per line costs hyper a
/// chunk header and a `writev` per ~16 lines. What is already queued when
/// the body is polled (up to [`FRAME_BYTES`]) goes out as one frame: no
/// line waits for another, a fast producer gets big chunks.
pub struct ChannelBody {
    rx: UnboundedReceiver<Bytes>,
    /// A chunk taken from the channel that did not fit in the last frame.
    next: Option<Bytes>,
}

impl ChannelBody {
    pub fn new(rx: UnboundedReceiver<Bytes>) -> ChannelBody {
        ChannelBody { rx, next: None }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let first = match self.next.take() {
            Some(b) => b,
            None => match self.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => b,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        let mut frame: Option<BytesMut> = None;
        while let Ok(more) = self.rx.try_recv() {
            let len = frame.as_ref().map_or(first.len(), |f| f.len());
            if len + more.len() > FRAME_BYTES {
                self.next = Some(more);
                break;
            }
            frame
                .get_or_insert_with(|| {
                    let mut f = BytesMut::with_capacity(FRAME_BYTES.max(first.len()));
                    f.extend_from_slice(&first);
                    f
                })
                .extend_from_slice(&more);
        }
        let data = frame.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_body_coalesces_what_is_queued() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut body = ChannelBody::new(rx);
        for i in 0..3 {
            tx.send(Bytes::from(format!("line {i}\n"))).unwrap();
        }
        let big = Bytes::from(vec![b'x'; FRAME_BYTES]);
        tx.send(big.clone()).unwrap();
        tx.send(Bytes::from_static(b"last\n")).unwrap();
        drop(tx);
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(
            frames,
            vec![
                Bytes::from_static(b"line 0\nline 1\nline 2\n"),
                big,
                Bytes::from_static(b"last\n"),
            ]
        );
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(negotiate(None), Form::Text);
        assert_eq!(negotiate(Some("application/json")), Form::Json);
        assert_eq!(negotiate(Some("application/x-ndjson")), Form::Ndjson);
        assert_eq!(negotiate(Some("*/*")), Form::Text);
        assert_eq!(
            negotiate(Some("text/plain;q=0.5, application/json")),
            Form::Json
        );
        assert_eq!(
            negotiate(Some("application/json;q=0.2, text/plain;q=0.9")),
            Form::Text
        );
        assert_eq!(
            negotiate(Some("application/json, application/x-ndjson")),
            Form::Json
        );
        assert_eq!(negotiate(Some("image/png")), Form::Text);
        assert_eq!(negotiate(Some("application/json;q=0")), Form::Text);
    }
}
