//! HS256 connection tokens (JWT), signed here so that the load client needs nothing from the
//! server's crates: `base64url(header).base64url(claims).base64url(HMAC-SHA256)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `{"alg":"HS256","typ":"JWT"}`, base64url-encoded once.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Signs `claims` (a JSON object) with `secret`.
pub(crate) fn hs256(secret: &str, claims: &serde_json::Value) -> String {
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{HEADER_B64}.{payload}");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// The connection token of load connection `i`: `{"sub": "lt-<i>"}`, no expiry.
pub(crate) fn for_connection(secret: &str, i: usize) -> String {
    for_user(secret, &format!("lt-{i}"))
}

/// The connection token of `user`: `{"sub": user}`, no expiry.
pub(crate) fn for_user(secret: &str, user: &str) -> String {
    hs256(secret, &serde_json::json!({ "sub": user }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_constant_is_the_hs256_header() {
        let decoded = URL_SAFE_NO_PAD.decode(HEADER_B64).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(v, serde_json::json!({"alg": "HS256", "typ": "JWT"}));
    }

    #[test]
    fn matches_an_independently_computed_token() {
        // Computed with Python's hmac/hashlib/base64 over the same header and payload bytes.
        assert_eq!(
            for_connection("test-secret", 7),
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJsdC03In0.\
             Z_TFd1qG2kSgsL9EWgtOwCOawtJiL76XB8xvW9-PlG4"
        );
    }

    #[test]
    fn connection_tokens_name_the_user() {
        let t = for_connection("s", 7);
        let p = t.split('.').nth(1).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"sub": "lt-7"}));
    }
}
