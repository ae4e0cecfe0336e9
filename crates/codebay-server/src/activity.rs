//! What the HTTP side sees of each MCP session: its requests in flight, their answer
//! streams, and when it was last used. rmcp sees neither of the two things this
//! decides:
//! - A client that went away mid-request. Its POST's SSE answer is dropped, and rmcp
//!   keeps the request running: the session's next call would wait for a run nobody
//!   reads. MCP lets a client resume a dropped stream (GET with `Last-Event-ID`,
//!   after the retry it was primed with), so a drop alone is no cancel; one not
//!   resumed within [`RESUME_GRACE`] is. The server then hands rmcp the
//!   `notifications/cancelled` the client would have sent, and the run stops as a
//!   client's cancel stops it (interrupted, the context kept).
//! - A session left idle. rmcp's own keep-alive counts only its messages, so a run
//!   that prints nothing for `--idle-timeout` would be reaped mid-run. Here a session
//!   is idle once nothing of it is in flight, and it is closed `--idle-timeout` after
//!   its last request ended.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use futures::Stream;
use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, ClientJsonRpcMessage, ClientNotification,
    JsonRpcNotification, RequestId,
};
use rmcp::transport::common::http_header::{HEADER_LAST_EVENT_ID, HEADER_SESSION_ID};
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::SessionManager as _;
use tokio_util::sync::CancellationToken;

/// How long a dropped stream waits to be resumed: twice the retry a client is primed
/// with, so that one reconnecting on time is never taken for gone.
pub const RESUME_GRACE: Duration =
    Duration::from_secs(2 * SessionConfig::DEFAULT_SSE_RETRY.as_secs());

/// The JSON-RPC id of a POST's request, put in the request's extensions by the
/// check that parses the body.
#[derive(Clone)]
pub struct PostedRequest(pub RequestId);

type SessionId = Arc<str>;

/// A request in flight, until its answer stream ends or it is given up.
struct InFlight {
    /// The number rmcp gives the request's answer stream (event ids `<index>/<n>`),
    /// once its first event is seen.
    stream: Option<u64>,
    /// Answer streams being read: the POST's, and those of GETs resuming it. A resume
    /// may arrive before the drop it mends is noticed, so this is a count.
    readers: usize,
    /// Bumped at every resume: a grace timer started before it is void.
    generation: u64,
}

#[derive(Default)]
struct Seen {
    last_used: Option<Instant>,
    in_flight: HashMap<RequestId, InFlight>,
}

pub struct Activity {
    manager: Arc<LocalSessionManager>,
    idle_timeout: Duration,
    grace: Duration,
    sessions: Mutex<HashMap<SessionId, Seen>>,
}

impl Activity {
    pub fn new(
        manager: Arc<LocalSessionManager>,
        idle_timeout: Duration,
        grace: Duration,
    ) -> Arc<Activity> {
        Arc::new(Activity {
            manager,
            idle_timeout,
            grace,
            sessions: Mutex::default(),
        })
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Seen>> {
        self.sessions.lock().expect("activity lock")
    }

    fn used(&self, session: &SessionId) {
        self.sessions()
            .entry(session.clone())
            .or_default()
            .last_used = Some(Instant::now());
    }

    fn begin(&self, session: &SessionId, request: RequestId) {
        let mut sessions = self.sessions();
        let seen = sessions.entry(session.clone()).or_default();
        seen.last_used = Some(Instant::now());
        seen.in_flight.insert(
            request,
            InFlight {
                stream: None,
                readers: 0,
                generation: 0,
            },
        );
    }

    fn numbered(&self, session: &SessionId, request: &RequestId, stream: u64) {
        if let Some(r) = self.entry(session, request).as_mut() {
            r.stream = Some(stream);
        }
    }

    fn end(&self, session: &SessionId, request: &RequestId) {
        if let Some(seen) = self.sessions().get_mut(session) {
            seen.in_flight.remove(request);
            seen.last_used = Some(Instant::now());
        }
    }

    fn entry(&self, session: &SessionId, request: &RequestId) -> InFlightGuard<'_> {
        InFlightGuard {
            sessions: self.sessions(),
            session: session.clone(),
            request: request.clone(),
        }
    }

