//! The JSON flavour's codec: sans-IO, no sockets involved.
//!
//! A frame holds one or more JSON objects separated by a single `\n` (PROTOCOL.md §1.2).

use bytes::{BufMut, Bytes, BytesMut};

use super::{Command, Reply, ReplyBody};
pub use super::{DecodeError, EncodeError};

/// Splits a frame into commands, in order. Blank segments are skipped (centrifuge-js and
/// other SDKs may end a frame with `\n`).
pub fn decode_commands(frame: &[u8]) -> impl Iterator<Item = Result<Command, DecodeError>> + '_ {
    frame
        .split(|b| *b == b'\n')
        .filter(|seg| seg.iter().any(|b| !b.is_ascii_whitespace()))
        .map(|seg| serde_json::from_slice::<Command>(seg).map_err(|e| DecodeError(e.to_string())))
}

/// The encoded server ping: `{}`.
pub const PING: &[u8] = b"{}";

/// Encodes one reply (or push, or ping) as compact JSON, without a trailing newline.
pub fn encode_reply(reply: &Reply) -> Result<Bytes, EncodeError> {
    if matches!(reply.body, ReplyBody::Ping) {
        return Ok(Bytes::from_static(PING));
    }
    let mut buf = BytesMut::with_capacity(128).writer();
    serde_json::to_writer(&mut buf, reply).map_err(|e| EncodeError(e.to_string()))?;
    Ok(buf.into_inner().freeze())
}

