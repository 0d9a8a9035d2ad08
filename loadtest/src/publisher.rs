//! The path a publication takes to the hub (`--publish-via`): the HTTP server API (a pool of
//! keep-alive connections, [`ApiClient`]), the gRPC server API (hub-client's [`HubClient`]
//! over `--publish-connections` HTTP/2 connections), or a `publish` command from one more
//! client connection ([`ClientPublisher`], commands pipelined on it). Each path is checked
//! before any subscriber opens: `/api/info` for HTTP, one probe publication for the others.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hub_client::{ClientError, HubClient};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::cli::{ApiOpts, ConnectOpts, PublishVia};
use crate::conn::{self, Answer};
use crate::publish::{ApiClient, CallError};
use crate::target;
use crate::ws::{Incoming, WebSocket};

/// The user of the client publisher's connection token.
pub(crate) const PUBLISHER_USER: &str = "lt-publisher";

/// The data of the probe publication that checks the grpc and client paths.
const PROBE: &str = r#"{"loadtest":"probe"}"#;

/// Commands queued together go in one frame up to this length: half the hub's default
/// `client.max_message_size` (64 KiB), over which it would close the connection.
const MAX_FRAME: usize = 32 << 10;

/// Where publications go, and how.
#[derive(Debug)]
pub(crate) struct PublishPath {
    /// The path taken.
    pub(crate) via: PublishVia,
    /// Its endpoint: the server API's URL, the gRPC address, or the publisher's WebSocket URL.
    pub(crate) url: String,
    timeout: Duration,
    sender: Sender,
}

#[derive(Debug)]
enum Sender {
    Http(ApiClient),
    Grpc {
        clients: Vec<HubClient>,
        next: AtomicUsize,
    },
    Client(ClientPublisher),
}

impl PublishPath {
    /// Opens the path `api` asks for and checks it: `/api/info` (http), or one probe
    /// publication to `probe_channel` (grpc, client), so that a wrong URL or key, or a
    /// channel that refuses client publishes, fails before any subscriber opens.
    pub(crate) async fn open(
        api: &ApiOpts,
        connect: &ConnectOpts,
        probe_channel: &str,
        allow_remote: bool,
    ) -> Result<Self, String> {
        let timeout = api.publish_timeout;
        let (url, sender) = match api.publish_via {
            PublishVia::Http => {
                let url = target::first_url(&api.api_url);
                let t = target::http(url, allow_remote).await?;
                let client = ApiClient::new(
                    t,
                    api.key()?.to_owned(),
                    api.publish_connections as usize,
                    timeout,
                );
                client.call("info", b"{}").await.map_err(|e| {
                    format!(
                        "server API check (POST {}/api/info): {e}",
                        url.trim_end_matches('/')
                    )
                })?;
                (url.to_owned(), Sender::Http(client))
            }
            PublishVia::Grpc => {
                let url = api.grpc_url.trim();
                target::http(url, allow_remote)
                    .await
                    .map_err(|e| format!("--grpc-url: {e}"))?;
                let key = api.key()?;
                let mut clients = Vec::new();
                for _ in 0..api.publish_connections {
                    let c = HubClient::connect(url, key).await.map_err(|e| {
                        format!(
                            "gRPC server API at {url}: {e}; is grpc_api enabled in the hub's \
                             config, on that port (grpc_api.port)?"
                        )
                    })?;
                    clients.push(c);
                }
                let next = AtomicUsize::new(0);
                (url.to_owned(), Sender::Grpc { clients, next })
            }
            PublishVia::Client => {
                let targets = target::ws_list(&connect.url, allow_remote).await?;
                let t = &targets[0];
                let token = crate::token::for_user(&connect.secret, PUBLISHER_USER);
                let source = connect.source_addrs.first().copied();
                // JSON and uncompressed whatever the subscribers speak: it sends JSON commands.
                let wire = conn::Wire::default();
                let session = conn::open(t, source, &token, &[], wire, connect.connect_timeout)
                    .await
                    .map_err(|e| format!("the client publisher's connection: {e}"))?;
                let publisher = ClientPublisher::start(session.into_socket());
                (t.url.clone(), Sender::Client(publisher))
            }
        };
        let path = PublishPath {
            via: api.publish_via,
            url,
            timeout,
            sender,
        };
        if api.publish_via != PublishVia::Http {
            path.publish(probe_channel, PROBE.to_owned())
                .await
                .map_err(|e| {
                    format!(
                        "{} check (probe publication to {probe_channel:?} at {}): {e}",
                        path.via.label(),
                        path.url
                    )
                })?;
        }
        Ok(path)
    }

