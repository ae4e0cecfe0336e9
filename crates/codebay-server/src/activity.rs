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

/// One request in flight, as its guards and timers name it. The token is new at every
/// `begin`: a client may reuse a JSON-RPC id, and what was armed for the old request
/// must not act on the new one.
#[derive(Clone)]
struct Ticket {
    session: SessionId,
    request: RequestId,
    token: u64,
}

/// A request in flight, until its answer stream ends or it is given up.
struct InFlight {
    token: u64,
    /// The number rmcp gives the request's answer stream (event ids `<index>/<n>`),
    /// once its first event is seen.
    stream: Option<u64>,
    /// Answer streams being read: the POST's, and those of GETs resuming it. A resume
    /// may arrive before the drop it mends is noticed, so this is a count.
    readers: usize,
    /// Bumped at every resume: a stream of an older one was replaced, and a grace
    /// timer started before it is void.
    generation: u64,
}

#[derive(Default)]
struct Seen {
    last_used: Option<Instant>,
    in_flight: HashMap<RequestId, InFlight>,
    /// Being closed by the reaper: new requests get the 404 of a session gone.
    closing: bool,
}

/// Why a request is not taken in.
enum Refused {
    /// The session is being closed.
    Closing,
    /// A request of the session with this JSON-RPC id is still in flight.
    DuplicateId(RequestId),
}

