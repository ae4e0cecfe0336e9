//! `AgentBaySession` against a loopback HTTP server that answers as AgentBay's gateway
//! does: what is sent (query, headers, form) and how each answer and failure comes back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codebay_core::{Code, ErrorCode, RunOptions, Session};
use codebay_remote::agentbay::{
    options::Environment, AgentBaySession, AttachOptions, CreateOptions,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    form: Vec<(String, String)>,
}

impl Request {
    fn field(&self, name: &str) -> &str {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// What the server does with a request: answer with a status and a body, or never.
enum Reply {
    Answer(u16, String),
    Never,
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

struct Gateway {
    endpoint: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

async fn gateway(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (handler, log) = (handler.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    let n = stream.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap().split(' ');
                let (method, target) = (
                    first.next().unwrap().to_owned(),
                    first.next().unwrap().to_owned(),
                );
                let headers: BTreeMap<String, String> = lines
                    .filter_map(|l| l.split_once(": "))
                    .map(|(k, v)| (k.to_lowercase(), v.to_owned()))
                    .collect();
                let length: usize = headers
                    .get("content-length")
                    .map_or(0, |l| l.parse().unwrap());
                while buf.len() < head_end + length {
                    let n = stream.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let request = Request {
                    method,
                    path: path.to_owned(),
                    query: url::form_urlencoded::parse(query.as_bytes())
                        .into_owned()
                        .collect(),
                    headers,
                    form: url::form_urlencoded::parse(&buf[head_end..head_end + length])
                        .into_owned()
                        .collect(),
                };
                log.lock().unwrap().push(request.clone());
                match handler(&request) {
                    Reply::Never => tokio::time::sleep(Duration::from_secs(3600)).await,
                    Reply::Answer(status, body) => {
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                    }
                }
            });
        }
    });
    Gateway { endpoint, seen }
}

/// The gateway's answers for a working cloud: a session, a run that printed, a release.
fn cloud(request: &Request) -> Reply {
    let answer = match request.query["Action"].as_str() {
        "CreateMcpSession" => json!({"RequestId": "r-create", "Success": true, "Code": "ok",
            "Data": {"SessionId": "s-42", "ResourceUrl": "https://example.invalid/s-42", "Success": true}}),
        "CallMcpTool" => {
            let args: Value = serde_json::from_str(request.field("Args")).unwrap();
            let text =
                json!({"stdout": [format!("{}\n", args["code"].as_str().unwrap())], "stderr": [],
                "result": [], "executionError": "", "executionTime": 0.01, "executionCount": 1})
                .to_string();
            json!({"RequestId": "r-run", "Success": true, "Data": {"content": [{"type": "text", "text": text}], "isError": false}})
        }
        "ReleaseMcpSession" => json!({"RequestId": "r-release", "Success": true}),
        other => panic!("unexpected action {other}"),
    };
    Reply::Answer(200, answer.to_string())
}

fn no_env() -> impl Fn(&str) -> Option<String> {
    |_| None
}

fn options(endpoint: &str, extra: Value) -> CreateOptions {
    let mut o = json!({"apiKey": "sk-test", "endpoint": endpoint, "timeoutMs": 2000});
    o.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let env: Environment = &no_env();
    CreateOptions::from_json(&o, env).unwrap()
}

fn check_common(r: &Request, action: &str) {
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
    let keys: Vec<&str> = r.query.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["Action", "Format", "SignatureNonce", "Timestamp", "Version"]
    );
    assert_eq!(r.query["Action"], action);
    assert_eq!(r.query["Format"], "json");
    assert_eq!(r.query["Version"], "2025-05-06");
    let ts = &r.query["Timestamp"];
    assert!(
        ts.len() == 20 && ts.ends_with('Z') && &ts[10..11] == "T",
        "{ts}"
    );
    assert_eq!(r.headers["x-acs-version"], "2025-05-06");
    assert_eq!(r.headers["x-acs-action"], action);
    assert_eq!(
        r.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(r.field("Authorization"), "Bearer sk-test");
}

#[tokio::test]
async fn a_create_run_run_delete_cycle_sends_what_the_sdk_sends() {
    let gw = gateway(cloud).await;
    let session =
        AgentBaySession::create(options(&gw.endpoint, json!({"labels": {"team": "data"}})))
            .await
            .unwrap();
    assert_eq!(session.id(), "s-42");
    let code = Code::new(Arc::new(session.clone()));
    for source in ["print(1)", "print(2)"] {
        let run = code
            .run_code(source.into(), "py", None, RunOptions::default())
            .unwrap()
            .await;
        assert!(run.success, "{run:?}");
        assert_eq!(run.request_id, "r-run");
        assert_eq!(run.logs.unwrap().stdout, [format!("{source}\n")]);
    }
    let deleted = session.delete().await;
    assert!(
        deleted.success && deleted.request_id == "r-release",
        "{deleted:?}"
    );
    // Idempotent: nothing more is sent.
    assert_eq!(session.delete().await, deleted);
    let after = session.call("run_code", &json!({"code": "1"}), false).await;
    assert!(
        after
            .error_message
            .starts_with("[ERR_CODEBAY_SESSION_CLOSED]"),
        "{after:?}"
    );

    let seen = gw.seen.lock().unwrap().clone();
    let actions: Vec<&str> = seen.iter().map(|r| r.query["Action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "CreateMcpSession",
            "CallMcpTool",
            "CallMcpTool",
            "ReleaseMcpSession"
        ]
    );
    for r in &seen {
        check_common(r, &r.query["Action"]);
    }
    let names = |r: &Request| r.form.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&seen[0]),
        ["Authorization", "ImageId", "Labels", "SdkStats"]
    );
    assert_eq!(seen[0].field("ImageId"), "code_latest");
    assert_eq!(seen[0].field("Labels"), r#"{"team":"data"}"#);
    assert_eq!(
        names(&seen[1]),
        [
            "Args",
            "Authorization",
            "AutoGenSession",
            "Name",
            "Server",
            "SessionId"
        ]
    );
    assert_eq!(
        seen[1].field("Args"),
        r#"{"code":"print(1)","language":"python","timeout_s":60}"#
    );
    assert_eq!(
        (
            seen[1].field("AutoGenSession"),
            seen[1].field("Name"),
            seen[1].field("Server"),
            seen[1].field("SessionId")
        ),
        ("false", "run_code", "", "s-42")
    );
    assert_eq!(names(&seen[3]), ["Authorization", "SessionId"]);
    let nonces: std::collections::BTreeSet<&str> = seen
        .iter()
        .map(|r| r.query["SignatureNonce"].as_str())
        .collect();
    assert_eq!(nonces.len(), 4);
}

