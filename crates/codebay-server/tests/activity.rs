//! A client that disconnects mid-run, over raw TCP against a fake sandbox whose
//! `block-*` runs last until cancelled: a run is stopped unless the client resumes its
//! stream within the grace (before or after the server noticed the drop; a resume
//! rmcp refuses does not count), and the
//! session goes on serving. A run in flight keeps its session from the idle reaper;
//! once nothing is in flight, it is reaped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use codebay_core::{
    BoxFuture, CodeExecutionResult, McpToolResult, RunControl, RunRequest, Session,
};
use codebay_server::activity::RESUME_GRACE;
use codebay_server::{serve_http, HttpServer, SandboxFactory, ServeOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The codes of the runs started, and of those cancelled.
#[derive(Default)]
struct Runs {
    started: Mutex<Vec<String>>,
    cancelled: Mutex<Vec<String>>,
}

impl Runs {
    fn started(&self, code: &str) -> bool {
        self.started.lock().unwrap().iter().any(|c| c == code)
    }
    fn cancelled(&self, code: &str) -> bool {
        self.cancelled.lock().unwrap().iter().any(|c| c == code)
    }
}

/// `block-*` runs until cancelled; anything else answers at once.
struct Blocking(Arc<Runs>);

impl Session for Blocking {
    fn session_id(&self) -> String {
        "blocking".into()
    }
    fn api_key(&self) -> String {
        String::new()
    }
    fn call_tool(&self, _name: &str, _args: Value) -> BoxFuture<Result<McpToolResult, String>> {
        Box::pin(async { Err("not used".into()) })
    }
    fn run(&self, request: RunRequest, control: RunControl) -> BoxFuture<CodeExecutionResult> {
        let runs = self.0.clone();
        Box::pin(async move {
            if !request.code.starts_with("block-") {
                let data = r#"{"stdout":["quick\n"],"stderr":[],"result":[],"executionError":""}"#;
                return CodeExecutionResult::from_tool_result(McpToolResult::ok(
                    data.into(),
                    "r".into(),
                ));
            }
            runs.started.lock().unwrap().push(request.code.clone());
            control.cancel.cancelled().await;
            runs.cancelled.lock().unwrap().push(request.code);
            CodeExecutionResult::aborted("r".into(), true)
        })
    }
}

struct Factory(Arc<Runs>);

impl SandboxFactory for Factory {
    fn create(&self) -> BoxFuture<Result<Arc<dyn Session>, String>> {
        let session: Arc<dyn Session> = Arc::new(Blocking(self.0.clone()));
        Box::pin(async move { Ok(session) })
    }
}

fn request(method: &str, session: Option<&str>, extra: &str, body: &str) -> String {
    let session = session.map_or(String::new(), |s| format!("Mcp-Session-Id: {s}\r\n"));
    format!(
        "{method} /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-06-18\r\n\
         {session}{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads until `needle` has been seen; what was read.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await;
        let text = String::from_utf8_lossy(&seen);
        let n = read
            .unwrap_or_else(|_| panic!("no {needle:?} in 30 s: {text}"))
            .unwrap();
        assert!(n > 0, "closed before {needle:?}: {text}");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

async fn open(addr: std::net::SocketAddr, text: String) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(text.as_bytes()).await.unwrap();
    stream
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

fn call(id: u32, code: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"run_code","arguments":{{"code":"{code}","language":"python"}}}}}}"#
    )
}

/// The stream id of the priming event (`id: 0/<stream>`).
fn stream_id(sse: &str) -> String {
    let line = sse
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap_or_else(|| panic!("no event id in {sse}"));
    line.trim().to_owned()
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("waited 30 s for {what}");
}

const IDLE: Duration = Duration::from_secs(5);

/// One client's view: the server's address and the session it made.
#[derive(Clone)]
struct Client {
    addr: std::net::SocketAddr,
    session: String,
    runs: Arc<Runs>,
}

impl Client {
    async fn post(&self, id: u32, code: &str) -> TcpStream {
        open(
            self.addr,
            request("POST", Some(&self.session), "", &call(id, code)),
        )
        .await
    }

    /// Starts a blocking run; its answer stream, primed, and the stream's event id.
    async fn start(&self, id: u32, code: &str) -> (TcpStream, String) {
        let mut stream = self.post(id, code).await;
        let primed = read_until(&mut stream, "id:").await;
        until(&format!("{code} to start"), || self.runs.started(code)).await;
        (stream, stream_id(&primed))
    }

    /// A GET resuming from event `from`, sent.
    async fn get_from(&self, from: &str) -> TcpStream {
        let resume = format!("Last-Event-Id: {from}\r\n");
        open(self.addr, request("GET", Some(&self.session), &resume, "")).await
    }

    async fn resume(&self, from: &str) -> TcpStream {
        let mut stream = self.get_from(from).await;
        read_until(&mut stream, "HTTP/1.1 200").await;
        stream
    }
}

