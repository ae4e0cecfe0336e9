//! codebay's errors as JavaScript errors: the right class (`Error`, `TypeError`,
//! `RangeError`) with the stable `code` property.

use napi::bindgen_prelude::*;

use codebay_core::{CodebayError, ErrorKind};

/// The JavaScript error object for `error`. An exception left pending by what failed
/// (a getter of the caller's that threw) is cleared first: ours replaces it, as a
/// rejection rather than a synchronous throw.
pub fn to_js<'env>(env: &'env Env, error: &CodebayError) -> Result<Object<'env>> {
    let mut pending = false;
    // SAFETY: plain queries on a live env; the out-pointers are live locals.
    unsafe {
        napi::sys::napi_is_exception_pending(env.raw(), &mut pending);
        if pending {
            let mut thrown = std::ptr::null_mut();
            napi::sys::napi_get_and_clear_last_exception(env.raw(), &mut thrown);
        }
    }
    let global = env.get_global()?;
    let class = match error.kind {
        ErrorKind::Error => "Error",
        ErrorKind::TypeError => "TypeError",
        ErrorKind::RangeError => "RangeError",
    };
    let constructor: Function<String, Unknown> = global.get_named_property(class)?;
    let instance = constructor.new_instance(error.message.clone())?;
    // SAFETY: `new Error(...)` gives an object of this env.
    let mut object = unsafe { Object::from_napi_value(env.raw(), instance.raw())? };
    object.set_named_property("code", error.code.as_str())?;
    Ok(object)
}

/// A promise rejected with `error`.
pub fn reject<'env, T: ToNapiValue>(
    env: &'env Env,
    error: &CodebayError,
) -> Result<PromiseRaw<'env, T>> {
    let object = to_js(env, error)?;
    PromiseRaw::reject(env, object)
}

/// Throws `error` now (from a constructor or a synchronous method).
pub fn throw<T>(env: &Env, error: &CodebayError) -> Result<T> {
    let object = to_js(env, error)?;
    // SAFETY: throwing a live value of this env.
    unsafe { napi::sys::napi_throw(env.raw(), object.raw()) };
    Err(Error::new(Status::PendingException, error.message.clone()))
}

/// A napi error (a conversion that failed) as one of ours, for a rejected promise.
pub fn from_napi(error: Error) -> CodebayError {
    CodebayError::new(
        codebay_core::ErrorCode::InvalidArgument,
        ErrorKind::TypeError,
        error.reason,
    )
}

/// A promise settled by `future`: its value, or our error object (with its `code`).
pub fn settle<'env, T, F>(env: &'env Env, future: F) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: std::future::Future<Output = std::result::Result<T, CodebayError>> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred::<T, _>()?;
    napi::bindgen_prelude::spawn(async move {
        let outcome = future.await;
        deferred.resolve(move |env| match outcome {
            Ok(value) => Ok(value),
            // A resolver's error rejects the promise with the value it retains: ours.
            Err(e) => Err(Error::from(to_js(&env, &e)?.to_unknown())),
        });
    });
    // SAFETY: the deferred's promise is an object of this env.
    unsafe { PromiseRaw::from_napi_value(env.raw(), promise.raw()) }
}

/// A promise for work that may have been refused before it started: settled by the
/// work, or rejected with the refusal.
pub fn settle_started<'env, T, F>(
    env: &'env Env,
    started: std::result::Result<F, CodebayError>,
) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: std::future::Future<Output = std::result::Result<T, CodebayError>> + Send + 'static,
{
    match started {
        Ok(work) => settle(env, work),
        Err(e) => reject(env, &e),
    }
}

/// Whether `value` is of `kind` (an unreadable value is of no kind).
pub fn is(value: &Unknown, kind: ValueType) -> bool {
    matches!(value.get_type(), Ok(t) if t == kind)
}

/// Whether `value` is an array (which is also of kind object).
pub fn is_array(value: &Unknown) -> bool {
    let mut array = false;
    // SAFETY: a live value of its env; the out-pointer is a live bool.
    unsafe { napi::sys::napi_is_array(value.env(), value.raw(), &mut array) };
    array
}

/// `String(value)`, or None when the value has no string form (a Symbol).
pub fn js_string(value: &Unknown) -> Option<String> {
    value
        .coerce_to_string()
        .and_then(|s| s.into_utf8())
        .and_then(|s| s.into_owned())
        .ok()
}
