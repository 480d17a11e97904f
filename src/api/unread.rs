//! Answers sent before the request body was read to its end (an auth error before an upload, a
//! store that is gone, a 503). The rest of the body is drained first, within the bounds of the
//! 413's drain ([`super::body::drain_unread`]): a client that writes its whole body before it
//! reads (hyper and reqwest do) would otherwise get a reset instead of the answer, take it for a
//! network error and upload again. What could not be drained to its end makes the answer carry
//! `Connection: close` (on HTTP/1; HTTP/2 resets the stream): the server will not read the rest,
//! so the connection cannot serve another request, and a client that reused it would see its
//! next request fail.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::oneshot;

use super::body::{drain_unread, is_worth_draining};

/// A request body that, when the handler drops it, says whether it was read to its end and hands
/// itself back when it was not.
struct Tracked {
    inner: Body,
    finished: bool,
    dropped: Option<oneshot::Sender<Option<Body>>>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(dropped) = self.dropped.take() {
            let unread =
                (!self.finished).then(|| std::mem::replace(&mut self.inner, Body::empty()));
            // The receiver may be gone (the answer already left); then there is nothing to do.
            let _ = dropped.send(unread);
        }
    }
}

pub async fn close_if_body_unread(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    // On HTTP/2 too: there an unread request stream would be reset (RST_STREAM NO_ERROR after
    // the answer, as RFC 9113 allows), which curl 7.88 reports as an error instead of the answer.
    let drainable = is_worth_draining(request.headers());
    let (dropped_tx, mut dropped_rx) = oneshot::channel();
    let request = request.map(|inner| {
        Body::new(Tracked {
            inner,
            finished: false,
            dropped: Some(dropped_tx),
        })
    });
    let mut response = next.run(request).await;
    // A 413 was drained where it was decided, by its own bounds (compressed bodies shorter);
    // after a 408 the client has been silent for the whole idle timeout already.
    let settled = matches!(
        response.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    );
    let read_to_end = match dropped_rx.try_recv() {
        Ok(None) => true,
        Ok(Some(unread)) if drainable && !settled => drain_unread(unread).await,
        // Not drained, or still held somewhere (never by a handler that has answered): the
        // server cannot tell where the next request would start.
        _ => false,
    };
    if read_to_end {
        return response;
    }
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
