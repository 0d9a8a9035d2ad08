//! How publications, joins and leaves travel through Redis.
//!
//! A publication body is JSON, `{"d":<data>,"i":<info>,"t":<tags>,"tp":<traceparent>}`, with
//! the payload kept raw (`tp` only when the publisher passed a trace context). In history it is stored as a stream entry's `d` field, under the offset as entry id.
//! On PUB/SUB it is prefixed with its position: `__p1:<offset>:<epoch>__<body>` (offset 0 and
//! an empty epoch without history). Joins and leaves are `__j__<info>` and `__l__<info>`.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::{ClientInfo, Publication};

/// What a PUB/SUB message carries.
#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    Publication {
        publication: Publication,
        epoch: String,
        trace: Option<String>,
    },
    Join(ClientInfo),
    Leave(ClientInfo),
}

#[derive(Serialize, Deserialize)]
struct WireInfo<'a> {
    #[serde(borrow)]
    u: &'a str,
    #[serde(borrow)]
    c: &'a str,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    ci: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    hi: Option<&'a RawValue>,
}

#[derive(Serialize, Deserialize)]
struct WirePub<'a> {
    #[serde(borrow)]
    d: &'a RawValue,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    i: Option<WireInfo<'a>>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    t: HashMap<String, String>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    tp: Option<&'a str>,
}

fn raw(b: &Bytes) -> Option<&RawValue> {
    if b.is_empty() {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    serde_json::from_str(s).ok()
}

fn wire_info(i: &ClientInfo) -> WireInfo<'_> {
    WireInfo {
        u: &i.user,
        c: &i.client,
        ci: raw(&i.conn_info),
        hi: raw(&i.chan_info),
    }
}

fn client_info(w: WireInfo<'_>) -> ClientInfo {
    ClientInfo {
        user: w.u.to_owned(),
        client: w.c.to_owned(),
        conn_info: w
            .ci
            .map(|r| Bytes::copy_from_slice(r.get().as_bytes()))
            .unwrap_or_default(),
        chan_info: w
            .hi
            .map(|r| Bytes::copy_from_slice(r.get().as_bytes()))
            .unwrap_or_default(),
    }
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug)]
pub(crate) struct WireError(pub(crate) String);

/// Encodes a publication body (its offset is not part of it), with the publisher's trace
/// context if any.
pub(crate) fn encode_publication(p: &Publication, trace: Option<&str>) -> Result<Bytes, WireError> {
    let d = raw(&p.data)
        .ok_or_else(|| WireError("publication data is not JSON (the JSON flavour)".into()))?;
    let w = WirePub {
        d,
        i: p.info.as_ref().map(wire_info),
        t: p.tags.clone(),
        tp: trace,
    };
    serde_json::to_vec(&w)
        .map(Bytes::from)
        .map_err(|e| WireError(e.to_string()))
}

/// Decodes a publication body.
pub(crate) fn decode_publication(body: &[u8], offset: u64) -> Result<Publication, WireError> {
    decode_traced(body, offset).map(|(p, _)| p)
}

/// Decodes a publication body and its trace context.
fn decode_traced(body: &[u8], offset: u64) -> Result<(Publication, Option<String>), WireError> {
    let w: WirePub<'_> = serde_json::from_slice(body).map_err(|e| WireError(e.to_string()))?;
    let publication = Publication {
        data: Bytes::copy_from_slice(w.d.get().as_bytes()),
        info: w.i.map(client_info),
        offset,
        tags: w.t,
    };
    Ok((publication, w.tp.map(str::to_owned)))
}

/// Encodes client info (presence entries, joins, leaves).
pub(crate) fn encode_info(i: &ClientInfo) -> Bytes {
    // Plain strings and valid raw JSON: serialising cannot fail.
    Bytes::from(serde_json::to_vec(&wire_info(i)).unwrap_or_default())
}

/// Decodes client info.
pub(crate) fn decode_info(b: &[u8]) -> Result<ClientInfo, WireError> {
    serde_json::from_slice::<WireInfo<'_>>(b)
        .map(client_info)
        .map_err(|e| WireError(e.to_string()))
}