#[tokio::test]
async fn refusals_and_broken_answers_are_failed_results_that_name_what_happened() {
    let cases: Vec<(u16, &str, &str, &str)> = vec![
        (
            200,
            r#"{"RequestId":"r-1","Success":false,"Code":"InvalidSession.NotFound","Message":"no such session"}"#,
            "[InvalidSession.NotFound] no such session",
            "r-1",
        ),
        (
            500,
            r#"{"RequestId":"r-2","Code":"InternalError","Message":"boom"}"#,
            "[InternalError] boom",
            "r-2",
        ),
        (500, "<html>oops</html>", "HTTP 500", ""),
        (502, "", "(empty)", ""),
        (200, "not json", "not a JSON answer", ""),
        (
            200,
            r#"{"RequestId":"r-3","Success":true,"Data":{"content":[{"text":"tool says no"}],"isError":true}}"#,
            "tool says no",
            "r-3",
        ),
    ];
    for (status, body, expect, request_id) in cases {
        let body = body.to_owned();
        let gw = gateway(move |_| Reply::Answer(status, body.clone())).await;
        let session = AgentBaySession::attach(attach(&gw.endpoint, 2000));
        let r = session
            .call("shell", &json!({"command": "ls"}), false)
            .await;
        assert!(!r.success, "{status}");
        assert!(
            r.error_message.contains(expect),
            "{status}: {:?} lacks {expect:?}",
            r.error_message
        );
        assert_eq!(r.request_id, request_id);
        assert!(!r.error_message.contains("sk-test"));
    }
}

fn attach(endpoint: &str, timeout_ms: u64) -> AttachOptions {
    let env: Environment = &no_env();
    AttachOptions::from_json(
        &json!({"apiKey": "sk-test", "sessionId": "s-1", "endpoint": endpoint, "timeoutMs": timeout_ms}),
        env,
    )
    .unwrap()
}