    /// A GET resuming stream `n`: the request it answers, whose grace timer is void.
    fn resume(&self, session: &SessionId, n: u64) -> Option<RequestId> {
        let mut sessions = self.sessions();
        let seen = sessions.get_mut(session)?;
        seen.last_used = Some(Instant::now());
        let (request, r) = seen
            .in_flight
            .iter_mut()
            .find(|(_, r)| r.stream == Some(n))?;
        r.generation += 1;
        Some(request.clone())
    }

    /// An answer stream of the request is being sent: the generation it belongs to.
    fn attach(&self, session: &SessionId, request: &RequestId) -> u64 {
        self.entry(session, request).as_mut().map_or(0, |r| {
            r.readers += 1;
            r.generation
        })
    }

    /// An answer stream ended. The newest one ends after the answer; an older one,
    /// when a resume took its place.
    fn closed(self: &Arc<Self>, session: SessionId, request: RequestId, generation: u64) {
        let superseded = self
            .entry(&session, &request)
            .as_mut()
            .is_some_and(|r| r.generation != generation);
        if superseded {
            self.dropped(session, request, true);
        } else {
            self.end(&session, &request);
        }
    }

    /// An answer stream of the request was dropped unfinished (`was_read`), or a
    /// resume of it was refused. With no stream left, unless one is resumed within
    /// the grace, the request is given up and cancelled. One never numbered (its
    /// priming event not sent) cannot be resumed.
    fn dropped(self: &Arc<Self>, session: SessionId, request: RequestId, was_read: bool) {
        let generation = {
            let mut guard = self.entry(&session, &request);
            let Some(r) = guard.as_mut() else { return };
            if was_read {
                r.readers = r.readers.saturating_sub(1);
            }
            if r.readers > 0 {
                return;
            }
            r.stream.map(|_| r.generation)
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.clone();
        runtime.spawn(async move {
            if let Some(generation) = generation {
                tokio::time::sleep(me.grace).await;
                let resumed = me
                    .entry(&session, &request)
                    .as_mut()
                    .is_none_or(|r| r.readers > 0 || r.generation != generation);
                if resumed {
                    return;
                }
            }
            me.end(&session, &request);
            me.cancel(&session, request).await;
        });
    }

    async fn cancel(&self, session: &SessionId, request: RequestId) {
        let notice = ClientJsonRpcMessage::Notification(JsonRpcNotification {
            jsonrpc: Default::default(),
            notification: ClientNotification::CancelledNotification(CancelledNotification::new(
                CancelledNotificationParam::new(
                    Some(request),
                    Some("the client disconnected and did not resume its stream".into()),
                ),
            )),
        });
        // A session already gone has nothing left to stop.
        let _ = self.manager.accept_message(session, notice).await;
    }

    /// Resolves once no session has an answer still being read (or after `within`).
    pub async fn settled(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline
            && self
                .sessions()
                .values()
                .any(|seen| seen.in_flight.values().any(|r| r.readers > 0))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Closes, every `idle_timeout / 4` (at most 1 s), each session with nothing in
    /// flight since `idle_timeout` ago, until `stop`.
    pub async fn reap(self: Arc<Self>, stop: CancellationToken) {
        let every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            // Taken out under the lock that checked them: a request that begins
            // after this finds its session closing, none is closed under one.
            let idle: Vec<SessionId> = {
                let mut sessions = self.sessions();
                let idle: Vec<SessionId> = sessions
                    .iter()
                    .filter(|(_, seen)| {
                        seen.in_flight.is_empty()
                            && seen
                                .last_used
                                .is_some_and(|t| t.elapsed() >= self.idle_timeout)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &idle {
                    sessions.remove(id);
                }
                idle
            };
            for id in idle {
                let _ = self.manager.close_session(&id).await;
            }
            // Sessions that ended otherwise (DELETE, a failed start) are forgotten.
            let known: Vec<SessionId> = self.sessions().keys().cloned().collect();
            for id in known {
                if !self.manager.has_session(&id).await.unwrap_or(false) {
                    self.sessions().remove(&id);
                }
            }
        }
    }
}

/// One request's entry, looked up under the lock.
struct InFlightGuard<'a> {
    sessions: MutexGuard<'a, HashMap<SessionId, Seen>>,
    session: SessionId,
    request: RequestId,
}

impl InFlightGuard<'_> {
    fn as_mut(&mut self) -> Option<&mut InFlight> {
        self.sessions
            .get_mut(&self.session)?
            .in_flight
            .get_mut(&self.request)
    }
}

fn header_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The stream of `<index>/<stream>`, the id rmcp gives a request's events.
fn stream_of_event_id(id: &str) -> Option<u64> {
    id.trim().split_once('/')?.1.parse().ok()
}

/// The stream named by the first `id:` line of an SSE chunk (the priming event).
fn stream_of_sse(chunk: &[u8]) -> Option<u64> {
    std::str::from_utf8(chunk)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("id:"))
        .and_then(stream_of_event_id)
}