/// Joins encoded replies into one frame, `\n`-separated.
pub fn join_frame<'a>(parts: impl IntoIterator<Item = &'a Bytes>) -> Bytes {
    let mut out = BytesMut::new();
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b'\n');
        }
        out.extend_from_slice(p);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::protocol::*;
    use std::collections::HashMap;

    fn decode_all(frame: &str) -> Vec<Result<Command, DecodeError>> {
        decode_commands(frame.as_bytes()).collect()
    }

    fn encode(r: &Reply) -> String {
        String::from_utf8(encode_reply(r).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn decodes_connect_and_subscribe_batched_in_one_frame() {
        let cmds = decode_all(
            "{\"connect\":{\"name\":\"js\",\"token\":\"t\"},\"id\":1}\n{\"subscribe\":{\"channel\":\"news\",\"flag\":1},\"id\":2}",
        );
        assert_eq!(cmds.len(), 2);
        let c0 = cmds[0].clone().unwrap();
        assert_eq!(c0.id, 1);
        match c0.into_request() {
            Request::Connect(c) => {
                assert_eq!(c.name, "js");
                assert_eq!(c.token, "t");
            }
            other => panic!("unexpected {other:?}"),
        }
        let c1 = cmds[1].clone().unwrap();
        assert_eq!(c1.id, 2);
        match c1.into_request() {
            Request::Subscribe(s) => {
                assert_eq!(s.channel, "news");
                assert_eq!(s.flag, 1);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn empty_object_is_a_pong() {
        let cmds = decode_all("{}");
        let c = cmds[0].clone().unwrap();
        assert_eq!(c.id, 0);
        assert!(matches!(c.into_request(), Request::None));
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let cmds = decode_all(
            "{\"id\":3,\"subscribe\":{\"channel\":\"a\",\"tf\":{\"x\":1},\"delta\":\"fossil\",\"offset\":null,\"epoch\":null},\"future\":[1,2]}",
        );
        match cmds[0].clone().unwrap().into_request() {
            Request::Subscribe(s) => {
                assert_eq!(s.channel, "a");
                assert_eq!(s.offset, 0);
                assert_eq!(s.epoch, "");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn offsets_may_be_strings() {
        let cmds = decode_all("{\"id\":3,\"subscribe\":{\"channel\":\"a\",\"recover\":true,\"offset\":\"42\",\"epoch\":\"e\"}}");
        match cmds[0].clone().unwrap().into_request() {
            Request::Subscribe(s) => assert_eq!((s.offset, s.recover), (42, true)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn raw_payloads_are_kept_as_json_text_without_newlines() {
        let cmds = decode_all("{\"id\":4,\"publish\":{\"channel\":\"a\",\"data\":{\"text\":\"hi\\nthere\",\r \"n\":[1,\r2]}}}");
        match cmds[0].clone().unwrap().into_request() {
            Request::Publish(p) => {
                let s = std::str::from_utf8(&p.data).unwrap();
                assert!(!s.contains('\n'));
                let v: serde_json::Value = serde_json::from_str(s).unwrap();
                assert_eq!(v["text"], "hi\nthere");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        for bad in [
            "{",
            "[1,2]",
            "\"x\"",
            "{\"id\":-1}",
            "{\"id\":\"x\"}",
            "nul",
            "{\"connect\":5,\"id\":1}",
        ] {
            let r = decode_all(bad);
            assert!(r[0].is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn trailing_newline_and_blank_lines_are_tolerated() {
        assert_eq!(decode_all("{\"id\":1,\"ping\":{}}\n").len(), 1);
        assert_eq!(decode_all("{}\n\n{}").len(), 2);
    }

    #[test]
    fn encodes_connect_result_omitting_empty_fields() {
        let r = Reply::new(
            1,
            ReplyBody::Connect(ConnectResult {
                client: "c1".into(),
                version: "1.0".into(),
                ping: 25,
                pong: true,
                ..Default::default()
            }),
        );
        assert_eq!(
            encode(&r),
            r#"{"id":1,"connect":{"client":"c1","version":"1.0","ping":25,"pong":true}}"#
        );
    }

    #[test]
    fn encodes_empty_results_as_empty_objects() {
        assert_eq!(
            encode(&Reply::new(3, ReplyBody::Publish(Empty {}))),
            r#"{"id":3,"publish":{}}"#
        );
    }

    #[test]
    fn history_and_presence_stats_always_write_their_fields() {
        assert_eq!(
            encode(&Reply::new(5, ReplyBody::History(HistoryResult::default()))),
            r#"{"id":5,"history":{"publications":[],"epoch":"","offset":0}}"#
        );
        assert_eq!(
            encode(&Reply::new(
                6,
                ReplyBody::PresenceStats(PresenceStatsResult::default())
            )),
            r#"{"id":6,"presence_stats":{"num_clients":0,"num_users":0}}"#
        );
        assert_eq!(
            encode(&Reply::new(
                7,
                ReplyBody::Presence(PresenceResult::default())
            )),
            r#"{"id":7,"presence":{"presence":{}}}"#
        );
    }

    #[test]
    fn encodes_publication_push_with_raw_data_and_offset() {
        let push = Reply::push(Push {
            channel: "news".into(),
            body: PushBody::Pub(Publication {
                data: Bytes::from_static(br#"{"text":"hi"}"#),
                offset: 7,
                info: Some(ClientInfo {
                    user: "".into(),
                    client: "c".into(),
                    ..Default::default()
                }),
                tags: HashMap::new(),
            }),
        });
        assert_eq!(
            encode(&push),
            r#"{"push":{"channel":"news","pub":{"data":{"text":"hi"},"info":{"user":"","client":"c"},"offset":7}}}"#
        );
    }

    #[test]
    fn encodes_error_reply_and_ping() {
        assert_eq!(
            encode(&Reply::error(9, &Error::UNRECOVERABLE_POSITION)),
            r#"{"id":9,"error":{"code":112,"message":"unrecoverable position"}}"#
        );
        assert_eq!(
            encode(&Reply::error(9, &Error::INTERNAL)),
            r#"{"id":9,"error":{"code":100,"message":"internal server error","temporary":true}}"#
        );
        assert_eq!(encode(&Reply::new(0, ReplyBody::Ping)), "{}");
    }

    #[test]
    fn binary_payload_cannot_be_encoded_as_json() {
        let push = Reply::push(Push {
            channel: "b".into(),
            body: PushBody::Pub(Publication {
                data: Bytes::from_static(&[0xff, 0x00, 0x01]),
                ..Default::default()
            }),
        });
        assert!(encode_reply(&push).is_err());
    }

    #[test]
    fn unsubscribe_push_and_join() {
        let r = Reply::push(Push {
            channel: "c".into(),
            body: PushBody::Unsubscribe {
                code: 2000,
                reason: "server unsubscribe".into(),
            },
        });
        assert_eq!(
            encode(&r),
            r#"{"push":{"channel":"c","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#
        );
    }

    #[test]
    fn frames_are_joined_with_single_newlines() {
        let a = Bytes::from_static(b"{}");
        let b = Bytes::from_static(b"{\"id\":1,\"publish\":{}}");
        assert_eq!(&join_frame([&a, &b])[..], b"{}\n{\"id\":1,\"publish\":{}}");
    }
}
