//! The local session end to end: the real helper binary and the real drivers, through
//! the `Session` trait and `Code`, without Node. `cargo test --workspace` builds the
//! helper before any test runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use codebay_core::{
    Cancel, Code, CodeExecutionResult, LocalSession, Placement, Registry, RunOptions, Runtime,
    Session, SessionOptions,
};
use codebay_protocol::helper::RUNTIMES_INSIDE;
use serde_json::json;

fn placement(registry: Registry) -> Placement {
    // The test binary is target/<triple>/<profile>/deps/<name>; the helper sits one up.
    let exe = std::env::current_exe().unwrap();
    let helper = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("codebay-sandbox");
    assert!(
        helper.exists(),
        "build the helper first: {}",
        helper.display()
    );
    let runtimes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../runtimes");
    Placement {
        sandbox_binary: helper,
        runtimes_dir: runtimes.canonicalize().unwrap(),
        node: None,
        registry,
    }
}

fn options() -> SessionOptions {
    let mut o = SessionOptions::default();
    o.pool.size = 0;
    o.pool.prewarm = vec![];
    o
}

async fn create(options: SessionOptions) -> LocalSession {
    LocalSession::create(&options, &placement(Registry::default()))
        .await
        .expect("create")
}

async fn run(
    session: &LocalSession,
    code: &str,
    language: &str,
    timeout_s: f64,
) -> CodeExecutionResult {
    let tool = session
        .call_tool_now(
            "run_code",
            &json!({ "code": code, "language": language, "timeout_s": timeout_s }),
        )
        .await;
    CodeExecutionResult::from_tool_result(tool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_run_and_keep_state() {
    let session = create(options()).await;
    let r = run(&session, "x = 40\nprint(x + 2)", "python", 10.0).await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.logs.unwrap().stdout, vec!["42\n"]);
    let r = run(&session, "x * 2", "python", 10.0).await;
    assert_eq!(r.result, "80");
    let r = run(
        &session,
        "const y = 20; console.log(y + 1); y * 2",
        "javascript",
        10.0,
    )
    .await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.result, "40");
    assert_eq!(r.logs.unwrap().stdout, vec!["21\n"]);
    let r = run(&session, "1/0", "python", 10.0).await;
    assert!(!r.success);
    assert_eq!(r.error.unwrap().name, "ZeroDivisionError");
    session.close().await;
    let r = run(&session, "1", "python", 10.0).await;
    assert_eq!(
        r.error_message.as_deref(),
        Some("SessionClosed: The session is closed.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_interrupts_and_the_session_stays_usable() {
    let session = create(options()).await;
    run(&session, "import time", "python", 10.0).await;
    let r = run(
        &session,
        "def spin():\n    while True: pass\nspin()",
        "python",
        0.5,
    )
    .await;
    assert_eq!(r.error.as_ref().unwrap().name, "TimeoutError", "{r:?}");
    let traceback = &r.error.as_ref().unwrap().traceback;
    assert!(
        traceback.contains("in spin"),
        "the traceback shows where the run was stopped: {traceback}"
    );
    let r = run(&session, "2 + 2", "python", 10.0).await;
    assert_eq!(r.result, "4");
    let r = run(&session, "await new Promise(() => {})", "javascript", 0.5).await;
    assert_eq!(r.error.as_ref().unwrap().name, "TimeoutError", "{r:?}");
    let r = run(
        &session,
        "setTimeout(() => { while (true) {} }, 0); await new Promise(r => setTimeout(r, 50)); 1",
        "javascript",
        0.5,
    )
    .await;
    assert_eq!(r.error.as_ref().unwrap().name, "TimeoutError", "{r:?}");
    let r = run(&session, "3 + 3", "javascript", 10.0).await;
    assert_eq!(r.result, "6", "{r:?}");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tools_and_bad_arguments_fail_cleanly() {
    let session = create(options()).await;
    let t = session.call_tool_now("rm_rf", &json!({})).await;
    assert!(!t.success);
    assert_eq!(
        t.error_message,
        "[ERR_CODEBAY_TOOL_FAILED] Unknown tool 'rm_rf'. This session offers: run_code, create_code_context, list_code_contexts, restart_code_context, remove_code_context, write_file, read_file, list_files, remove_file."
    );
    let t = session
        .call_tool_now("run_code", &json!({"code": "1", "language": "cobol"}))
        .await;
    assert!(
        t.error_message
            .starts_with("[ERR_CODEBAY_UNSUPPORTED_LANGUAGE] Unsupported language: cobol."),
        "{}",
        t.error_message
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stdout_or_stderr_replaces_the_interpreter() {
    let session = create(options()).await;
    for (code, language, stream) in [
        ("import os\nos.close(1)\n1", "python", "stdout"),
        ("import os\nos.close(2)\n1", "python", "stderr"),
        (
            "require('fs').closeSync(1); console.log('lost'); 1",
            "javascript",
            "stdout",
        ),
    ] {
        let r = run(&session, code, language, 10.0).await;
        assert!(!r.success, "{r:?}");
        let error = r.error.unwrap();
        assert_eq!(error.name, "InterpreterExitError");
        assert!(error.value.contains(stream), "{}", error.value);
        // A fresh interpreter, whose output is captured again.
        let print = if language == "python" {
            "print('back')"
        } else {
            "console.log('back')"
        };
        let r = run(&session, print, language, 10.0).await;
        assert_eq!(r.logs.unwrap().stdout, vec!["back\n"], "{language}");
    }
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_limit_is_reported_even_when_the_code_raised_nothing() {
    let mut opts = options();
    opts.max_processes = 16;
    let session = create(opts).await;
    // Node reports the failed spawns as events after the cell has returned.
    let r = run(
        &session,
        "const cp = require('child_process'); for (let i = 0; i < 40; i++) cp.spawn('sleep', ['30']); 1",
        "javascript",
        10.0,
    )
    .await;
    assert_eq!(
        r.error.as_ref().map(|e| e.name.as_str()),
        Some("ProcessLimitError"),
        "{r:?}"
    );
    let r = run(&session, "2", "javascript", 10.0).await;
    assert_eq!(r.result, "2", "{r:?}");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_output_is_flushed_before_the_reply() {
    let mut opts = options();
    opts.output_limit_bytes = 1024 * 1024;
    let session = create(opts).await;
    let r = run(
        &session,
        "process.stdout.write('x'.repeat(3 * 1024 * 1024)); 1",
        "javascript",
        10.0,
    )
    .await;
    assert_eq!(r.error.as_ref().unwrap().name, "OutputLimitError", "{r:?}");
    assert!(r.error.unwrap().value.contains("2097152 bytes of stdout"));
    let r = run(&session, "2", "javascript", 10.0).await;
    assert_eq!(
        r.logs.unwrap().stdout,
        Vec::<String>::new(),
        "nothing spills into the next run"
    );
    session.close().await;
}

/// Every cgroup directory of a session, in whichever hierarchies the host has.
fn cgroup_dirs(session_id: &str) -> Vec<PathBuf> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut candidates = vec![root.join("codebay").join(session_id)];
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        candidates.push(entry.path().join("codebay").join(session_id));
    }
    candidates.into_iter().filter(|d| d.exists()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_dropped_without_close_is_still_cleaned_up() {
    let session = create(options()).await;
    let r = run(&session, "1", "python", 10.0).await;
    assert!(r.success, "{r:?}");
    let id = session.id().to_owned();
    assert!(
        !cgroup_dirs(&id).is_empty(),
        "the session has cgroups while it lives"
    );
    drop(session);
    // The helper removes the cgroups once it sees our socket close; killing it instead
    // would leave them behind for good.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cgroup_dirs(&id).is_empty() && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(cgroup_dirs(&id), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_run_leaves_its_context_consistent() {
    let session = create(options()).await;
    let code = Code::new(Arc::new(session.clone()));
    for (language, setup, slow) in [
        (
            "python",
            "keep = 7",
            "import time\nwhile True: time.sleep(0.01)",
        ),
        ("javascript", "var keep = 7", "for (;;) {}"),
    ] {
        let r = run(&session, setup, language, 10.0).await;
        assert!(r.success, "{r:?}");
        // Dropped mid-run, as a cancelled MCP request or an abandoned await drops it.
        let dropped = code
            .run_code(slow.into(), language, Some(30.0), RunOptions::default())
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(300), dropped).await;
        let r = run(&session, "keep * 6", language, 10.0).await;
        assert!(
            r.success,
            "{language}: the next run gets its own result: {r:?}"
        );
        assert_eq!(r.result, "42", "{language}: the state was kept");
    }
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_is_an_abort_error_and_the_context_keeps_its_state() {
    let session = create(options()).await;
    let code = Code::new(Arc::new(session.clone()));
    assert!(run(&session, "keep = 7", "python", 10.0).await.success);
    let cancel = Cancel::default();
    let options = RunOptions::cancelled_by(cancel.clone());
    let running = tokio::spawn(
        code.run_code(
            "import time\ntime.sleep(30)".into(),
            "python",
            Some(60.0),
            options,
        )
        .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    let r = running.await.unwrap();
    assert_eq!(
        r.error.as_ref().map(|e| e.name.as_str()),
        Some("AbortError"),
        "{r:?}"
    );
    assert_eq!(run(&session, "keep", "python", 10.0).await.result, "7");
    session.close().await;
}

/// A throw-away runtime: a driver of a few lines speaking the driver protocol, added
/// to the registry. The helper is not touched: it executes the command line it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_is_one_descriptor() {
    let mut upper = Runtime::python();
    upper.name = "upper".into();
    upper.aliases = vec!["shout".into()];
    upper.extensions = vec!["up".into()];
    // Beside the built-in drivers, in the package's runtimes directory.
    upper.command = Arc::new(|found| {
        Ok(vec![
            found.get("python")?.to_string_lossy().into_owned(),
            "-I".into(),
            format!("{RUNTIMES_INSIDE}/testing/upper_driver.py"),
        ])
    });
    let registry = Registry::default().with(upper);
    let session = LocalSession::create(&options(), &placement(registry))
        .await
        .expect("create");
    let code = Code::new(Arc::new(session.clone()));
    let r = code
        .run_code("hello".into(), " SHOUT ", None, RunOptions::default())
        .unwrap()
        .await;
    assert!(r.success, "{r:?}");
    assert_eq!(r.result, "HELLO");
    assert_eq!(r.logs.as_ref().unwrap().stdout, vec!["ran 5 characters\n"]);
    let r = code
        .run_code("x = 1".into(), "python", None, RunOptions::default())
        .unwrap()
        .await;
    assert!(r.success, "the built-in runtimes stay: {r:?}");
    let err = code
        .run_code("1".into(), "cobol", None, RunOptions::default())
        .err()
        .unwrap();
    assert!(
        err.message
            .ends_with("Supported languages are 'python', 'javascript' and 'upper'"),
        "{}",
        err.message
    );
    let contexts = session.list_contexts().await.unwrap();
    assert!(contexts.iter().any(|c| c.id == "upper"), "{contexts:?}");
    session.close().await;
}