    /// Publishes `data` (JSON) to `channel`, within `--publish-timeout`.
    pub(crate) async fn publish(&self, channel: &str, data: String) -> Result<(), CallError> {
        match &self.sender {
            Sender::Http(api) => {
                let channel = serde_json::to_string(channel)
                    .map_err(|e| CallError::BadResponse(e.to_string()))?;
                let body = format!(r#"{{"channel":{channel},"data":{data}}}"#);
                // The pool applies the time limit once a connection is free.
                api.call("publish", body.as_bytes()).await
            }
            Sender::Grpc { clients, next } => {
                let client = &clients[next.fetch_add(1, Ordering::Relaxed) % clients.len()];
                let data =
                    RawValue::from_string(data).map_err(|e| CallError::Grpc(e.to_string()))?;
                tokio::time::timeout(self.timeout, client.publish(channel, &*data))
                    .await
                    .map_err(|_| CallError::Timeout(self.timeout))?
                    .map(drop)
                    .map_err(grpc_error)
            }
            Sender::Client(p) => tokio::time::timeout(self.timeout, p.publish(channel, data))
                .await
                .map_err(|_| CallError::Timeout(self.timeout))?,
        }
    }
}

/// A hub-client error as a call error.
fn grpc_error(e: ClientError) -> CallError {
    match e {
        ClientError::Unauthenticated => CallError::Unauthenticated,
        ClientError::Api { code, message } => CallError::Api { code, message },
        ClientError::Transport(e) => CallError::Grpc(e),
        e => CallError::Grpc(e.to_string()),
    }
}

/// One publication handed to the publisher's connection.
#[derive(Debug)]
struct Command {
    channel: String,
    data: String,
    done: oneshot::Sender<Result<(), CallError>>,
}

/// One client connection that publishes: commands go to a task that owns the WebSocket,
/// writes them (those queued together in one frame, `\n`-separated), answers pings and
/// matches each reply to its command by id.
#[derive(Debug)]
pub(crate) struct ClientPublisher {
    commands: mpsc::UnboundedSender<Command>,
    /// Why the connection ended, once it has.
    ended: Arc<Mutex<Option<String>>>,
}

impl ClientPublisher {
    /// Starts the task that drives `ws` (connected, subscribed to nothing). The connection
    /// closes when the publisher is dropped.
    pub(crate) fn start(ws: WebSocket) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let ended = Arc::new(Mutex::new(None));
        tokio::spawn(drive(ws, rx, ended.clone()));
        ClientPublisher { commands, ended }
    }

    /// Publishes `data` to `channel`; waits for the hub's reply.
    pub(crate) async fn publish(&self, channel: &str, data: String) -> Result<(), CallError> {
        let (done, reply) = oneshot::channel();
        let command = Command {
            channel: channel.to_owned(),
            data,
            done,
        };
        if self.commands.send(command).is_err() {
            return Err(self.disconnected());
        }
        reply.await.unwrap_or_else(|_| Err(self.disconnected()))
    }

    fn disconnected(&self) -> CallError {
        let why = self
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        CallError::Disconnected(why.unwrap_or_else(|| "closed".into()))
    }
}

/// The `publish` command `id` as one line of a frame.
fn publish_command(out: &mut String, id: u32, channel: &str, data: &str) {
    let channel = serde_json::Value::from(channel);
    let _ = write!(
        out,
        r#"{{"id":{id},"publish":{{"channel":{channel},"data":{data}}}}}"#
    );
}

/// Commands waiting for their reply: channel and who waits, by command id.
type Pending = HashMap<u32, (String, oneshot::Sender<Result<(), CallError>>)>;

