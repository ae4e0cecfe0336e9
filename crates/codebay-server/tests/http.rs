//! The HTTP side with a fake sandbox: no helper, no kernel features needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use codebay_core::{BoxFuture, McpToolResult, Session};
use codebay_server::{serve_http, HttpServer, SandboxFactory, ServeOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fake;

impl Session for Fake {
    fn session_id(&self) -> String {
        "fake".into()
    }
    fn api_key(&self) -> String {
        String::new()
    }
    fn call_tool(&self, name: &str, _args: Value) -> BoxFuture<Result<McpToolResult, String>> {
        let data = format!(
            "{{\"stdout\":[\"{name}\\n\"],\"stderr\":[],\"result\":[],\"executionError\":\"\"}}"
        );
        Box::pin(async move { Ok(McpToolResult::ok(data, "r".into())) })
    }
}

#[derive(Default)]
struct Counter(AtomicUsize);

#[derive(Default, Clone)]
struct Counting(Arc<Counter>);

impl SandboxFactory for Counting {
    fn create(&self) -> BoxFuture<Result<Arc<dyn Session>, String>> {
        self.0 .0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Arc::new(Fake) as Arc<dyn Session>) })
    }
}

async fn http(addr: std::net::SocketAddr, request: String) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn post(body: &str, extra: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_limits_and_sessions() {
    let counting = Counting::default();
    let server = serve_http(
        ServeOptions {
            listen: "127.0.0.1:0".into(),
            api_key: Some("k3y".into()),
            max_sessions: Some(1),
            max_body: 1024,
            ..Default::default()
        },
        Arc::new(counting.clone()),
    )
    .await
    .unwrap();
    let addr = server.local_addr();

    let no_key = http(addr, post(INIT, "")).await;
    assert!(no_key.starts_with("HTTP/1.1 401"), "{no_key}");
    assert!(!no_key.contains("k3y"));
    let wrong = http(addr, post(INIT, "Authorization: Bearer k3z\r\n")).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert_eq!(counting.0 .0.load(Ordering::SeqCst), 0, "no sandbox made");

    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
    let too_big = http(addr, post(&big, "Authorization: Bearer k3y\r\n")).await;
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");

    let malformed = http(
        addr,
        post(
            "{\"jsonrpc\": \"2.0\", \"id",
            "Authorization: Bearer k3y\r\n",
        ),
    )
    .await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    assert!(malformed.contains("-32700"), "{malformed}");

    let health = http(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let ok = http(addr, post(INIT, "Authorization: Bearer k3y\r\n")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.to_lowercase().contains("mcp-session-id"), "{ok}");
    assert_eq!(counting.0 .0.load(Ordering::SeqCst), 1);
    assert_eq!(server.sessions_open(), 1);

    let full = http(addr, post(INIT, "Authorization: Bearer k3y\r\n")).await;
    assert!(full.contains("maximum of 1 sessions"), "{full}");
    assert_eq!(counting.0 .0.load(Ordering::SeqCst), 1);

    let metrics = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k3y\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(metrics.contains("\ncodebay_sessions_open 1\n"), "{metrics}");
    assert!(
        metrics.contains("codebay_sessions_refused_total 1\n"),
        "{metrics}"
    );

    server.shutdown().await;
    assert_eq!(server.sessions_open(), 0);
}

/// A server of fake sandboxes listening on `listen`.
async fn serve_on(listen: &str, max_body: Option<usize>) -> Result<HttpServer, String> {
    let mut options = ServeOptions {
        listen: listen.into(),
        ..Default::default()
    };
    options.max_body = max_body.unwrap_or(options.max_body);
    serve_http(options, Arc::new(Counting::default())).await
}

#[tokio::test]
async fn a_public_bind_needs_a_key() {
    let err = serve_on("0.0.0.0:0", None).await.err().unwrap();
    assert!(err.contains("without an API key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_large_uploads_get_503_not_the_memory() {
    const MAX: usize = 1024 * 1024;
    let server = serve_on("127.0.0.1:0", Some(MAX)).await.unwrap();
    let addr = server.local_addr();
    // Each says MAX and sends 900 KiB, then stalls: the budget (2 x MAX, past the
    // first 64 KiB of each) holds two, and no more.
    let part = vec![b' '; 900 * 1024];
    let mut stalled = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {MAX}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&part).await.unwrap();
        let mut buf = [0u8; 512];
        match tokio::time::timeout(std::time::Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                refused = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
            _ => stalled.push(stream),
        }
    }
    let refused = refused.expect("a stalled upload past the budget is refused");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert_eq!(stalled.len(), 2, "two fit in the budget");
    // Small requests are not held up by it.
    let ok = http(addr, post(INIT, "")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_off() {
    let server = serve_on("127.0.0.1:0", None).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // One more header line every 2 s, never the end of the headers.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            if slow
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(std::time::Duration::from_millis(10), slow.read(&mut buf))
                .await
            {
                Ok(Ok(_)) | Ok(Err(_)) => return, // answered (408) or closed
                Err(_) => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), trickle)
        .await
        .expect("the connection was cut off");
    let health = http(
        server.local_addr(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    server.shutdown().await;
}