/// A PUB/SUB payload for a publication without history.
pub(crate) fn unpositioned(body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(body.len() + 9);
    b.put_slice(b"__p1:0:__");
    b.put_slice(body);
    b.freeze()
}

/// A PUB/SUB payload for a join or leave.
pub(crate) fn join_leave(info: &ClientInfo, join: bool) -> Bytes {
    let body = encode_info(info);
    let mut b = BytesMut::with_capacity(body.len() + 5);
    b.put_slice(if join { b"__j__" } else { b"__l__" });
    b.put_slice(&body);
    b.freeze()
}

/// Decodes a PUB/SUB payload.
pub(crate) fn decode_event(payload: &[u8]) -> Result<Event, WireError> {
    if let Some(rest) = payload.strip_prefix(b"__p1:") {
        let bad = || WireError("malformed publication prefix".into());
        let colon = rest.iter().position(|&c| c == b':').ok_or_else(bad)?;
        let offset: u64 = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let rest = &rest[colon + 1..];
        let end = rest.windows(2).position(|w| w == b"__").ok_or_else(bad)?;
        let epoch = std::str::from_utf8(&rest[..end]).map_err(|_| bad())?;
        let (publication, trace) = decode_traced(&rest[end + 2..], offset)?;
        return Ok(Event::Publication {
            publication,
            epoch: epoch.to_owned(),
            trace,
        });
    }
    if let Some(rest) = payload.strip_prefix(b"__j__") {
        return decode_info(rest).map(Event::Join);
    }
    if let Some(rest) = payload.strip_prefix(b"__l__") {
        return decode_info(rest).map(Event::Leave);
    }
    Err(WireError("unknown payload".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ClientInfo {
        ClientInfo {
            user: "42".into(),
            client: "c1".into(),
            conn_info: Bytes::from_static(br#"{"name":"Ann"}"#),
            chan_info: Bytes::new(),
        }
    }

    #[test]
    fn publications_round_trip() {
        let p = Publication {
            data: Bytes::from_static(br#"{"text":"hi","n":[1,2]}"#),
            info: Some(info()),
            offset: 0,
            tags: [("k".to_owned(), "v".to_owned())].into(),
        };
        let body = encode_publication(&p, None).unwrap();
        let mut payload = b"__p1:17:abcd__".to_vec();
        payload.extend_from_slice(&body);
        let Event::Publication {
            publication,
            epoch,
            trace,
        } = decode_event(&payload).unwrap()
        else {
            panic!("not a publication");
        };
        assert_eq!((epoch.as_str(), trace), ("abcd", None));
        assert_eq!(
            publication,
            Publication {
                offset: 17,
                ..p.clone()
            }
        );
        let Event::Publication {
            publication, epoch, ..
        } = decode_event(&unpositioned(&body)).unwrap()
        else {
            panic!("not a publication");
        };
        assert_eq!((publication.offset, epoch.as_str()), (0, ""));
    }

    #[test]
    fn a_trace_context_travels_with_the_publication_but_not_into_it() {
        let p = Publication {
            data: Bytes::from_static(br#"{"x":1}"#),
            info: None,
            offset: 0,
            tags: HashMap::new(),
        };
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let body = encode_publication(&p, Some(tp)).unwrap();
        let Event::Publication {
            publication, trace, ..
        } = decode_event(&unpositioned(&body)).unwrap()
        else {
            panic!("not a publication");
        };
        assert_eq!((publication, trace.as_deref()), (p.clone(), Some(tp)));
        // History reads the same body: the publication comes out without the trace.
        assert_eq!(decode_publication(&body, 3).unwrap().offset, 3);
    }

    #[test]
    fn joins_and_leaves_round_trip() {
        assert_eq!(
            decode_event(&join_leave(&info(), true)).unwrap(),
            Event::Join(info())
        );
        assert_eq!(
            decode_event(&join_leave(&info(), false)).unwrap(),
            Event::Leave(info())
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"__p1:",
            b"__p1:x:e__{}",
            b"__p1:1:e",
            b"__p1:1:e__nojson",
            b"__j__[",
            b"hello",
        ] {
            assert!(
                decode_event(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
