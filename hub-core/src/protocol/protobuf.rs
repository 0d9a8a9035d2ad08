//! The Protobuf flavour's codec: sans-IO, no sockets involved.
//!
//! Binary frames hold one or more messages, each prefixed by its length as an unsigned varint
//! (PROTOCOL.md §1.8). The messages are those of `client.proto` (`package
//! centrifugal.centrifuge.protocol`, reference copy in `hub-core/proto/client.proto`). An
//! empty message (the single byte `0x00`) is the server ping one way and the client pong the
//! other. `bytes` fields carry raw bytes, so binary payloads are fine here; JSON payloads go
//! out as their UTF-8 text.

mod wire;

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use super::*;

/// The encoded server ping: an empty Reply, i.e. its length prefix `0`.
pub const PING: &[u8] = &[0];

/// Splits a frame into commands, in order. An empty command (`0x00`) is a pong and decodes to
/// [`Command::default()`]. A malformed command (bad length prefix, a length past the end of
/// the frame, a message that does not decode) yields an error and ends the iteration.
pub fn decode_commands(frame: &[u8]) -> impl Iterator<Item = Result<Command, DecodeError>> + '_ {
    let mut rest = frame;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let next = next_command(&mut rest);
        if next.is_err() {
            rest = &[];
        }
        Some(next)
    })
}

/// Decodes the command at the start of `rest` and moves `rest` past it. The claimed length is
/// checked against the bytes present before anything is decoded.
fn next_command(rest: &mut &[u8]) -> Result<Command, DecodeError> {
    let len = prost::decode_length_delimiter(&mut *rest)
        .map_err(|e| DecodeError(format!("bad command length prefix: {e}")))?;
    if len > rest.len() {
        return Err(DecodeError(format!(
            "command length {len} goes past the end of the frame ({} bytes left)",
            rest.len()
        )));
    }
    let (msg, tail) = rest.split_at(len);
    *rest = tail;
    let cmd = wire::Command::decode(msg).map_err(|e| DecodeError(format!("bad command: {e}")))?;
    Ok(cmd.into())
}

/// Encodes one reply (or push, or ping) with its varint length prefix, so a frame of several
/// replies is their plain concatenation.
pub fn encode_reply(reply: &Reply) -> Result<Bytes, EncodeError> {
    if matches!(reply.body, ReplyBody::Ping) {
        return Ok(Bytes::from_static(PING));
    }
    let msg = wire::Reply::from(reply);
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(prost::length_delimiter_len(len) + len);
    msg.encode_length_delimited(&mut buf)
        .map_err(|e| EncodeError(e.to_string()))?;
    Ok(buf.freeze())
}

// ---- wire → hub (commands) ----

impl From<wire::Command> for Command {
    fn from(c: wire::Command) -> Self {
        Command {
            id: c.id,
            connect: c.connect.map(Into::into),
            subscribe: c.subscribe.map(Into::into),
            unsubscribe: c
                .unsubscribe
                .map(|r| UnsubscribeRequest { channel: r.channel }),
            publish: c.publish.map(|r| PublishRequest {
                channel: r.channel,
                data: r.data,
            }),
            presence: c.presence.map(|r| ChannelRequest { channel: r.channel }),
            presence_stats: c
                .presence_stats
                .map(|r| ChannelRequest { channel: r.channel }),
            history: c.history.map(|r| HistoryRequest {
                channel: r.channel,
                limit: r.limit,
                since: r.since.map(|p| StreamPosition {
                    offset: p.offset,
                    epoch: p.epoch,
                }),
                reverse: r.reverse,
            }),
            ping: c.ping.map(|_| serde::de::IgnoredAny),
            send: c.send.map(|r| SendRequest { data: r.data }),
            rpc: c.rpc.map(|r| RpcRequest {
                data: r.data,
                method: r.method,
            }),
            refresh: c.refresh.map(|r| RefreshRequest { token: r.token }),
            sub_refresh: c.sub_refresh.map(|r| SubRefreshRequest {
                channel: r.channel,
                token: r.token,
            }),
        }
    }
}

impl From<wire::ConnectRequest> for ConnectRequest {
    fn from(r: wire::ConnectRequest) -> Self {
        ConnectRequest {
            token: r.token,
            data: r.data,
            subs: r.subs.into_iter().map(|(k, v)| (k, v.into())).collect(),
            name: r.name,
            version: r.version,
            headers: r.headers,
        }
    }
}

