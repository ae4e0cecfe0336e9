//! The languages the embedded sessions run, from the engine's runtime registry.

use napi_derive::napi;

/// One language a `LocalSession` runs.
#[napi(object)]
pub struct LanguageInfo {
    /// The canonical name, as `runCode` sends it.
    pub name: String,
    /// Other names `runCode` accepts (matched after trim + lower-case).
    pub aliases: Vec<String>,
    /// File extensions (without the dot) the command line maps to it.
    pub extensions: Vec<String>,
}

/// The languages of a `LocalSession`, in the order error messages list them.
#[napi]
pub fn supported_languages() -> Vec<LanguageInfo> {
    codebay_core::Registry::default()
        .runtimes()
        .iter()
        .map(|r| LanguageInfo {
            name: r.name.clone(),
            aliases: r.aliases.clone(),
            extensions: r.extensions.clone(),
        })
        .collect()
}