/// The publisher's task: until the commands end (the publisher dropped) or the connection
/// does. Whatever is still waiting then fails with the reason.
async fn drive(
    mut ws: WebSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    ended: Arc<Mutex<Option<String>>>,
) {
    let mut pending = Pending::new();
    // Id 1 was the connect command.
    let mut next_id = 2u32;
    let why = loop {
        tokio::select! {
            c = commands.recv() => {
                let Some(c) = c else {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close()).await;
                    break "the publisher was closed".to_owned();
                };
                if let Err(e) = send(&mut ws, c, &mut commands, &mut pending, &mut next_id).await {
                    break format!("sending failed: {e}");
                }
            }
            m = ws.recv() => {
                let text = match m {
                    Ok(Some(Incoming::Text(t))) => t,
                    Ok(Some(Incoming::Close { code, reason })) => {
                        break format!("the hub closed it with {code:?} {reason:?}");
                    }
                    Ok(Some(Incoming::Binary(_))) => break "binary frame from the hub".into(),
                    Ok(Some(Incoming::Ping(_) | Incoming::Pong)) => continue,
                    Ok(None) => break "the hub closed the TCP connection".into(),
                    Err(e) => break e.to_string(),
                };
                match settle(&text, &mut pending) {
                    Ok(false) => {}
                    Ok(true) => {
                        if let Err(e) = ws.send_text("{}").await {
                            break format!("sending failed: {e}");
                        }
                    }
                    Err(why) => break why,
                }
            }
        }
    };
    *ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
    fail(&mut pending, &why);
    commands.close();
    while let Ok(c) = commands.try_recv() {
        let _ = c.done.send(Err(CallError::Disconnected(why.clone())));
    }
}

/// Sends `first` and the commands queued behind it, several to a frame while the frame stays
/// within [`MAX_FRAME`] (a command longer than that goes alone).
async fn send(
    ws: &mut WebSocket,
    first: Command,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    pending: &mut Pending,
    next_id: &mut u32,
) -> Result<(), crate::ws::WsError> {
    let mut frame = String::new();
    let mut line = String::new();
    let mut next = Some(first);
    while let Some(c) = next {
        let id = *next_id;
        *next_id = next_id.checked_add(1).unwrap_or(2);
        line.clear();
        publish_command(&mut line, id, &c.channel, &c.data);
        pending.insert(id, (c.channel, c.done));
        if !frame.is_empty() && frame.len() + 1 + line.len() > MAX_FRAME {
            ws.send_text(&frame).await?;
            frame.clear();
        }
        if !frame.is_empty() {
            frame.push('\n');
        }
        frame.push_str(&line);
        next = commands.try_recv().ok();
    }
    ws.send_text(&frame).await
}

/// Answers the commands a frame replies to; `Ok(true)` when it held a ping, `Err` with the
/// reason when the hub is ending the connection.
fn settle(text: &str, pending: &mut Pending) -> Result<bool, String> {
    let mut ping = false;
    for answer in conn::answers(text) {
        match answer.map_err(|e| e.to_string())? {
            Answer::Ping => ping = true,
            Answer::Reply { id, error } => {
                if let Some((channel, done)) = pending.remove(&id) {
                    let _ = done.send(match error {
                        None => Ok(()),
                        Some((code, message)) => Err(CallError::PublishRefused {
                            channel,
                            code,
                            message,
                        }),
                    });
                }
            }
            Answer::Disconnect { code, reason } => {
                return Err(format!("the hub disconnected it with {code} {reason:?}"));
            }
            Answer::Push => {}
        }
    }
    Ok(ping)
}

/// Fails every command waiting for a reply.
fn fail(pending: &mut Pending, why: &str) {
    for (_, (_, done)) in pending.drain() {
        let _ = done.send(Err(CallError::Disconnected(why.to_owned())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_commands_are_json_lines() {
        let mut f = String::new();
        publish_command(&mut f, 7, "a\"b", r#"{"t":1}"#);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": 7, "publish": {"channel": "a\"b", "data": {"t": 1}}})
        );
    }

    #[test]
    fn replies_settle_their_commands() {
        let mut pending = Pending::new();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        let (c, mut rc) = oneshot::channel();
        pending.insert(2, ("x".into(), a));
        pending.insert(3, ("y".into(), b));
        pending.insert(4, ("z".into(), c));
        let frame = "{\"id\":2,\"publish\":{}}\n{}\n\
                     {\"id\":3,\"error\":{\"code\":103,\"message\":\"permission denied\"}}";
        assert_eq!(settle(frame, &mut pending), Ok(true));
        assert_eq!(ra.try_recv().unwrap(), Ok(()));
        let e = rb.try_recv().unwrap().unwrap_err();
        assert_eq!(e.kind(), "publish error 103");
        assert!(
            e.to_string().contains("\"allow_publish_for_client\": true"),
            "{e}"
        );
        assert!(rc.try_recv().is_err(), "4 is still waiting");
        let disconnect = "{\"push\":{\"disconnect\":{\"code\":3001,\"reason\":\"shutdown\"}}}";
        let why = settle(disconnect, &mut pending).unwrap_err();
        assert!(why.contains("3001"), "{why}");
        fail(&mut pending, &why);
        assert!(matches!(
            rc.try_recv().unwrap(),
            Err(CallError::Disconnected(_))
        ));
    }
}
