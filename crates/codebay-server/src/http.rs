//! `codebay serve`: MCP Streamable HTTP at `/mcp`, `GET /healthz`, `GET /metrics`.
//! Every request but `/healthz` needs the key when there is one; the body limit and
//! the `Host` and `Origin` checks are rmcp's own (413, 403).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as Extract};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::activity::{watch, Activity, PostedRequest, RESUME_GRACE};
use crate::handler::Handler;
use crate::sessions::State;
use crate::{SandboxFactory, ServeOptions};
use rmcp::transport::common::http_header::HEADER_SESSION_ID;

/// How long a stop waits for connections to finish before it drops them.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How long sent data may go unacknowledged before the kernel drops a connection.
const UNACKED: Duration = Duration::from_secs(30);

/// How long a stop waits for the answers of the runs it stopped to be sent.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// How much of a body past the limit is read and dropped so that its client gets the 413.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// A running server. Dropping it does not stop it: call [`HttpServer::shutdown`].
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: CancellationToken,
    state: Arc<State>,
    activity: Arc<Activity>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl HttpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://host:port/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.local_addr)
    }

    pub fn sessions_open(&self) -> usize {
        self.state.sessions_open()
    }

    pub fn max_sessions(&self) -> usize {
        self.state.max_sessions
    }

    /// Stops every run and sends its (interrupted) answer, stops accepting, closes
    /// every sandbox, and resolves once the listener is closed (within a few
    /// seconds). Idempotent.
    pub async fn shutdown(&self) {
        // Before the streams are cut: a client gets its run's answer, not a stream
        // that ends without one (which an SDK waits on until its request timeout).
        self.state.stop_runs();
        self.activity.settled(ANSWER_GRACE).await;
        self.stop.cancel();
        self.state.close_all().await;
        if let Some(mut task) = self.task.lock().await.take() {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

#[derive(Clone)]
struct Web {
    state: Arc<State>,
    key: Option<Arc<[u8]>>,
}

/// Binds and starts serving. Refuses a non-loopback address without a key.
pub async fn serve_http(
    options: ServeOptions,
    factory: Arc<dyn SandboxFactory>,
) -> Result<HttpServer, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&options.listen)
        .await
        .map_err(|e| format!("cannot resolve the listen address {}: {e}", options.listen))?
        .collect();
    let loopback = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
    if !loopback && options.api_key.is_none() {
        return Err(format!(
            "refusing to listen on {} without an API key: anyone who can reach it could run code. \
             Give --api-key-file or CODEBAY_API_KEY, or listen on 127.0.0.1",
            options.listen
        ));
    }
    let listener = tokio::net::TcpListener::bind(addrs.as_slice())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let max_sessions = options
        .max_sessions
        .unwrap_or_else(|| crate::default_max_sessions(&codebay_core::SessionOptions::default()))
        .max(1);
    let state = State::new(factory, max_sessions);
    let stop = CancellationToken::new();

    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop.child_token())
        .with_max_request_body_bytes(options.max_body)
        .with_allowed_origins(allowed_origins(&options, local_addr))
        .enforce_origin_validation();
    config = if loopback {
        let mut hosts = config.allowed_hosts.clone();
        hosts.extend(options.allowed_hosts.iter().cloned());
        config.with_allowed_hosts(hosts)
    } else if options.allowed_hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(options.allowed_hosts.clone())
    };
    let mut manager = LocalSessionManager::default();
    // Idle sessions are reaped by `Activity`, which knows a run in flight is no idleness.
    manager.session_config.keep_alive = None;
    let manager = Arc::new(manager);
    let activity = Activity::new(manager.clone(), options.idle_timeout, RESUME_GRACE);
    tokio::spawn(activity.clone().reap(stop.clone()));
    let mcp = {
        let state = state.clone();
        StreamableHttpService::new(move || Ok(Handler::new(state.clone())), manager, config)
    };
    let web = Web {
        state: state.clone(),
        key: options.api_key.as_ref().map(|k| Arc::from(k.as_bytes())),
    };
    let mcp = Router::new()
        .route_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(activity.clone(), watch))
        .layer(middleware::from_fn_with_state(
            Bodies::new(options.max_body),
            check_json_rpc,
        ));
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .merge(mcp)
        .layer(middleware::from_fn_with_state(web.clone(), authorize));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .with_state(web);
    let until = stop.clone();
    let task = tokio::spawn(accept(listener, app, until));
    Ok(HttpServer {
        local_addr,
        stop,
        state,
        activity,
        task: tokio::sync::Mutex::new(Some(task)),
    })
}