pub struct Activity {
    manager: Arc<LocalSessionManager>,
    idle_timeout: Duration,
    grace: Duration,
    sessions: Mutex<HashMap<SessionId, Seen>>,
    next_token: std::sync::atomic::AtomicU64,
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
            next_token: Default::default(),
        })
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Seen>> {
        self.sessions.lock().expect("activity lock")
    }

    /// The session, marked used now, unless it is being closed.
    fn use_session<T>(
        &self,
        session: &SessionId,
        then: impl FnOnce(&mut Seen) -> T,
    ) -> Result<T, Refused> {
        let mut sessions = self.sessions();
        let seen = sessions.entry(session.clone()).or_default();
        if seen.closing {
            return Err(Refused::Closing);
        }
        seen.last_used = Some(Instant::now());
        Ok(then(seen))
    }

    fn begin(&self, session: &SessionId, request: RequestId) -> Result<Ticket, Refused> {
        let token = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.use_session(session, |seen| {
            if seen.in_flight.contains_key(&request) {
                return Err(Refused::DuplicateId(request));
            }
            seen.in_flight.insert(
                request.clone(),
                InFlight {
                    token,
                    stream: None,
                    readers: 0,
                    generation: 0,
                },
            );
            Ok(Ticket {
                session: session.clone(),
                request,
                token,
            })
        })?
    }

    /// A GET resuming stream `n`: the request it answers, whose older streams and
    /// grace timer are void.
    fn resume(&self, session: &SessionId, n: u64) -> Result<Option<Ticket>, Refused> {
        self.use_session(session, |seen| {
            let (request, r) = seen
                .in_flight
                .iter_mut()
                .find(|(_, r)| r.stream == Some(n))?;
            r.generation += 1;
            Some(Ticket {
                session: session.clone(),
                request: request.clone(),
                token: r.token,
            })
        })
    }

    /// Runs `then` on the ticket's request if it is still the one in flight.
    fn with<T>(&self, ticket: &Ticket, then: impl FnOnce(&mut Seen) -> Option<T>) -> Option<T> {
        let mut sessions = self.sessions();
        let seen = sessions.get_mut(&ticket.session)?;
        if seen.in_flight.get(&ticket.request)?.token != ticket.token {
            return None;
        }
        then(seen)
    }

    fn request<'a>(seen: &'a mut Seen, ticket: &Ticket) -> &'a mut InFlight {
        seen.in_flight
            .get_mut(&ticket.request)
            .expect("checked by with()")
    }

    /// An answer stream of the request is being sent: the generation it belongs to.
    fn attach(&self, ticket: &Ticket) -> Option<u64> {
        self.with(ticket, |seen| {
            let r = Self::request(seen, ticket);
            r.readers += 1;
            Some(r.generation)
        })
    }

    fn numbered(&self, ticket: &Ticket, stream: u64) {
        self.with(ticket, |seen| {
            Self::request(seen, ticket).stream = Some(stream);
            Some(())
        });
    }

    /// The request is over: answered.
    fn end(&self, ticket: &Ticket) {
        self.end_if(ticket, |_| true);
    }

    /// Ends the request if `over` says so, checked under the same lock; whether it did.
    fn end_if(&self, ticket: &Ticket, over: impl FnOnce(&InFlight) -> bool) -> bool {
        self.with(ticket, |seen| {
            if !over(Self::request(seen, ticket)) {
                return None;
            }
            seen.in_flight.remove(&ticket.request);
            seen.last_used = Some(Instant::now());
            Some(())
        })
        .is_some()
    }

    /// An answer stream ended after `yielded` events. The newest one ends after the
    /// answer. An older one ends when a resume took its place; a resume's that sent
    /// nothing was refused by rmcp (which answers a resume it cannot serve with an
    /// empty stream): either leaves the request with one stream fewer.
    fn closed(self: &Arc<Self>, ticket: &Ticket, generation: u64, resume: bool, yielded: bool) {
        let newest = self
            .with(ticket, |seen| {
                Some(Self::request(seen, ticket).generation == generation)
            })
            .unwrap_or(false);
        let refused = resume && !yielded;
        if newest && !refused {
            self.end(ticket);
        } else {
            self.dropped(ticket, true);
        }
    }

    /// An answer stream of the request was dropped unfinished (`was_read`: after
    /// it was attached), or its HTTP request went before it was answered. With no
    /// stream left, unless one is resumed within the grace, the request is given up
    /// and cancelled. One never numbered (its priming event not sent) cannot be
    /// resumed, and is cancelled at once.
    fn dropped(self: &Arc<Self>, ticket: &Ticket, was_read: bool) {
        let waiting = self.with(ticket, |seen| {
            let r = Self::request(seen, ticket);
            if was_read {
                r.readers = r.readers.saturating_sub(1);
            }
            (r.readers == 0).then(|| r.stream.map(|_| r.generation))
        });
        let Some(generation) = waiting else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (me, ticket) = (self.clone(), ticket.clone());
        runtime.spawn(async move {
            if generation.is_some() {
                tokio::time::sleep(me.grace).await;
            }
            // Checked and taken out under one lock: a resume is either before (and
            // keeps it) or after (and finds it gone).
            let given_up = me.end_if(&ticket, |r| {
                r.readers == 0 && generation.is_none_or(|g| g == r.generation)
            });
            if given_up {
                me.cancel(&ticket.session, ticket.request).await;
            }
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
            // Marked under the lock that checked them: a request that comes while one
            // is closed is refused, never taken in to be cut off.
            let idle: Vec<SessionId> = self
                .sessions()
                .iter_mut()
                .filter(|(_, seen)| {
                    !seen.closing
                        && seen.in_flight.is_empty()
                        && seen
                            .last_used
                            .is_some_and(|t| t.elapsed() >= self.idle_timeout)
                })
                .map(|(id, seen)| {
                    seen.closing = true;
                    id.clone()
                })
                .collect();
            for id in idle {
                let _ = self.manager.close_session(&id).await;
                self.sessions().remove(&id);
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

/// The answer rmcp gives a request for a session it does not have.
fn session_gone() -> Response {
    Response::builder()
        .status(axum::http::StatusCode::NOT_FOUND)
        .body(Body::from("Not Found: Session not found"))
        .expect("a valid response")
}

/// JSON-RPC ids must be unique among a session's requests in flight: a second one
/// would get no answer of its own.
fn duplicate_id(id: RequestId) -> Response {
    let message =
        format!("Invalid request: a request with id {id} is still in flight in this session");
    crate::http::json_rpc_error_of(
        Some(id),
        axum::http::StatusCode::BAD_REQUEST,
        -32600,
        message,
    )
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
    let is_post = request.method() == Method::POST;
    let answering = match &session {
        None => Ok(None),
        Some(session) if is_post => match request.extensions().get::<PostedRequest>() {
            Some(PostedRequest(id)) => activity.begin(session, id.clone()).map(Some),
            None => activity.use_session(session, |_| None),
        },
        Some(session) => {
            match header_of(request.headers(), HEADER_LAST_EVENT_ID).and_then(stream_of_event_id) {
                Some(n) => activity.resume(session, n),
                None => activity.use_session(session, |_| None),
            }
        }
    };
    let answering = match answering {
        Ok(answering) => answering,
        Err(Refused::Closing) => return session_gone(),
        Err(Refused::DuplicateId(id)) => return duplicate_id(id),
    };
    // Armed before rmcp answers: a client gone before the answer's headers drops this
    // future, and the guard with it.
    let guard = answering.map(|ticket| AnswerGuard {
        activity: activity.clone(),
        ticket,
        generation: None,
        resume: !is_post,
        done: false,
    });
    let response = next.run(request).await;
    if session.is_none() {
        // The answer to an `initialize` names the session it made.
        if let Some(made) = header_of(response.headers(), HEADER_SESSION_ID) {
            let _ = activity.use_session(&Arc::from(made), |_| ());
        }
        return response;
    }
    let Some(mut guard) = guard else {
        return response;
    };
    let streaming = response.status().is_success()
        && header_of(response.headers(), header::CONTENT_TYPE.as_str())
            .is_some_and(|t| t.starts_with("text/event-stream"));
    if !streaming {
        if is_post {
            // Answered whole (JSON, or refused): nothing is in flight.
            guard.done = true;
            activity.end(&guard.ticket);
        }
        // A resume refused: dropping the guard says the request has no new stream.
        return response;
    }
    match activity.attach(&guard.ticket) {
        Some(generation) => guard.generation = Some(generation),
        // Over already (given up, or its id reused): nothing to watch.
        None => guard.done = true,
    }
    response.map(|body| {
        Body::from_stream(Watched {
            inner: body.into_data_stream(),
            guard,
            numbered: false,
            yielded: false,
        })
    })
}

/// Drops with the request's future or with its answer's body: unfinished, it
/// reports the stream dropped.
struct AnswerGuard {
    activity: Arc<Activity>,
    ticket: Ticket,
    /// Set once the answer stream is attached.
    generation: Option<u64>,
    /// A GET resuming the request's stream, not the POST that asked it.
    resume: bool,
    done: bool,
}

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        if !self.done {
            self.activity
                .dropped(&self.ticket, self.generation.is_some());
        }
    }
}

struct Watched {
    inner: BodyDataStream,
    guard: AnswerGuard,
    numbered: bool,
    yielded: bool,
}

impl Stream for Watched {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = &mut *self;
        let polled = Pin::new(&mut me.inner).poll_next(cx);
        let guard = &mut me.guard;
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                me.yielded = true;
                if !me.numbered {
                    if let Some(n) = stream_of_sse(chunk) {
                        guard.activity.numbered(&guard.ticket, n);
                        me.numbered = true;
                    }
                }
            }
            Poll::Ready(None) if !guard.done => {
                guard.done = true;
                if let Some(generation) = guard.generation {
                    guard
                        .activity
                        .closed(&guard.ticket, generation, guard.resume, me.yielded);
                }
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