impl From<wire::SubscribeRequest> for SubscribeRequest {
    fn from(r: wire::SubscribeRequest) -> Self {
        SubscribeRequest {
            channel: r.channel,
            token: r.token,
            recover: r.recover,
            epoch: r.epoch,
            offset: r.offset,
            data: r.data,
            positioned: r.positioned,
            recoverable: r.recoverable,
            join_leave: r.join_leave,
            flag: r.flag,
        }
    }
}

// ---- hub → wire (replies) ----

impl From<&Reply> for wire::Reply {
    fn from(reply: &Reply) -> Self {
        let mut w = wire::Reply {
            id: reply.id,
            ..Default::default()
        };
        match &reply.body {
            ReplyBody::Error(e) => {
                w.error = Some(wire::Error {
                    code: e.code,
                    message: e.message.clone(),
                    temporary: e.temporary,
                })
            }
            ReplyBody::Push(p) => w.push = Some(p.into()),
            ReplyBody::Connect(r) => w.connect = Some(r.into()),
            ReplyBody::Subscribe(r) => w.subscribe = Some(r.into()),
            ReplyBody::Unsubscribe(Empty {}) => w.unsubscribe = Some(wire::Empty {}),
            ReplyBody::Publish(Empty {}) => w.publish = Some(wire::Empty {}),
            ReplyBody::Presence(r) => {
                w.presence = Some(wire::PresenceResult {
                    presence: r
                        .presence
                        .iter()
                        .map(|(k, v)| (k.clone(), v.into()))
                        .collect(),
                })
            }
            ReplyBody::PresenceStats(r) => {
                w.presence_stats = Some(wire::PresenceStatsResult {
                    num_clients: r.num_clients,
                    num_users: r.num_users,
                })
            }
            ReplyBody::History(r) => {
                w.history = Some(wire::HistoryResult {
                    publications: r.publications.iter().map(Into::into).collect(),
                    epoch: r.epoch.clone(),
                    offset: r.offset,
                })
            }
            ReplyBody::Rpc(r) => {
                w.rpc = Some(wire::RpcResult {
                    data: r.data.clone(),
                })
            }
            ReplyBody::Refresh(r) => {
                w.refresh = Some(wire::RefreshResult {
                    client: r.client.clone(),
                    version: r.version.clone(),
                    expires: r.expires,
                    ttl: r.ttl,
                })
            }
            ReplyBody::SubRefresh(r) => {
                w.sub_refresh = Some(wire::SubRefreshResult {
                    expires: r.expires,
                    ttl: r.ttl,
                })
            }
            ReplyBody::Ping => {}
        }
        w
    }
}

impl From<&Push> for wire::Push {
    fn from(p: &Push) -> Self {
        let mut w = wire::Push {
            channel: p.channel.clone(),
            ..Default::default()
        };
        match &p.body {
            PushBody::Pub(publication) => w.r#pub = Some(publication.into()),
            PushBody::Join { info } => {
                w.join = Some(wire::Join {
                    info: Some(info.into()),
                })
            }
            PushBody::Leave { info } => {
                w.leave = Some(wire::Join {
                    info: Some(info.into()),
                })
            }
            PushBody::Unsubscribe { code, reason } => {
                w.unsubscribe = Some(wire::Unsubscribe {
                    code: *code,
                    reason: reason.clone(),
                })
            }
            PushBody::Subscribe(s) => {
                w.subscribe = Some(wire::Subscribe {
                    recoverable: s.recoverable,
                    epoch: s.epoch.clone(),
                    offset: s.offset,
                    positioned: s.positioned,
                    data: s.data.clone(),
                })
            }
            PushBody::Message { data } => w.message = Some(wire::Message { data: data.clone() }),
            PushBody::Disconnect {
                code,
                reason,
                reconnect,
            } => {
                w.disconnect = Some(wire::Disconnect {
                    code: *code,
                    reason: reason.clone(),
                    reconnect: *reconnect,
                })
            }
        }
        w
    }
}

impl From<&ClientInfo> for wire::ClientInfo {
    fn from(i: &ClientInfo) -> Self {
        wire::ClientInfo {
            user: i.user.clone(),
            client: i.client.clone(),
            conn_info: i.conn_info.clone(),
            chan_info: i.chan_info.clone(),
        }
    }
}

impl From<&Publication> for wire::Publication {
    fn from(p: &Publication) -> Self {
        wire::Publication {
            data: p.data.clone(),
            info: p.info.as_ref().map(Into::into),
            offset: p.offset,
            tags: p.tags.clone(),
        }
    }
}

impl From<&ConnectResult> for wire::ConnectResult {
    fn from(r: &ConnectResult) -> Self {
        wire::ConnectResult {
            client: r.client.clone(),
            version: r.version.clone(),
            expires: r.expires,
            ttl: r.ttl,
            data: r.data.clone(),
            subs: r.subs.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            ping: r.ping,
            pong: r.pong,
        }
    }
}

