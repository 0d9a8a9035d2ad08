//! The Protobuf flavour of the client protocol (`--protobuf`): just the messages of
//! `centrifugal.centrifuge.protocol` (`client.proto`) that the load client sends or reads,
//! as hand-written prost structs (no build script). Field numbers are those of the real
//! client's generated code (centrifuge-js `build/protobuf`); unknown fields are skipped.
//!
//! Framing: each Command or Reply is prefixed by its length as an unsigned varint, several
//! to a binary frame. The server ping is an empty Reply (the single byte `0x00`), answered
//! with an empty Command ([`PONG`]).

use prost::Message as _;

/// The pong: an empty Command, i.e. a length prefix of 0.
pub(crate) const PONG: &[u8] = &[0x00];

/// A command (only connect and subscribe are sent).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Command {
    #[prost(uint32, tag = "1")]
    pub(crate) id: u32,
    #[prost(message, optional, tag = "4")]
    pub(crate) connect: Option<ConnectRequest>,
    #[prost(message, optional, tag = "5")]
    pub(crate) subscribe: Option<SubscribeRequest>,
}

/// `connect` with a token.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ConnectRequest {
    #[prost(string, tag = "1")]
    pub(crate) token: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) data: Vec<u8>,
    #[prost(string, tag = "4")]
    pub(crate) name: String,
    #[prost(string, tag = "5")]
    pub(crate) version: String,
}

/// `subscribe` to a channel.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SubscribeRequest {
    #[prost(string, tag = "1")]
    pub(crate) channel: String,
    #[prost(string, tag = "2")]
    pub(crate) token: String,
    #[prost(bool, tag = "3")]
    pub(crate) recover: bool,
    #[prost(string, tag = "6")]
    pub(crate) epoch: String,
    #[prost(uint64, tag = "7")]
    pub(crate) offset: u64,
}

/// A reply to a command, or a push (id 0); empty, a ping.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Reply {
    #[prost(uint32, tag = "1")]
    pub(crate) id: u32,
    #[prost(message, optional, tag = "2")]
    pub(crate) error: Option<Error>,
    #[prost(message, optional, tag = "4")]
    pub(crate) push: Option<Push>,
    #[prost(message, optional, tag = "5")]
    pub(crate) connect: Option<ConnectResult>,
    #[prost(message, optional, tag = "6")]
    pub(crate) subscribe: Option<SubscribeResult>,
}

/// An error reply.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Error {
    #[prost(uint32, tag = "1")]
    pub(crate) code: u32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(bool, tag = "3")]
    pub(crate) temporary: bool,
}

/// A push: a publication, an unsubscribe, a disconnect (the others are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Push {
    #[prost(string, tag = "2")]
    pub(crate) channel: String,
    #[prost(message, optional, tag = "4")]
    pub(crate) publication: Option<Publication>,
    #[prost(message, optional, tag = "7")]
    pub(crate) unsubscribe: Option<Unsubscribe>,
    #[prost(message, optional, tag = "11")]
    pub(crate) disconnect: Option<Disconnect>,
}

/// A publication; `data` is raw bytes (absent reads as empty).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Publication {
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) data: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub(crate) info: Option<ClientInfo>,
    #[prost(uint64, tag = "6")]
    pub(crate) offset: u64,
    #[prost(map = "string, string", tag = "7")]
    pub(crate) tags: std::collections::HashMap<String, String>,
}

/// The publisher's client info.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ClientInfo {
    #[prost(string, tag = "1")]
    pub(crate) user: String,
    #[prost(string, tag = "2")]
    pub(crate) client: String,
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) conn_info: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) chan_info: Vec<u8>,
}

/// The server unsubscribed the connection from the push's channel.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Unsubscribe {
    #[prost(uint32, tag = "2")]
    pub(crate) code: u32,
    #[prost(string, tag = "3")]
    pub(crate) reason: String,
}

/// The server is closing the connection.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Disconnect {
    #[prost(uint32, tag = "1")]
    pub(crate) code: u32,
    #[prost(string, tag = "2")]
    pub(crate) reason: String,
    #[prost(bool, tag = "3")]
    pub(crate) reconnect: bool,
}

/// The result of `connect`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ConnectResult {
    #[prost(string, tag = "1")]
    pub(crate) client: String,
    #[prost(string, tag = "2")]
    pub(crate) version: String,
    #[prost(bool, tag = "3")]
    pub(crate) expires: bool,
    #[prost(uint32, tag = "4")]
    pub(crate) ttl: u32,
    #[prost(bytes = "vec", tag = "5")]
    pub(crate) data: Vec<u8>,
    #[prost(uint32, tag = "7")]
    pub(crate) ping: u32,
    #[prost(bool, tag = "8")]
    pub(crate) pong: bool,
}

/// The result of `subscribe`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SubscribeResult {
    #[prost(bool, tag = "1")]
    pub(crate) expires: bool,
    #[prost(uint32, tag = "2")]
    pub(crate) ttl: u32,
    #[prost(bool, tag = "3")]
    pub(crate) recoverable: bool,
    #[prost(string, tag = "6")]
    pub(crate) epoch: String,
    #[prost(bool, tag = "8")]
    pub(crate) recovered: bool,
    #[prost(uint64, tag = "9")]
    pub(crate) offset: u64,
    #[prost(bool, tag = "10")]
    pub(crate) positioned: bool,
    #[prost(bool, tag = "12")]
    pub(crate) was_recovering: bool,
}

