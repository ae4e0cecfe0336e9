//! napi bindings only: each item converts JavaScript values to `codebay_core` types,
//! calls the core, and converts back. Logic lives in `crates/codebay-core`.

mod agentbay_session;
mod code;
mod convert;
mod errors;
mod files;
mod js_session;
mod local_session;
mod package_files;
mod remote_session;
mod runtimes;
mod server;
mod sink;
mod types;

pub use agentbay_session::{AgentBaySession, DeleteResult};
pub use code::Code;
pub use files::{FileEntry, Files};
pub use local_session::LocalSession;
pub use remote_session::RemoteSession;
pub use runtimes::{supported_languages, LanguageInfo};
pub use server::{serve, serve_stdio, ServeOptions, ServerHandle};
pub use types::*;

/// One tokio worker instead of one per core. The addon's tasks only move bytes between
/// pipes and JavaScript; with two workers on a 2-core machine, each wake-up also woke
/// the idle worker to look for work to steal.
#[napi_derive::module_init]
fn init() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("codebay-io")
        .enable_all()
        .build()
        .expect("a tokio runtime with one worker can be built");
    napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
}
