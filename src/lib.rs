//! napi bindings only: each item converts JavaScript values to `codebay_core` types,
//! calls the core, and converts back. Logic lives in `crates/codebay-core`.

mod code;
mod local_session;
mod package_files;
mod session_like;
mod types;

pub use code::Code;
pub use local_session::{LocalSession, LocalSessionOptions};
pub use types::*;
