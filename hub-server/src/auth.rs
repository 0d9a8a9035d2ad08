//! JWT verification: connection and subscription tokens with Centrifugo's claims
//! (PROTOCOL.md §4).

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::config::TokenConfig;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// `exp` (or `nbf`) says the token is not valid now.
    Expired,
    /// Bad signature, malformed token, wrong claims.
    Invalid(String),
}

/// Claims of a connection token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectClaims {
    /// User id.
    pub sub: String,
    /// Expiry (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Overrides the connection expiry: 0 = never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<u64>,
    /// Connection info (any JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// Connection info, base64.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub b64info: String,
    /// Server-side subscriptions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Server-side subscriptions with options.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub subs: HashMap<String, SubOptions>,
    /// Marks a subscription token; must be absent here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// Per-channel options in a connection token's `subs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubOptions {
    /// Channel info.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// Data for the subscribe result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// Claims of a subscription token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SubscribeClaims {
    /// User id; must be the connection's.
    pub sub: String,
    /// Channel; must be the one subscribed.
    pub channel: String,
    /// Binds the token to one connection, if set.
    pub client: String,
    /// Channel info.
    pub info: Option<serde_json::Value>,
    /// Channel info, base64.
    pub b64info: String,
    /// Data for the subscribe result.
    pub data: Option<serde_json::Value>,
    /// Expiry.
    pub exp: Option<u64>,
    /// Overrides the expiry: 0 = never.
    pub expire_at: Option<u64>,
}

/// Verifies tokens with the configured keys.
pub struct Verifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    audience: String,
    issuer: String,
}

impl Verifier {
    /// Builds a verifier; an unreadable RSA key is a config error.
    pub fn new(cfg: &TokenConfig) -> Result<Self, String> {
        let rsa = if cfg.rsa_public_key.is_empty() {
            None
        } else {
            Some(
                DecodingKey::from_rsa_pem(cfg.rsa_public_key.as_bytes())
                    .map_err(|e| format!("invalid rsa_public_key: {e}"))?,
            )
        };
        Ok(Verifier {
            hmac: (!cfg.hmac_secret_key.is_empty())
                .then(|| DecodingKey::from_secret(cfg.hmac_secret_key.as_bytes())),
            rsa,
            audience: cfg.audience.clone(),
            issuer: cfg.issuer.clone(),
        })
    }

    /// Whether a key is configured.
    pub fn enabled(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some()
    }

    fn verify<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(format!("malformed token: {e}")))?;
        let key = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => self.hmac.as_ref(),
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => self.rsa.as_ref(),
            other => {
                return Err(TokenError::Invalid(format!(
                    "unsupported algorithm {other:?}"
                )))
            }
        }
        .ok_or_else(|| TokenError::Invalid(format!("no key configured for {:?}", header.alg)))?;
        let mut v = Validation::new(header.alg);
        v.required_spec_claims = HashSet::new();
        v.leeway = 0;
        v.validate_nbf = true;
        if self.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&[&self.audience]);
            v.required_spec_claims.insert("aud".into());
        }
        if !self.issuer.is_empty() {
            v.set_issuer(&[&self.issuer]);
            v.required_spec_claims.insert("iss".into());
        }
        jsonwebtoken::decode::<T>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }

    /// Verifies a connection token.
    pub fn verify_connect(&self, token: &str) -> Result<ConnectClaims, TokenError> {
        let c: ConnectClaims = self.verify(token)?;
        if c.channel.is_some() {
            return Err(TokenError::Invalid(
                "a subscription token cannot connect".into(),
            ));
        }
        Ok(c)
    }

    /// Verifies a subscription token.
    pub fn verify_subscribe(&self, token: &str) -> Result<SubscribeClaims, TokenError> {
        let c: SubscribeClaims = self.verify(token)?;
        if c.channel.is_empty() {
            return Err(TokenError::Invalid(
                "subscription token without channel claim".into(),
            ));
        }
        Ok(c)
    }
}

/// The effective expiry: `expire_at` wins over `exp`, and `expire_at: 0` means never.
pub fn effective_expiry(exp: Option<u64>, expire_at: Option<u64>) -> Option<u64> {
    match expire_at {
        Some(0) => None,
        Some(at) => Some(at),
        None => exp,
    }
}

/// Info as raw JSON bytes: `info` (any JSON) or `b64info` (binary).
pub fn info_bytes(info: &Option<serde_json::Value>, b64info: &str) -> Result<Bytes, TokenError> {
    if let Some(v) = info {
        if !v.is_null() {
            return Ok(Bytes::from(v.to_string()));
        }
    }
    if !b64info.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64info)
            .map(Bytes::from)
            .map_err(|_| TokenError::Invalid("b64info is not base64".into()));
    }
    Ok(Bytes::new())
}

/// Makes an HS256 connection token (for `gentoken` and tests).
pub fn make_hs256(secret: &str, claims: &impl Serialize) -> Result<String, String> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn verifier() -> Verifier {
        Verifier::new(&TokenConfig {
            hmac_secret_key: "secret".into(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn valid_hs256_token_gives_its_claims() {
        let t = make_hs256(
            "secret",
            &json!({"sub": "42", "info": {"name": "Ann"}, "channels": ["a"]}),
        )
        .unwrap();
        let c = verifier().verify_connect(&t).unwrap();
        assert_eq!(c.sub, "42");
        assert_eq!(c.channels, vec!["a"]);
        assert_eq!(
            &info_bytes(&c.info, &c.b64info).unwrap()[..],
            br#"{"name":"Ann"}"#
        );
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key_only() {
        // A key pair made for this test only (tests/data).
        let private = include_str!("../tests/data/rsa_test_private.pem");
        let public = include_str!("../tests/data/rsa_test_public.pem");
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()).unwrap();
        let t = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::RS256),
            &json!({"sub": "rsa-user", "exp": now() + 60}),
            &key,
        )
        .unwrap();
        let v = Verifier::new(&TokenConfig {
            rsa_public_key: public.into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.verify_connect(&t).unwrap().sub, "rsa-user");
        // An HS256 token is refused when only an RSA key is configured.
        let hs = make_hs256("secret", &json!({"sub": "x"})).unwrap();
        assert!(matches!(v.verify_connect(&hs), Err(TokenError::Invalid(_))));
        // A tampered RS256 token is refused.
        let mut bad = t.clone();
        bad.replace_range(bad.len() - 4.., "AAAA");
        assert!(matches!(
            v.verify_connect(&bad),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn expired_and_invalid_tokens_are_told_apart() {
        let t = make_hs256("secret", &json!({"sub": "1", "exp": now() - 10})).unwrap();
        assert_eq!(
            verifier().verify_connect(&t).unwrap_err(),
            TokenError::Expired
        );
        let t = make_hs256("other", &json!({"sub": "1"})).unwrap();
        assert!(matches!(
            verifier().verify_connect(&t),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verifier().verify_connect("garbage"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn subscription_tokens_cannot_connect_and_need_a_channel() {
        let t = make_hs256("secret", &json!({"sub": "1", "channel": "x"})).unwrap();
        assert!(matches!(
            verifier().verify_connect(&t),
            Err(TokenError::Invalid(_))
        ));
        let t = make_hs256("secret", &json!({"sub": "1"})).unwrap();
        assert!(matches!(
            verifier().verify_subscribe(&t),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn expire_at_overrides_exp() {
        assert_eq!(effective_expiry(Some(10), None), Some(10));
        assert_eq!(effective_expiry(Some(10), Some(0)), None);
        assert_eq!(effective_expiry(Some(10), Some(20)), Some(20));
    }
}