async fn start_session(server: &HttpServer, runs: Arc<Runs>) -> Client {
    let addr = server.local_addr();
    let mut init = open(addr, request("POST", None, "", INIT)).await;
    let head = read_until(&mut init, "\"result\"").await;
    let session = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("mcp-session-id"))
        })
        .map(|(_, v)| v.trim().to_owned())
        .expect("a session id");
    let mut ready = open(
        addr,
        request(
            "POST",
            Some(&session),
            "",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ),
    )
    .await;
    read_until(&mut ready, "HTTP/1.1 202").await;
    Client {
        addr,
        session,
        runs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_run_is_cancelled_unless_resumed_and_a_run_keeps_its_session() {
    assert!(
        RESUME_GRACE > IDLE,
        "the waits below outlast the idle timeout"
    );
    let runs = Arc::new(Runs::default());
    let server = serve_http(
        ServeOptions {
            listen: "127.0.0.1:0".into(),
            idle_timeout: IDLE,
            ..Default::default()
        },
        Arc::new(Factory(runs.clone())),
    )
    .await
    .unwrap();
    let client = start_session(&server, runs.clone()).await;
    let past_grace = RESUME_GRACE + Duration::from_secs(2);

    // In one session at once: four runs, four ways of losing a stream.
    let dropped = {
        let client = client.clone();
        async move {
            // Dropped, never resumed: cancelled, and the session serves its next call.
            let (stream, _) = client.start(2, "block-dropped").await;
            drop(stream);
            until("block-dropped to be cancelled", || {
                client.runs.cancelled("block-dropped")
            })
            .await;
            let mut next = client.post(3, "print(1)").await;
            let answer = read_until(&mut next, "quick").await;
            assert!(answer.contains("\"id\":3"), "{answer}");
        }
    };
    let resumed = {
        let client = client.clone();
        async move {
            // Dropped, then resumed in time: the run goes on past the grace; the
            // resumed stream dropped in turn, it is cancelled.
            let (stream, from) = client.start(4, "block-resumed").await;
            drop(stream);
            let resumed = client.resume(&from).await;
            tokio::time::sleep(past_grace).await;
            assert!(
                !client.runs.cancelled("block-resumed"),
                "a resumed run is not cancelled"
            );
            drop(resumed);
            until("block-resumed to be cancelled", || {
                client.runs.cancelled("block-resumed")
            })
            .await;
        }
    };
    let superseded = {
        let client = client.clone();
        let server = &server;
        async move {
            // Resumed while the first stream is still open, which then ends: the
            // resume, not the end of the old stream, is what counts.
            let (mut first, from) = client.start(5, "block-superseded").await;
            let resumed = client.resume(&from).await;
            // Its chunked body ends: the last chunk, of length 0.
            read_until(&mut first, "0\r\n\r\n").await;
            tokio::time::sleep(past_grace).await;
            assert!(
                !client.runs.cancelled("block-superseded"),
                "a run resumed before its old stream ended is not cancelled"
            );
            drop((first, resumed));
            until("block-superseded to be cancelled", || {
                client.runs.cancelled("block-superseded")
            })
            .await;
            // By the grace timer, not by the session's end: the run was still tracked.
            assert_eq!(
                server.sessions_open(),
                1,
                "cancelled while its session is open"
            );
        }
    };
    let refused = {
        let client = client.clone();
        let server = &server;
        async move {
            // Dropped, then a resume rmcp cannot serve (it answers an empty stream): the
            // run is cancelled after the grace all the same, by the timer.
            let (stream, from) = client.start(7, "block-refused").await;
            drop(stream);
            let stream = from.split_once('/').expect("index/stream").1;
            let mut refused = client.get_from(&format!("x/{stream}")).await;
            let empty = read_until(&mut refused, "\r\n0\r\n\r\n").await;
            assert!(empty.starts_with("HTTP/1.1 200"), "{empty}");
            until("block-refused to be cancelled", || {
                client.runs.cancelled("block-refused")
            })
            .await;
            assert_eq!(
                server.sessions_open(),
                1,
                "cancelled while its session is open"
            );
        }
    };
    let idle_check = async {
        // Nothing was answered for longer than the idle timeout, but runs were in flight.
        until("the blocking runs to start", || {
            runs.started("block-resumed") && runs.started("block-superseded")
        })
        .await;
        tokio::time::sleep(past_grace).await;
        assert_eq!(server.sessions_open(), 1, "a run in flight is no idleness");
    };
    tokio::join!(dropped, resumed, superseded, refused, idle_check);

    until("the idle session to be reaped", || {
        server.sessions_open() == 0
    })
    .await;
    let mut gone = client.post(6, "print(1)").await;
    let answer = read_until(&mut gone, "\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_request_with_an_id_in_flight_is_refused() {
    let runs = Arc::new(Runs::default());
    let server = serve_http(
        ServeOptions {
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        },
        Arc::new(Factory(runs.clone())),
    )
    .await
    .unwrap();
    let client = start_session(&server, runs.clone()).await;
    let (first, _) = client.start(9, "block-first").await;
    let mut second = client.post(9, "print(1)").await;
    let refused = read_until(&mut second, "in flight").await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.contains("\"id\":9"), "{refused}");
    assert!(!runs.cancelled("block-first"), "the first is untouched");
    drop(first);
    until("block-first to be cancelled", || {
        runs.cancelled("block-first")
    })
    .await;
    let mut again = client.post(9, "print(1)").await;
    read_until(&mut again, "quick").await;
    server.shutdown().await;
}