impl From<&SubscribeResult> for wire::SubscribeResult {
    fn from(r: &SubscribeResult) -> Self {
        wire::SubscribeResult {
            expires: r.expires,
            ttl: r.ttl,
            recoverable: r.recoverable,
            epoch: r.epoch.clone(),
            publications: r.publications.iter().map(Into::into).collect(),
            recovered: r.recovered,
            offset: r.offset,
            positioned: r.positioned,
            data: r.data.clone(),
            was_recovering: r.was_recovering,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::error::Error;

    /// A frame of wire commands, each with its length prefix, as a client sends them.
    fn frame(cmds: &[wire::Command]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cmds {
            c.encode_length_delimited(&mut out).unwrap();
        }
        out
    }

    fn decode_one(cmd: wire::Command) -> Command {
        let f = frame(&[cmd]);
        let mut cmds: Vec<_> = decode_commands(&f).collect();
        assert_eq!(cmds.len(), 1);
        cmds.pop().unwrap().unwrap()
    }

    /// Encodes a reply and decodes it back with the wire structs, checking the length prefix.
    fn round_trip(reply: &Reply) -> wire::Reply {
        let bytes = encode_reply(reply).unwrap();
        let mut buf = &bytes[..];
        let len = prost::decode_length_delimiter(&mut buf).unwrap();
        assert_eq!(len, buf.len(), "length prefix covers exactly the message");
        wire::Reply::decode(buf).unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn info(user: &str, client: &str) -> ClientInfo {
        ClientInfo {
            user: user.into(),
            client: client.into(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_connect_with_subs_and_headers() {
        let cmd = decode_one(wire::Command {
            id: 1,
            connect: Some(wire::ConnectRequest {
                token: "jwt".into(),
                data: Bytes::from_static(&[1, 2, 0xff]),
                subs: HashMap::from([(
                    "news".into(),
                    wire::SubscribeRequest {
                        recover: true,
                        offset: 5,
                        epoch: "e".into(),
                        ..Default::default()
                    },
                )]),
                name: "js".into(),
                version: "1.2".into(),
                headers: HashMap::from([("h".into(), "v".into())]),
            }),
            ..Default::default()
        });
        assert_eq!(cmd.id, 1);
        let Request::Connect(c) = cmd.into_request() else {
            panic!("not a connect")
        };
        assert_eq!((c.token.as_str(), &c.data[..]), ("jwt", &[1, 2, 0xff][..]));
        assert_eq!((c.name.as_str(), c.version.as_str()), ("js", "1.2"));
        let sub = &c.subs["news"];
        assert_eq!(
            (sub.recover, sub.offset, sub.epoch.as_str()),
            (true, 5, "e")
        );
        assert_eq!(c.headers["h"], "v");
    }

    #[test]
    fn decodes_subscribe_with_every_field() {
        let cmd = decode_one(wire::Command {
            id: 2,
            subscribe: Some(wire::SubscribeRequest {
                channel: "news".into(),
                token: "st".into(),
                recover: true,
                epoch: "ep".into(),
                offset: u64::MAX,
                data: Bytes::from_static(b"\x00bin"),
                positioned: true,
                recoverable: true,
                join_leave: true,
                flag: 3,
            }),
            ..Default::default()
        });
        assert_eq!(cmd.id, 2);
        let Request::Subscribe(s) = cmd.into_request() else {
            panic!("not a subscribe")
        };
        assert_eq!((s.channel.as_str(), s.token.as_str()), ("news", "st"));
        assert_eq!(
            (s.recover, s.epoch.as_str(), s.offset),
            (true, "ep", u64::MAX)
        );
        assert_eq!(&s.data[..], b"\x00bin");
        assert!(s.positioned && s.recoverable && s.join_leave);
        assert_eq!(s.flag, 3);
    }

    #[test]
    fn decodes_the_channel_requests() {
        let ch = |c: &str| Some(wire::ChannelRequest { channel: c.into() });
        let r = decode_one(wire::Command {
            id: 3,
            unsubscribe: ch("a"),
            ..Default::default()
        });
        assert!(matches!(r.into_request(), Request::Unsubscribe(u) if u.channel == "a"));
        let r = decode_one(wire::Command {
            id: 4,
            presence: ch("b"),
            ..Default::default()
        });
        assert!(matches!(r.into_request(), Request::Presence(p) if p.channel == "b"));
        let r = decode_one(wire::Command {
            id: 5,
            presence_stats: ch("c"),
            ..Default::default()
        });
        assert!(matches!(r.into_request(), Request::PresenceStats(p) if p.channel == "c"));
    }

    #[test]
    fn decodes_publish_send_and_rpc_with_binary_data() {
        let bin = Bytes::from_static(&[0, 159, 146, 150]);
        let r = decode_one(wire::Command {
            id: 6,
            publish: Some(wire::PublishRequest {
                channel: "a".into(),
                data: bin.clone(),
            }),
            ..Default::default()
        });
        assert!(
            matches!(r.into_request(), Request::Publish(p) if p.channel == "a" && p.data == bin)
        );
        let r = decode_one(wire::Command {
            send: Some(wire::SendRequest { data: bin.clone() }),
            ..Default::default()
        });
        assert_eq!(r.id, 0);
        assert!(matches!(r.into_request(), Request::Send(s) if s.data == bin));
        let r = decode_one(wire::Command {
            id: 7,
            rpc: Some(wire::RpcRequest {
                data: bin.clone(),
                method: "m".into(),
            }),
            ..Default::default()
        });
        assert!(matches!(r.into_request(), Request::Rpc(p) if p.method == "m" && p.data == bin));
    }

    #[test]
    fn decodes_history_with_and_without_since() {
        let r = decode_one(wire::Command {
            id: 8,
            history: Some(wire::HistoryRequest {
                channel: "h".into(),
                limit: -1,
                since: Some(wire::StreamPosition {
                    offset: 9,
                    epoch: "e".into(),
                }),
                reverse: true,
            }),
            ..Default::default()
        });
        let Request::History(h) = r.into_request() else {
            panic!("not a history")
        };
        assert_eq!((h.channel.as_str(), h.limit, h.reverse), ("h", -1, true));
        assert_eq!(
            h.since,
            Some(StreamPosition {
                offset: 9,
                epoch: "e".into()
            })
        );
        let r = decode_one(wire::Command {
            id: 8,
            history: Some(wire::HistoryRequest {
                channel: "h".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(
            matches!(r.into_request(), Request::History(h) if h.since.is_none() && h.limit == 0)
        );
    }

    #[test]
    fn decodes_ping_refresh_and_sub_refresh() {
        let r = decode_one(wire::Command {
            id: 9,
            ping: Some(wire::Empty {}),
            ..Default::default()
        });
        assert!(matches!(r.into_request(), Request::Ping));
        let r = decode_one(wire::Command {
            id: 10,
            refresh: Some(wire::RefreshRequest { token: "t".into() }),
            ..Default::default()
        });
        assert!(matches!(r.into_request(), Request::Refresh(x) if x.token == "t"));
        let r = decode_one(wire::Command {
            id: 11,
            sub_refresh: Some(wire::SubRefreshRequest {
                channel: "c".into(),
                token: "st".into(),
            }),
            ..Default::default()
        });
        assert!(
            matches!(r.into_request(), Request::SubRefresh(x) if x.channel == "c" && x.token == "st")
        );
    }

    #[test]
    fn an_empty_request_is_present_not_absent() {
        // `{"id":3,"unsubscribe":{}}`: the field is there even with nothing in it.
        let r = decode_one(wire::Command {
            id: 3,
            unsubscribe: Some(wire::ChannelRequest::default()),
            ..Default::default()
        });
        assert!(matches!(r.into_request(), Request::Unsubscribe(u) if u.channel.is_empty()));
    }

    #[test]
    fn decodes_several_commands_in_one_frame_in_order() {
        let f = frame(&[
            wire::Command {
                id: 1,
                connect: Some(wire::ConnectRequest {
                    name: "js".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            wire::Command::default(),
            wire::Command {
                id: 2,
                subscribe: Some(wire::SubscribeRequest {
                    channel: "news".into(),
                    flag: 1,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        let cmds: Vec<_> = decode_commands(&f).map(Result::unwrap).collect();
        assert_eq!(cmds.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 0, 2]);
        let mut reqs = cmds.into_iter().map(Command::into_request);
        assert!(matches!(reqs.next(), Some(Request::Connect(c)) if c.name == "js"));
        assert!(matches!(reqs.next(), Some(Request::None)));
        assert!(matches!(reqs.next(), Some(Request::Subscribe(s)) if s.channel == "news"));
    }

    #[test]
    fn decodes_a_frame_encoded_by_centrifuge_js() {
        // centrifuge 5.8 (npm) `build/protobuf`, `encodeCommands` of a connect
        // `{id:1, token:'t', name:'js', version:'1.2', data:'{"a":1}', subs:{news:{recover,
        // offset:5, epoch:'e'}}, headers:{h:'v'}}` and a subscribe `{id:2, channel:'news',
        // flag:1, recover, offset:7, epoch:'ep', positioned, recoverable, join_leave,
        // token:'st', data:[0,255], delta:'fossil'}`; then a pong.
        let f = hex("320801222e0a017412077b2261223a317d1a0f0a046e65777312071801320165380522026a732a03\
                     312e3232060a01681201762a08022a260a046e657773120273741801320265703807420200ff4801\
                     500158016206666f7373696c700100");
        let cmds: Vec<_> = decode_commands(&f).map(Result::unwrap).collect();
        assert_eq!(cmds.len(), 3);
        let mut it = cmds.into_iter();
        let c = it.next().unwrap();
        assert_eq!(c.id, 1);
        let Request::Connect(c) = c.into_request() else {
            panic!("not a connect")
        };
        assert_eq!((c.token.as_str(), c.name.as_str()), ("t", "js"));
        assert_eq!(
            (&c.data[..], c.version.as_str()),
            (&b"{\"a\":1}"[..], "1.2")
        );
        let s = &c.subs["news"];
        assert_eq!((s.recover, s.offset, s.epoch.as_str()), (true, 5, "e"));
        assert_eq!(c.headers["h"], "v");
        let s = it.next().unwrap();
        assert_eq!(s.id, 2);
        let Request::Subscribe(s) = s.into_request() else {
            panic!("not a subscribe")
        };
        assert_eq!(
            (s.channel.as_str(), s.token.as_str(), s.flag),
            ("news", "st", 1)
        );
        assert_eq!((s.recover, s.offset, s.epoch.as_str()), (true, 7, "ep"));
        assert!(s.positioned && s.recoverable && s.join_leave);
        assert_eq!(&s.data[..], &[0, 255]);
        let pong = it.next().unwrap();
        assert_eq!(pong.id, 0);
        assert!(matches!(pong.into_request(), Request::None));
    }

    #[test]
    fn decodes_every_other_command_encoded_by_centrifuge_js() {
        // centrifuge 5.8 `encodeCommands` of unsubscribe, publish (data [0,1]), presence,
        // presence_stats, history (limit -1, since {9,'ep'}, reverse), ping, send (no id),
        // rpc, refresh and sub_refresh.
        let f = hex(
            "07080332030a01610b08043a070a01621202000107080542030a01630708064a030a0164\
                     1c080752180a016538ffffffffffffffffff01420608091202657048010408085a000562\
                     030a01020a08096a060a010312016d08080a72040a0272740b080b7a070a016612027374",
        );
        let cmds: Vec<_> = decode_commands(&f).map(Result::unwrap).collect();
        let ids: Vec<u32> = cmds.iter().map(|c| c.id).collect();
        assert_eq!(ids, [3, 4, 5, 6, 7, 8, 0, 9, 10, 11]);
        let mut it = cmds.into_iter().map(Command::into_request);
        assert!(matches!(it.next(), Some(Request::Unsubscribe(r)) if r.channel == "a"));
        assert!(
            matches!(it.next(), Some(Request::Publish(r)) if r.channel == "b" && r.data[..] == [0, 1])
        );
        assert!(matches!(it.next(), Some(Request::Presence(r)) if r.channel == "c"));
        assert!(matches!(it.next(), Some(Request::PresenceStats(r)) if r.channel == "d"));
        let Some(Request::History(h)) = it.next() else {
            panic!("not a history")
        };
        assert_eq!((h.channel.as_str(), h.limit, h.reverse), ("e", -1, true));
        assert_eq!(
            h.since,
            Some(StreamPosition {
                offset: 9,
                epoch: "ep".into()
            })
        );
        assert!(matches!(it.next(), Some(Request::Ping)));
        assert!(matches!(it.next(), Some(Request::Send(r)) if r.data[..] == [2]));
        assert!(matches!(it.next(), Some(Request::Rpc(r)) if r.method == "m" && r.data[..] == [3]));
        assert!(matches!(it.next(), Some(Request::Refresh(r)) if r.token == "rt"));
        assert!(
            matches!(it.next(), Some(Request::SubRefresh(r)) if r.channel == "f" && r.token == "st")
        );
    }

    #[test]
    fn a_zero_byte_is_a_pong() {
        let cmds: Vec<_> = decode_commands(&[0]).collect();
        assert_eq!(cmds.len(), 1);
        let c = cmds[0].clone().unwrap();
        assert_eq!(c.id, 0);
        assert!(matches!(c.into_request(), Request::None));
        assert_eq!(decode_commands(&[0, 0]).count(), 2);
        assert_eq!(decode_commands(&[]).count(), 0);
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // Command { id: 1 (field 1), field 99 varint 5, subscribe { channel "a", tf (13) {} } }.
        let body = [
            0x08, 0x01, 0x98, 0x06, 0x05, 0x2a, 0x05, 0x0a, 0x01, b'a', 0x6a, 0x00,
        ];
        let mut f = vec![body.len() as u8];
        f.extend_from_slice(&body);
        let cmd = decode_commands(&f).next().unwrap().unwrap();
        assert_eq!(cmd.id, 1);
        assert!(matches!(cmd.into_request(), Request::Subscribe(s) if s.channel == "a"));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let good = frame(&[wire::Command {
            id: 1,
            ..Default::default()
        }]);
        let cases: [(&str, &[u8]); 10] = [
            ("truncated varint", &[0x80]),
            ("varint longer than 10 bytes", &[0xff; 11]),
            ("length past the end", &[0x05, 0x08, 0x01]),
            ("huge claimed length", &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x08]),
            ("garbage message", &[0x03, 0xff, 0xff, 0xff]),
            ("field number 0", &[0x02, 0x02, 0x00]),
            ("wrong wire type for id", &[0x02, 0x0a, 0x00]),
            ("nested length past the message", &[0x02, 0x22, 0x7f]),
            (
                "bad utf-8 in a string",
                &[0x05, 0x32, 0x03, 0x0a, 0x01, 0xff],
            ),
            ("unterminated group", &[0x01, 0x1b]),
        ];
        for (what, bad) in cases {
            let f = [&good[..], bad].concat();
            let r: Vec<_> = decode_commands(&f).collect();
            assert_eq!(r.len(), 2, "{what}: the good command, then one error");
            assert_eq!(r[0].as_ref().unwrap().id, 1, "{what}");
            assert!(r[1].is_err(), "{what} should fail");
        }
    }

    #[test]
    fn an_error_ends_the_frame() {
        let good = frame(&[wire::Command {
            id: 1,
            ..Default::default()
        }]);
        let f = [&good[..], &[0x03, 0xff, 0xff, 0xff], &good[..]].concat();
        let r: Vec<_> = decode_commands(&f).collect();
        assert_eq!(r.len(), 2);
        assert!(r[0].is_ok() && r[1].is_err());
    }

    #[test]
    fn ping_is_a_single_zero_byte() {
        let r = Reply::new(0, ReplyBody::Ping);
        assert_eq!(&encode_reply(&r).unwrap()[..], &[0]);
        assert_eq!(PING, &[0]);
    }

    #[test]
    fn golden_bytes_prove_the_field_numbers() {
        // Reply { id (1, varint) = 1, publish (8, length-delimited) = {} }.
        let r = Reply::new(1, ReplyBody::Publish(Empty {}));
        assert_eq!(
            &encode_reply(&r).unwrap()[..],
            &[0x04, 0x08, 0x01, 0x42, 0x00]
        );
        // Reply { push (4) { channel (2) "c", pub (4) { data (4) [0xff], offset (6) 7 } } }.
        let r = Reply::push(Push {
            channel: "c".into(),
            body: PushBody::Pub(Publication {
                data: Bytes::from_static(&[0xff]),
                offset: 7,
                ..Default::default()
            }),
        });
        assert_eq!(
            &encode_reply(&r).unwrap()[..],
            &[0x0c, 0x22, 0x0a, 0x12, 0x01, b'c', 0x22, 0x05, 0x22, 0x01, 0xff, 0x30, 0x07]
        );
        // Reply { id 2, error (2) { code (1) 112, message (2) "x" } }.
        let r = Reply::new(
            2,
            ReplyBody::Error(crate::protocol::ErrorReply {
                code: 112,
                message: "x".into(),
                temporary: false,
            }),
        );
        assert_eq!(
            &encode_reply(&r).unwrap()[..],
            &[0x09, 0x08, 0x02, 0x12, 0x05, 0x08, 0x70, 0x12, 0x01, b'x']
        );
    }

    #[test]
    fn connect_result_with_subs_round_trips() {
        let sub = SubscribeResult {
            recoverable: true,
            epoch: "e".into(),
            offset: 3,
            positioned: true,
            ..Default::default()
        };
        let r = Reply::new(
            1,
            ReplyBody::Connect(ConnectResult {
                client: "c1".into(),
                version: "1.0".into(),
                expires: true,
                ttl: 60,
                data: Bytes::from_static(b"{\"x\":1}"),
                subs: HashMap::from([("news".into(), sub)]),
                ping: 25,
                pong: true,
            }),
        );
        let w = round_trip(&r);
        assert_eq!(w.id, 1);
        let c = w.connect.unwrap();
        assert_eq!((c.client.as_str(), c.version.as_str()), ("c1", "1.0"));
        assert_eq!((c.expires, c.ttl, c.ping, c.pong), (true, 60, 25, true));
        assert_eq!(&c.data[..], b"{\"x\":1}");
        let s = &c.subs["news"];
        assert_eq!(
            (s.recoverable, s.epoch.as_str(), s.offset, s.positioned),
            (true, "e", 3, true)
        );
    }

    #[test]
    fn subscribe_result_with_publications_round_trips() {
        let pubs = vec![
            Publication {
                data: Bytes::from_static(&[1]),
                offset: 2,
                ..Default::default()
            },
            Publication {
                data: Bytes::from_static(&[2]),
                offset: 3,
                info: Some(info("u", "c")),
                ..Default::default()
            },
        ];
        let r = Reply::new(
            9,
            ReplyBody::Subscribe(SubscribeResult {
                expires: true,
                ttl: 30,
                recoverable: true,
                epoch: "abcd".into(),
                publications: pubs,
                recovered: true,
                offset: 1,
                positioned: true,
                data: Bytes::from_static(&[7]),
                was_recovering: true,
            }),
        );
        let s = round_trip(&r).subscribe.unwrap();
        assert_eq!(
            (s.expires, s.ttl, s.recoverable, s.recovered),
            (true, 30, true, true)
        );
        assert_eq!(
            (s.epoch.as_str(), s.offset, s.positioned),
            ("abcd", 1, true)
        );
        assert_eq!((&s.data[..], s.was_recovering), (&[7][..], true));
        assert_eq!(
            s.publications
                .iter()
                .map(|p| (p.data[0], p.offset))
                .collect::<Vec<_>>(),
            [(1, 2), (2, 3)]
        );
        let i = s.publications[1].info.as_ref().unwrap();
        assert_eq!((i.user.as_str(), i.client.as_str()), ("u", "c"));
    }

    #[test]
    fn publication_push_carries_binary_data_and_tags() {
        let r = Reply::push(Push {
            channel: "news".into(),
            body: PushBody::Pub(Publication {
                data: Bytes::from_static(&[0xff, 0x00, 0x01]),
                info: Some(ClientInfo {
                    user: "u".into(),
                    client: "c".into(),
                    conn_info: Bytes::from_static(&[9]),
                    chan_info: Bytes::from_static(b"{}"),
                }),
                offset: 7,
                tags: HashMap::from([("k".into(), "v".into()), ("a".into(), "b".into())]),
            }),
        });
        let w = round_trip(&r);
        assert_eq!(w.id, 0);
        let p = w.push.unwrap();
        assert_eq!(p.channel, "news");
        let publication = p.r#pub.unwrap();
        assert_eq!(&publication.data[..], &[0xff, 0x00, 0x01]);
        assert_eq!(publication.offset, 7);
        assert_eq!(publication.tags.len(), 2);
        assert_eq!(publication.tags["k"], "v");
        let i = publication.info.unwrap();
        assert_eq!((&i.conn_info[..], &i.chan_info[..]), (&[9][..], &b"{}"[..]));
    }

    #[test]
    fn other_pushes_round_trip() {
        let push = |body| {
            Reply::push(Push {
                channel: "ch".into(),
                body,
            })
        };
        let w = round_trip(&push(PushBody::Join {
            info: info("u", "c"),
        }))
        .push
        .unwrap();
        assert_eq!(w.join.unwrap().info.unwrap().client, "c");
        let w = round_trip(&push(PushBody::Leave {
            info: info("u", "c"),
        }))
        .push
        .unwrap();
        assert_eq!(w.leave.unwrap().info.unwrap().user, "u");
        let w = round_trip(&push(PushBody::Unsubscribe {
            code: 2500,
            reason: "r".into(),
        }))
        .push
        .unwrap();
        assert_eq!(
            w.unsubscribe,
            Some(wire::Unsubscribe {
                code: 2500,
                reason: "r".into()
            })
        );
        let w = round_trip(&push(PushBody::Subscribe(SubscribePush {
            recoverable: true,
            epoch: "e".into(),
            offset: 4,
            positioned: true,
            data: Bytes::from_static(&[1]),
        })))
        .push
        .unwrap();
        let s = w.subscribe.unwrap();
        assert_eq!(
            (s.recoverable, s.epoch.as_str(), s.offset, s.positioned),
            (true, "e", 4, true)
        );
        let w = round_trip(&push(PushBody::Message {
            data: Bytes::from_static(&[5, 6]),
        }))
        .push
        .unwrap();
        assert_eq!(&w.message.unwrap().data[..], &[5, 6]);
        let w = round_trip(&push(PushBody::Disconnect {
            code: 3000,
            reason: "bye".into(),
            reconnect: true,
        }))
        .push
        .unwrap();
        assert_eq!(
            w.disconnect,
            Some(wire::Disconnect {
                code: 3000,
                reason: "bye".into(),
                reconnect: true
            })
        );
    }

    #[test]
    fn presence_result_is_a_map_of_client_info() {
        let r = Reply::new(
            4,
            ReplyBody::Presence(PresenceResult {
                presence: HashMap::from([
                    ("c1".into(), info("u1", "c1")),
                    ("c2".into(), info("", "c2")),
                ]),
            }),
        );
        let p = round_trip(&r).presence.unwrap().presence;
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p["c1"].user.as_str(), p["c1"].client.as_str()),
            ("u1", "c1")
        );
        assert_eq!((p["c2"].user.as_str(), p["c2"].client.as_str()), ("", "c2"));
        let s = round_trip(&Reply::new(
            5,
            ReplyBody::PresenceStats(PresenceStatsResult {
                num_clients: 3,
                num_users: 2,
            }),
        ))
        .presence_stats
        .unwrap();
        assert_eq!((s.num_clients, s.num_users), (3, 2));
    }

    #[test]
    fn history_result_round_trips() {
        let r = Reply::new(
            6,
            ReplyBody::History(HistoryResult {
                publications: vec![Publication {
                    data: Bytes::from_static(b"\"hi\""),
                    offset: 10,
                    ..Default::default()
                }],
                epoch: "e".into(),
                offset: 10,
            }),
        );
        let h = round_trip(&r).history.unwrap();
        assert_eq!((h.epoch.as_str(), h.offset), ("e", 10));
        assert_eq!(h.publications.len(), 1);
        assert_eq!(&h.publications[0].data[..], b"\"hi\"");
        // An empty history is an empty message, not an absent one.
        let h = round_trip(&Reply::new(7, ReplyBody::History(HistoryResult::default())));
        assert_eq!(h.history, Some(wire::HistoryResult::default()));
    }

    #[test]
    fn error_and_empty_results_round_trip() {
        let w = round_trip(&Reply::error(9, &Error::INTERNAL));
        assert_eq!(w.id, 9);
        assert_eq!(
            w.error,
            Some(wire::Error {
                code: 100,
                message: "internal server error".into(),
                temporary: true
            })
        );
        let w = round_trip(&Reply::new(3, ReplyBody::Unsubscribe(Empty {})));
        assert_eq!((w.id, w.unsubscribe), (3, Some(wire::Empty {})));
        let w = round_trip(&Reply::new(4, ReplyBody::Publish(Empty {})));
        assert_eq!((w.id, w.publish), (4, Some(wire::Empty {})));
    }

    #[test]
    fn rpc_and_refresh_results_round_trip() {
        let w = round_trip(&Reply::new(
            1,
            ReplyBody::Rpc(RpcResult {
                data: Bytes::from_static(&[0, 1]),
            }),
        ));
        assert_eq!(&w.rpc.unwrap().data[..], &[0, 1]);
        let w = round_trip(&Reply::new(
            2,
            ReplyBody::Refresh(RefreshResult {
                client: "c".into(),
                version: "v".into(),
                expires: true,
                ttl: 9,
            }),
        ));
        assert_eq!(
            w.refresh,
            Some(wire::RefreshResult {
                client: "c".into(),
                version: "v".into(),
                expires: true,
                ttl: 9
            })
        );
        let w = round_trip(&Reply::new(
            3,
            ReplyBody::SubRefresh(SubRefreshResult {
                expires: true,
                ttl: 8,
            }),
        ));
        assert_eq!(
            w.sub_refresh,
            Some(wire::SubRefreshResult {
                expires: true,
                ttl: 8
            })
        );
    }

    #[test]
    fn replies_concatenate_into_one_frame() {
        let a = encode_reply(&Reply::new(1, ReplyBody::Publish(Empty {}))).unwrap();
        let b = encode_reply(&Reply::new(0, ReplyBody::Ping)).unwrap();
        let c = encode_reply(&Reply::error(2, &Error::BAD_REQUEST)).unwrap();
        let mut f: &[u8] = &[a, b, c].concat();
        let mut ids = Vec::new();
        while !f.is_empty() {
            let len = prost::decode_length_delimiter(&mut f).unwrap();
            let (msg, rest) = f.split_at(len);
            ids.push(wire::Reply::decode(msg).unwrap().id);
            f = rest;
        }
        assert_eq!(ids, [1, 0, 2]);
    }
}
