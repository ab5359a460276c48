//! Response forms (SPEC §2.2): text, JSON, NDJSON, chosen by `Accept`; and
//! the one-line rejections of §2.1.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
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

/// A chunked body fed by a channel: the NDJSON stream of a run.
pub struct ChannelBody {
    rx: UnboundedReceiver<Bytes>,
}

impl ChannelBody {
    pub fn new(rx: UnboundedReceiver<Bytes>) -> ChannelBody {
        ChannelBody { rx }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