/// Sees every `/mcp` request: the session an `initialize` made, each use of a
/// session, and the answer streams of its requests (a POST's, and a GET's that
/// resumes one).
pub async fn watch(
    State(activity): State<Arc<Activity>>,
    request: Request,
    next: Next,
) -> Response {
    let session: Option<SessionId> = header_of(request.headers(), HEADER_SESSION_ID).map(Arc::from);
    let method = request.method().clone();
    let answering = match (&method, &session) {
        (&Method::POST, Some(session)) => {
            let posted = request.extensions().get::<PostedRequest>().cloned();
            match posted {
                Some(PostedRequest(id)) => {
                    activity.begin(session, id.clone());
                    Some(id)
                }
                None => {
                    activity.used(session);
                    None
                }
            }
        }
        (_, Some(session)) => {
            let resumed = header_of(request.headers(), HEADER_LAST_EVENT_ID)
                .and_then(stream_of_event_id)
                .and_then(|n| activity.resume(session, n));
            if resumed.is_none() {
                activity.used(session);
            }
            resumed
        }
        (_, None) => None,
    };
    let response = next.run(request).await;
    let Some(session) = session else {
        // The answer to an `initialize` names the session it made.
        if let Some(made) = header_of(response.headers(), HEADER_SESSION_ID) {
            activity.used(&Arc::from(made));
        }
        return response;
    };
    let Some(request) = answering else {
        return response;
    };
    let streaming = response.status().is_success()
        && header_of(response.headers(), header::CONTENT_TYPE.as_str())
            .is_some_and(|t| t.starts_with("text/event-stream"));
    if !streaming {
        if method == Method::POST {
            // Answered whole (JSON, or refused): nothing is in flight.
            activity.end(&session, &request);
        } else {
            // A resume refused: the request may have no stream left.
            activity.dropped(session, request, false);
        }
        return response;
    }
    let generation = activity.attach(&session, &request);
    let guard = AnswerGuard {
        activity,
        session,
        request,
        generation,
        done: false,
    };
    response.map(|body| {
        Body::from_stream(Watched {
            inner: body.into_data_stream(),
            guard,
            numbered: false,
        })
    })
}

/// Drops as the answer's body drops: unfinished, it reports the stream dropped.
struct AnswerGuard {
    activity: Arc<Activity>,
    session: SessionId,
    request: RequestId,
    generation: u64,
    done: bool,
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        if !self.done {
            self.activity
                .dropped(self.session.clone(), self.request.clone(), true);
        }
    }
}

struct Watched {
    inner: BodyDataStream,
    guard: AnswerGuard,
    numbered: bool,
}

impl Stream for Watched {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = &mut *self;
        let polled = Pin::new(&mut me.inner).poll_next(cx);
        let guard = &mut me.guard;
        match &polled {
            Poll::Ready(Some(Ok(chunk))) if !me.numbered => {
                if let Some(n) = stream_of_sse(chunk) {
                    guard.activity.numbered(&guard.session, &guard.request, n);
                    me.numbered = true;
                }
            }
            Poll::Ready(None) if !guard.done => {
                guard.done = true;
                guard.activity.closed(
                    guard.session.clone(),
                    guard.request.clone(),
                    guard.generation,
                );
            }
            _ => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_read_from_event_ids() {
        assert_eq!(stream_of_event_id("0/7"), Some(7));
        assert_eq!(stream_of_event_id(" 12/0 "), Some(0));
        assert_eq!(stream_of_event_id("3"), None);
        assert_eq!(stream_of_event_id("a/b"), None);
        assert_eq!(stream_of_sse(b"id: 0/4\nretry: 3000\ndata:\n\n"), Some(4));
        assert_eq!(stream_of_sse(b"retry: 3000\nid:0/9\ndata:\n\n"), Some(9));
        assert_eq!(stream_of_sse(b"data: {}\n\n"), None);
    }
}
