//! Answers sent before the request body was read to its end (an auth error before an upload, a
//! store that is gone, a 503). The rest of the body is drained first, within the bounds of the
//! 413's drain ([`super::body::drain_unread`]): a client that writes its whole body before it
//! reads (hyper and reqwest do) would otherwise get a reset instead of the answer, take it for a
//! network error and upload again. What could not be drained to its end makes the answer carry
//! `Connection: close` (on HTTP/1; HTTP/2 resets the stream): the server will not read the rest,
//! so the connection cannot serve another request, and a client that reused it would see its
//! next request fail.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// A request body that notes when it has been read to its end, and that hands itself back when
/// the handler drops it before then.
struct Tracked {
    inner: Body,
    finished: Arc<AtomicBool>,
    unread: Option<oneshot::Sender<Body>>,
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
            self.finished.store(true, Ordering::Relaxed);
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
        if self.finished.load(Ordering::Relaxed) {
            return;
        }
        if let Some(unread) = self.unread.take() {
            // The receiver may be gone (the answer already left); then there is nothing to do.
            let _ = unread.send(std::mem::replace(&mut self.inner, Body::empty()));
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
    let finished = Arc::new(AtomicBool::new(false));
    let (unread_tx, mut unread_rx) = oneshot::channel();
    let request = request.map(|inner| {
        Body::new(Tracked {
            inner,
            finished: finished.clone(),
            unread: Some(unread_tx),
        })
    });
    let mut response = next.run(request).await;
    if finished.load(Ordering::Relaxed) {
        return response;
    }
    // A 413 was drained where it was decided, by its own bounds (compressed bodies shorter);
    // after a 408 the client has been silent for the whole idle timeout already.
    let settled = matches!(
        response.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    );
    if drainable && !settled {
        if let Ok(body) = unread_rx.try_recv() {
            if drain_unread(body).await {
                return response;
            }
        }
    }
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