/// How long a client may take to send a request's headers. Without it, connections
/// trickling a header line now and then (slowloris) held their descriptors for as
/// long as they liked: 21,000 of them took the server to its open-file limit.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// The connections served at once: three quarters of the open-file limit, so that
/// the sandboxes' pipes and files always have the rest. Past it, new connections wait
/// in the listen backlog until one ends.
fn max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as usize
    } else {
        1024
    };
    (soft / 4 * 3).max(64)
}

/// Serves `app` on each connection accepted until `stop`, then waits for the
/// connections to end (the caller bounds that wait).
async fn accept(listener: tokio::net::TcpListener, app: Router, stop: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections()));
    let timer = hyper_util::rt::TokioTimer::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = stop.cancelled() => break,
        };
        let mut tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // Out of descriptors or the like: the next accept may work.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        tune(&mut tcp);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(timer.clone())
            .header_read_timeout(HEADER_DEADLINE)
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn tune(tcp: &mut tokio::net::TcpStream) {
    // Answers and notices are small writes: without TCP_NODELAY each waits for the
    // peer's delayed ACK (40 ms on Linux) behind the one before it.
    let _ = tcp.set_nodelay(true);
    // A peer that vanished without a FIN (a partition, a host gone) leaves its SSE
    // keep-alives unacknowledged: past UNACKED the kernel drops the connection, its
    // answer streams drop, and `Activity` cancels their runs.
    let _ = socket2::SockRef::from(&*tcp).set_tcp_user_timeout(Some(UNACKED));
}

/// Loopback origins on any port, the server's own address, and what was given.
fn allowed_origins(options: &ServeOptions, local: SocketAddr) -> Vec<String> {
    let mut origins: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .flat_map(|h| [format!("http://{h}:*"), format!("https://{h}:*")])
        .collect();
    if !local.ip().is_unspecified() {
        origins.push(format!("http://{local}"));
    }
    origins.extend(options.allowed_origins.iter().cloned());
    origins
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(Extract(web): Extract<Web>) -> Response {
    let text = web.state.metrics.render(&web.state.gauges());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn authorize(Extract(web): Extract<Web>, request: Request, next: Next) -> Response {
    let Some(key) = &web.key else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(given) if same_key(given.as_bytes(), key) => next.run(request).await,
        _ => Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Bearer")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Unauthorized: this server needs Authorization: Bearer <its API key>"}}"#,
            ))
            .expect("a valid response"),
    }
}

fn json_rpc_error(status: StatusCode, code: i32, message: String) -> Response {
    json_rpc_error_of(None, status, code, message)
}

/// A JSON-RPC error answer, to the request `id` (`null` when it is not known).
pub(crate) fn json_rpc_error_of(
    id: Option<rmcp::model::RequestId>,
    status: StatusCode,
    code: i32,
    message: String,
) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

/// Bodies up to this size are read without counting against [`Bodies`]' budget: what
/// they hold is bounded by the connections a client may open.
const SMALL_BODY: usize = 64 * 1024;

/// How long a request's body may take to arrive: an upload that stalls holds its
/// buffer, and is dropped at this deadline.
const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// The POST bodies being read and parsed at once. Their bytes past [`SMALL_BODY`]
/// draw on a budget of twice the body limit: a client that starts large uploads and
/// never finishes them gets 503s instead of the server's memory.
#[derive(Clone)]
struct Bodies {
    max: usize,
    budget: Arc<tokio::sync::Semaphore>,
    /// One large body is parsed at a time (here, then by rmcp): a JSON value takes
    /// many times its text's bytes (a 16 MiB `[0,0,…]` about 1.9 GB).
    parsing: Arc<tokio::sync::Semaphore>,
}

