//! Serde helpers for the JSON flavour: raw JSON payloads kept as bytes, `null` read as absent,
//! numbers that may come as strings.

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer};
use serde::ser::{Error as _, Serialize, Serializer};
use serde_json::value::RawValue;

/// Reads `null` as the type's default.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads a u64 written as a number, a numeric string or `null`.
pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u64),
        Str(String),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(0),
        Some(N::Num(n)) => Ok(n),
        Some(N::Str(s)) => s.parse().map_err(de::Error::custom),
    }
}

/// Reads any JSON value as its raw text. Raw newlines are removed: they can only be
/// whitespace in valid JSON, and a newline separates messages in a frame.
pub(crate) fn raw_json<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    let raw = Option::<Box<RawValue>>::deserialize(d)?;
    Ok(match raw {
        None => Bytes::new(),
        Some(raw) if raw.get() == "null" => Bytes::new(),
        Some(raw) => {
            let s: Box<str> = raw.into();
            let mut v = String::from(s).into_bytes();
            if v.contains(&b'\n') {
                v.retain(|b| *b != b'\n');
            }
            Bytes::from(v)
        }
    })
}

/// Writes bytes that hold JSON text as a raw JSON value. Bytes that are not JSON cannot be
/// sent to a JSON client: serialisation fails (the caller closes with 3506).
pub(crate) fn write_raw_json<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    let raw: &RawValue = serde_json::from_slice(b).map_err(|_| S::Error::custom(NOT_JSON))?;
    raw.serialize(s)
}

/// The message used when a payload is not JSON.
pub(crate) const NOT_JSON: &str = "payload is not valid JSON";

pub(crate) fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