/// The frame that connects and subscribes: `connect` with id 1, then `subscribe` with ids
/// 2, 3, ... one per channel, each prefixed by its length.
pub(crate) fn opening_frame(token: &str, channels: &[String]) -> Vec<u8> {
    let mut frame = Vec::new();
    let connect = Command {
        id: 1,
        connect: Some(ConnectRequest {
            token: token.to_owned(),
            name: "loadtest".into(),
            ..ConnectRequest::default()
        }),
        ..Command::default()
    };
    // Encoding into a Vec only fails for want of room, which a Vec always has.
    let _ = connect.encode_length_delimited(&mut frame);
    for (i, ch) in channels.iter().enumerate() {
        let subscribe = Command {
            id: i as u32 + 2,
            subscribe: Some(SubscribeRequest {
                channel: ch.clone(),
                ..SubscribeRequest::default()
            }),
            ..Command::default()
        };
        let _ = subscribe.encode_length_delimited(&mut frame);
    }
    frame
}

/// Splits a binary frame into its Replies (each prefixed by its length as a varint).
pub(crate) fn replies(frame: &[u8]) -> impl Iterator<Item = Result<Reply, String>> + '_ {
    let mut rest = frame;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = match prost::encoding::decode_varint(&mut rest) {
            Ok(l) => l,
            Err(e) => {
                rest = &[];
                return Some(Err(format!("a bad length prefix ({e})")));
            }
        };
        let Some(body) = usize::try_from(len).ok().and_then(|l| rest.get(..l)) else {
            let err = format!(
                "a Reply of {len} bytes with {} left in the frame",
                rest.len()
            );
            rest = &[];
            return Some(Err(err));
        };
        rest = &rest[body.len()..];
        Some(Reply::decode(body).map_err(|e| format!("an invalid Reply ({e})")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delimited(m: &impl prost::Message) -> Vec<u8> {
        m.encode_length_delimited_to_vec()
    }

    #[test]
    fn the_opening_frame_has_the_js_clients_tags() {
        let f = opening_frame("tk", &["ch".into()]);
        // Tags as centrifuge-js writes them: Command.id 8, Command.connect 34,
        // ConnectRequest.token 10 and name 34, Command.subscribe 42, SubscribeRequest.channel 10.
        let connect: &[u8] = &[
            18, 8, 1, 34, 14, 10, 2, b't', b'k', 34, 8, b'l', b'o', b'a', b'd', b't', b'e', b's',
            b't',
        ];
        let subscribe: &[u8] = &[8, 8, 2, 42, 4, 10, 2, b'c', b'h'];
        assert_eq!(f, [connect, subscribe].concat());
    }

    #[test]
    fn replies_pings_and_publications_in_one_frame() {
        let connect = Reply {
            id: 1,
            connect: Some(ConnectResult {
                client: "c".into(),
                ping: 25,
                pong: true,
                ..ConnectResult::default()
            }),
            ..Reply::default()
        };
        // An empty subscribe result still marks the reply as one.
        let subscribe = Reply {
            id: 2,
            subscribe: Some(SubscribeResult::default()),
            ..Reply::default()
        };
        let publication = Reply {
            push: Some(Push {
                channel: "x".into(),
                publication: Some(Publication {
                    data: br#"{"t":5,"seq":1}"#.to_vec(),
                    offset: 3,
                    ..Publication::default()
                }),
                ..Push::default()
            }),
            ..Reply::default()
        };
        let mut frame = vec![0x00];
        frame.extend(delimited(&connect));
        frame.extend(delimited(&subscribe));
        frame.push(0x00);
        frame.extend(delimited(&publication));
        let got: Vec<Reply> = replies(&frame).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            [
                Reply::default(),
                connect,
                subscribe,
                Reply::default(),
                publication
            ]
        );
        // The push as the server writes it: Reply.push 34, Push.channel 18, Push.pub 34,
        // Publication.data 34, Publication.offset 48.
        let wire = [
            34, 24, 18, 1, b'x', 34, 19, 34, 15, b'{', b'"', b't', b'"', b':', b'5', b',', b'"',
            b's', b'e', b'q', b'"', b':', b'1', b'}', 48, 3,
        ];
        assert_eq!(&delimited(&got[4])[1..], wire);
    }

    #[test]
    fn broken_frames_are_errors() {
        // A length past the end of the frame.
        let e = replies(&[5, 8, 1]).next().unwrap().unwrap_err();
        assert!(e.contains("5 bytes"), "{e}");
        // A varint that never ends.
        assert!(replies(&[0xff]).next().unwrap().is_err());
        // A Reply with a truncated field inside.
        assert!(replies(&[2, 34, 9]).next().unwrap().is_err());
        assert_eq!(replies(&[]).count(), 0);
        // Unknown fields are skipped.
        let r: Vec<_> = replies(&[5, 8, 7, 0xa0, 0x01, 1]).collect();
        assert_eq!(
            r,
            [Ok(Reply {
                id: 7,
                ..Reply::default()
            })]
        );
        // An error reply: Reply.error 18, Error.code 8, Error.message 18.
        let r = replies(&[9, 8, 2, 18, 5, 8, 103, 18, 1, b'x'])
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            r.error.map(|e| (e.code, e.message)),
            Some((103, "x".into()))
        );
    }
}