#[tokio::test]
async fn a_gateway_that_never_answers_times_out_at_timeout_ms_and_run_code_is_sent_once() {
    let gw = gateway(|_| Reply::Never).await;
    let session = AgentBaySession::attach(attach(&gw.endpoint, 300));
    let started = std::time::Instant::now();
    let run = Code::new(Arc::new(session))
        .run_code("1".into(), "python", Some(30.0), RunOptions::default())
        .unwrap()
        .await;
    assert!(!run.success);
    let message = run.error_message.unwrap();
    assert!(
        message.contains("did not answer CallMcpTool within 300 ms"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(gw.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_named() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let session = AgentBaySession::attach(attach(&endpoint, 2000));
    let r = session.call("run_code", &json!({"code": "1"}), false).await;
    assert!(
        r.error_message.contains("could not connect to AgentBay at"),
        "{}",
        r.error_message
    );
    assert!(
        r.error_message.to_lowercase().contains("refused"),
        "{}",
        r.error_message
    );
    let e = AgentBaySession::create(options(&endpoint, json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::RemoteFailed);
    assert!(e.message.contains("could not connect"), "{}", e.message);
}

/// A TCP server that counts connections and does `each` with them.
async fn tcp_server(each: fn(tokio::net::TcpStream) -> BoxedIo) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            *count.lock().unwrap() += 1;
            tokio::spawn(each(stream));
        }
    });
    (format!("https://127.0.0.1:{port}"), accepted)
}

type BoxedIo = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

#[tokio::test]
async fn a_cut_connection_is_retried_once_by_create_and_never_for_a_run() {
    let (endpoint, accepted) = tcp_server(|stream| Box::pin(async move { drop(stream) })).await;
    let e = AgentBaySession::create(options(&endpoint, json!({})))
        .await
        .unwrap_err();
    assert!(e.message.contains("could not connect"), "{}", e.message);
    assert_eq!(*accepted.lock().unwrap(), 2, "created with one retry");
    let session = AgentBaySession::attach(attach(&endpoint, 2000));
    let r = session.call("run_code", &json!({"code": "1"}), false).await;
    assert!(
        r.error_message.contains("could not connect"),
        "{}",
        r.error_message
    );
    assert_eq!(*accepted.lock().unwrap(), 3, "a run is never retried");
}

#[tokio::test]
async fn a_peer_that_does_not_speak_tls_is_a_tls_failure() {
    let (endpoint, _) = tcp_server(|mut stream| {
        Box::pin(async move {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
    })
    .await;
    let session = AgentBaySession::attach(attach(&endpoint, 2000));
    let r = session.call("run_code", &json!({"code": "1"}), false).await;
    assert!(!r.success);
    assert!(
        r.error_message
            .contains("TLS handshake with AgentBay at https://127.0.0.1:"),
        "{}",
        r.error_message
    );
}

#[tokio::test]
async fn create_failures_reject_with_the_cloud_s_words() {
    let cases = [
        (
            json!({"RequestId": "r-9", "Success": false, "Code": "InvalidApiKey", "Message": "bad key"}),
            "[InvalidApiKey] bad key (request id r-9)",
        ),
        (
            json!({"RequestId": "r-8", "Success": true, "Data": {"Success": false, "ErrMsg": "no capacity"}}),
            "no capacity",
        ),
        (
            json!({"Success": true, "Data": {"Success": true}}),
            "no SessionId",
        ),
        (json!({"Success": true}), "no Data"),
    ];
    for (answer, expect) in cases {
        let body = answer.to_string();
        let gw = gateway(move |_| Reply::Answer(200, body.clone())).await;
        let e = AgentBaySession::create(options(&gw.endpoint, json!({})))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::RemoteFailed);
        assert!(e.message.contains(expect), "{} lacks {expect}", e.message);
    }
}

#[tokio::test]
async fn contexts_and_run_options_the_cloud_lacks_are_refused_before_sending() {
    let gw = gateway(cloud).await;
    let session = Arc::new(AgentBaySession::attach(attach(&gw.endpoint, 2000)));
    let code = Code::new(session.clone());
    let options = RunOptions {
        envs: [("A".to_owned(), "1".to_owned())].into(),
        ..Default::default()
    };
    let e = code
        .run_code("1".into(), "python", None, options)
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::NotSupported);
    let e = session.list_contexts().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotSupported);
    assert!(gw.seen.lock().unwrap().is_empty());
}
