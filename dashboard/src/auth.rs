//! Who may triage: the bearer token for API clients, and for the browser's form the same
//! token typed in, plus a CSRF check.
//!
//! The CSRF check is the double-submit cookie: a page with a triage form sets a random
//! `dyno_csrf` cookie (SameSite=Strict, HttpOnly) when the browser has none and puts the same
//! value in the form; a POST must carry both, equal. Another site can make a browser send the
//! cookie but cannot read it to fill the form.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use rand::RngExt;

use crate::error::DashError;

/// The CSRF cookie's name.
pub const CSRF_COOKIE: &str = "dyno_csrf";

/// Equal strings, compared in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a token given with a triage request against the configured one.
pub fn check_token(configured: Option<&str>, given: Option<&str>) -> Result<(), DashError> {
    let Some(configured) = configured else {
        return Err(DashError::Forbidden(
            "triage is disabled: start the dashboard with --token (or DYNO_TOKEN)".into(),
        ));
    };
    match given {
        Some(t) if same_secret(t, configured) => Ok(()),
        Some(_) => Err(DashError::Unauthorized("wrong token: nothing was changed".into())),
        None => Err(DashError::Unauthorized("a token is needed to triage".into())),
    }
}

/// The bearer token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A fresh CSRF value: 128 random bits, hex.
pub fn new_csrf() -> String {
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

/// The CSRF value a page should use: the browser's cookie when it has a well-formed one,
/// else a fresh one (and the `Set-Cookie` value to send with the page).
pub fn csrf_for(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(v) if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (v.to_string(), None)
        }
        _ => {
            let v = new_csrf();
            let set = format!("{CSRF_COOKIE}={v}; Path=/; HttpOnly; SameSite=Strict");
            (v, Some(set))
        }
    }
}

/// Checks a form's CSRF field against the cookie.
pub fn check_csrf(headers: &HeaderMap, form_value: &str) -> Result<(), DashError> {
    match cookie(headers, CSRF_COOKIE) {
        Some(c) if !form_value.is_empty() && same_secret(c, form_value) => Ok(()),
        _ => Err(DashError::Forbidden(
            "the form's CSRF check failed (reload the page and submit again): nothing was changed"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_and_cookies() {
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
        assert!(check_token(Some("t"), Some("t")).is_ok());
        assert!(matches!(check_token(Some("t"), Some("u")), Err(DashError::Unauthorized(_))));
        assert!(matches!(check_token(Some("t"), None), Err(DashError::Unauthorized(_))));
        assert!(matches!(check_token(None, Some("t")), Err(DashError::Forbidden(_))));
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        h.insert(COOKIE, HeaderValue::from_static("a=1; dyno_csrf=00ff; b=2"));
        assert_eq!(bearer(&h), Some("s3cret"));
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("00ff"));
        assert!(check_csrf(&h, "00ff").is_ok());
        assert!(check_csrf(&h, "00fe").is_err() && check_csrf(&h, "").is_err());
        // A malformed cookie is replaced, a well-formed one kept.
        let (v, set) = csrf_for(&h);
        assert_eq!(v.len(), 32);
        assert!(set.is_some_and(|s| s.contains(&v) && s.contains("SameSite=Strict")));
        assert_ne!(new_csrf(), new_csrf());
    }
}