impl Bodies {
    fn new(max: usize) -> Bodies {
        let budget = max
            .saturating_mul(2)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Bodies {
            max,
            budget: Arc::new(tokio::sync::Semaphore::new(budget)),
            parsing: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// Just enough of a JSON-RPC message to route it (the rest is skipped, not built).
#[derive(serde::Deserialize)]
struct Envelope {
    method: Option<String>,
}

enum BodyRefused {
    TooLarge,
    Busy,
    Slow,
    Broken,
}

/// A POST body that is not JSON-RPC is answered as JSON-RPC says (`-32700` parse
/// error, `-32600` invalid request), not with rmcp's plain text. The body is read
/// whole first, so the 413 of one too large reaches the client before the
/// connection closes.
async fn check_json_rpc(
    Extract(bodies): Extract<Bodies>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let max_body = bodies.max;
    let (mut parts, body) = request.into_parts();
    let read = tokio::time::timeout(BODY_DEADLINE, read_body(body, &bodies)).await;
    // Held until rmcp has parsed the body too (it has, once it answers the headers).
    let (bytes, _held) = match read.unwrap_or(Err(BodyRefused::Slow)) {
        Ok(read) => read,
        Err(BodyRefused::TooLarge) => {
            return json_rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                -32600,
                format!("the request body is larger than this server's limit of {max_body} bytes (--max-body)"),
            )
        }
        Err(BodyRefused::Busy) => {
            return json_rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                -32001,
                "the server is reading as many large requests as it takes at once; try again".into(),
            )
        }
        Err(BodyRefused::Slow) => {
            return json_rpc_error(
                StatusCode::REQUEST_TIMEOUT,
                -32600,
                format!("the request body did not arrive within {} s", BODY_DEADLINE.as_secs()),
            )
        }
        Err(BodyRefused::Broken) => {
            return json_rpc_error(StatusCode::BAD_REQUEST, -32600, "the request body broke off".into())
        }
    };
    // Outside a session only an `initialize` is taken: refused before a full parse.
    let in_session = parts.headers.contains_key(HEADER_SESSION_ID);
    if !in_session {
        if let Ok(Envelope {
            method: Some(method),
        }) = serde_json::from_slice(&bytes)
        {
            if method != "initialize" {
                return json_rpc_error(
                    StatusCode::BAD_REQUEST,
                    -32600,
                    format!(
                        "Bad Request: {method} needs the Mcp-Session-Id of an initialized session"
                    ),
                );
            }
        }
    }
    let _parsing = if bytes.len() > SMALL_BODY {
        Some(
            bodies
                .parsing
                .clone()
                .acquire_owned()
                .await
                .expect("never closed"),
        )
    } else {
        None
    };
    // Off the async threads: a large body takes seconds to parse.
    let (bytes, parsed) = if bytes.len() > SMALL_BODY {
        tokio::task::spawn_blocking(move || {
            let parsed = serde_json::from_slice::<rmcp::model::ClientJsonRpcMessage>(&bytes);
            (bytes, parsed)
        })
        .await
        .expect("parsing does not panic")
    } else {
        let parsed = serde_json::from_slice::<rmcp::model::ClientJsonRpcMessage>(&bytes);
        (bytes, parsed)
    };
    // One parse: a syntax error is a parse error, anything else not MCP's.
    match parsed {
        Err(e) if e.is_syntax() || e.is_eof() => {
            return json_rpc_error(StatusCode::BAD_REQUEST, -32700, format!("Parse error: {e}"))
        }
        Err(e) => {
            return json_rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                format!("Invalid request: not a JSON-RPC message of MCP: {e}"),
            )
        }
        Ok(rmcp::model::JsonRpcMessage::Request(posted)) => {
            parts.extensions.insert(PostedRequest(posted.id));
        }
        Ok(_) => {}
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The body, and the budget its bytes past [`SMALL_BODY`] hold. What is past the
/// limit is still read (and dropped) up to [`DRAIN_CAP`] more: a server that stops
/// reading mid-upload closes the connection under the client, which then sees EPIPE
/// instead of the 413.
async fn read_body(
    body: Body,
    bodies: &Bodies,
) -> Result<(axum::body::Bytes, Option<tokio::sync::OwnedSemaphorePermit>), BodyRefused> {
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyRefused::Broken)?;
        seen = seen.saturating_add(chunk.len());
        if seen > bodies.max.saturating_add(DRAIN_CAP) {
            return Err(BodyRefused::TooLarge);
        }
        if seen > bodies.max {
            // Past the limit nothing more is kept; what was is let go now.
            kept = Vec::new();
            held = None;
            continue;
        }
        let over = seen.saturating_sub(SMALL_BODY).min(chunk.len());
        if over > 0 {
            let permit = bodies
                .budget
                .clone()
                .try_acquire_many_owned(over as u32)
                .map_err(|_| BodyRefused::Busy)?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
        }
        kept.extend_from_slice(&chunk);
    }
    if seen > bodies.max {
        return Err(BodyRefused::TooLarge);
    }
    Ok((kept.into(), held))
}

/// Compares in time that depends on the lengths only, never on where they differ.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut diff = (given.len() != key.len()) as u8;
    for (i, k) in key.iter().enumerate() {
        diff |= k ^ given.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_are_tuned() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        tune(&mut accepted);
        assert!(accepted.nodelay().unwrap());
        let sock = socket2::SockRef::from(&accepted);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(UNACKED));
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same_key(b"abc", b"abc"));
        assert!(!same_key(b"abd", b"abc"));
        assert!(!same_key(b"ab", b"abc"));
        assert!(!same_key(b"abcd", b"abc"));
        assert!(!same_key(b"", b"abc"));
    }
}
