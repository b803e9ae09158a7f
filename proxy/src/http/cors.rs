//! CORS (Envoy's `envoy.filters.http.cors` with a per-route `CorsPolicy`): answers allowed
//! preflight requests itself and adds the `access-control-*` headers to allowed requests'
//! responses. Requests from origins that are not allowed pass through unchanged.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_METHOD, HeaderValue, ORIGIN,
};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::routing::Cors;

use super::response::{Body, text};

/// The request's `Origin` when the policy allows it.
pub fn allowed_origin(cors: &Cors, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    cors.allows(origin.to_str().ok()?).then(|| origin.clone())
}

/// The answer to an allowed preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), or `None` to go on.
pub fn preflight(cors: &Cors, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
    if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = allowed_origin(cors, headers)?;
    let mut resp = text(StatusCode::OK, "");
    let h = resp.headers_mut();
    h.remove(http::header::CONTENT_TYPE);
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    for (name, value) in [
        (ACCESS_CONTROL_ALLOW_METHODS, &cors.allow_methods),
        (ACCESS_CONTROL_ALLOW_HEADERS, &cors.allow_headers),
        (ACCESS_CONTROL_MAX_AGE, &cors.max_age),
    ] {
        if !value.is_empty()
            && let Ok(v) = HeaderValue::from_str(value)
        {
            h.insert(name, v);
        }
    }
    if cors.allow_credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    Some(resp)
}

/// Adds the CORS headers for an allowed `origin` to a forwarded request's response.
pub fn decorate(cors: &Cors, origin: HeaderValue, headers: &mut HeaderMap) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.allow_credentials {
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cors.expose_headers)
    {
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::OriginMatch;

    fn policy() -> Cors {
        Cors {
            allow_origins: vec![
                OriginMatch::Exact("https://a.example".into()),
                OriginMatch::Prefix("https://dev.".into()),
            ],
            allow_methods: "GET,POST".into(),
            allow_headers: "x-custom".into(),
            expose_headers: "x-total".into(),
            max_age: "86400".into(),
            allow_credentials: true,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn allowed_preflight_is_answered_here() {
        let h = headers(&[
            ("origin", "https://dev.b.example"),
            ("access-control-request-method", "POST"),
        ]);
        let resp = preflight(&policy(), &Method::OPTIONS, &h).unwrap();
        assert_eq!(resp.status(), 200);
        let rh = resp.headers();
        assert_eq!(rh[ACCESS_CONTROL_ALLOW_ORIGIN], "https://dev.b.example");
        assert_eq!(rh[ACCESS_CONTROL_ALLOW_METHODS], "GET,POST");
        assert_eq!(rh[ACCESS_CONTROL_MAX_AGE], "86400");
        assert_eq!(rh[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn other_origins_and_plain_requests_pass() {
        let bad = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(preflight(&policy(), &Method::OPTIONS, &bad).is_none());
        assert!(allowed_origin(&policy(), &bad).is_none());
        let get = headers(&[("origin", "https://a.example")]);
        assert!(preflight(&policy(), &Method::GET, &get).is_none());
        let origin = allowed_origin(&policy(), &get).unwrap();
        let mut out = HeaderMap::new();
        decorate(&policy(), origin, &mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], "x-total");
    }
}
