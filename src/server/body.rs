//! Response bodies: a whole JSON document, or an SSE stream fed by a channel.
//!
//! An SSE body for a POST ends after the responses it waits for have been sent (or the
//! request deadline passed, answered with a JSON-RPC error); a GET or legacy stream lives
//! until the client goes, with keep-alive comments. Dropping a body runs its cleanup, so a
//! client that disconnects leaves no waiter or stream behind.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::jsonrpc::{self, code};
use crate::transport::sse;

pub enum Body {
    Full(Option<Bytes>),
    Sse(Box<SseBody>),
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }

    pub fn bytes(b: impl Into<Bytes>) -> Self {
        Body::Full(Some(b.into()))
    }
}

pub struct SseBody {
    rx: mpsc::Receiver<Value>,
    prelude: Option<Bytes>,
    /// POST streams: the responses still awaited (id key -> id), and when to give up.
    awaiting: Option<HashMap<String, Value>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
    keepalive: Option<tokio::time::Interval>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
    done: bool,
}

impl SseBody {
    /// A stream that lives as long as the client stays (GET stream, legacy SSE).
    pub fn open(rx: mpsc::Receiver<Value>, prelude: Option<Bytes>) -> Self {
        let mut keepalive = tokio::time::interval(Duration::from_secs(25));
        keepalive.reset();
        Self {
            rx,
            prelude,
            awaiting: None,
            deadline: None,
            timeout: Duration::ZERO,
            keepalive: Some(keepalive),
            on_drop: None,
            done: false,
        }
    }

    /// A POST's stream: ends once every id in `awaiting` has its response.
    pub fn until_answered(
        rx: mpsc::Receiver<Value>,
        prelude: Option<Bytes>,
        awaiting: HashMap<String, Value>,
        timeout: Duration,
    ) -> Self {
        Self {
            rx,
            prelude,
            awaiting: Some(awaiting),
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            timeout,
            keepalive: None,
            on_drop: None,
            done: false,
        }
    }

    pub fn on_drop(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.on_drop = Some(Box::new(f));
        self
    }

    fn note_sent(&mut self, frame: &Value) {
        if let Some(awaiting) = &mut self.awaiting {
            if jsonrpc::kind(frame) == jsonrpc::Kind::Response
                && let Some(id) = frame.get("id")
            {
                awaiting.remove(&jsonrpc::id_key(id));
            }
            if awaiting.is_empty() {
                self.done = true;
            }
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Sse(s) => s.poll_next(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => http_body::SizeHint::with_exact(0),
            Body::Sse(_) => http_body::SizeHint::default(),
        }
    }
}

impl SseBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(p) = self.prelude.take() {
            return Poll::Ready(Some(p));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => {
                self.note_sent(&frame);
                return Poll::Ready(Some(sse::message(&frame)));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if let Some(deadline) = &mut self.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.done = true;
            let secs = self.timeout.as_secs_f64();
            let mut out = Vec::new();
            for (_, id) in self.awaiting.take().unwrap_or_default() {
                let e = jsonrpc::error(
                    id,
                    code::UPSTREAM_TIMEOUT,
                    format!("upstream did not answer within {secs}s (server.request_timeout)"),
                );
                out.extend_from_slice(&sse::message(&e));
            }
            return Poll::Ready(Some(Bytes::from(out)));
        }
        if let Some(k) = &mut self.keepalive
            && k.poll_tick(cx).is_ready()
        {
            return Poll::Ready(Some(sse::keepalive()));
        }
        Poll::Pending
    }
}
