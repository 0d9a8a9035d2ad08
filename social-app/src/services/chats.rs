//! The chats service: one-to-one dialogs (one per pair: find-or-create returns the existing
//! one) and group chats; messages ordered by a per-chat sequence and paged; only members
//! read or write; unread counts per user per chat in the counters service.
//!
//! Sending is a saga of two steps in two services: (1) store the message, (2) count it
//! unread for every other member. A counter step that fails is retried (3 attempts); if it
//! still fails, the increments already made are undone and the message is deleted (the
//! compensation), and the sender gets UNAVAILABLE: never a message without its counts or
//! counts without their message. Live events go out only after both steps.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use social_store::{Chat, ChatKind, ChatStore, Message};
use tonic::{Request, Response, Status};

use super::{count_activity, limit, text, user_id};
use crate::pb::{self, chats_server::Chats};
use crate::realtime::Realtime;
use crate::rpc::{invalid, store_status, Clients};

/// Most members a group may have.
pub const MAX_GROUP: usize = 100;
/// Attempts of one counter step.
const COUNTER_ATTEMPTS: u32 = 3;

/// The service.
pub struct ChatsService {
    chats: Arc<dyn ChatStore>,
    clients: Clients,
    realtime: Realtime,
}

/// The counter group of `user`'s unread counts (one field per chat).
pub fn unread_counter(user: &str) -> String {
    format!("unread:{user}")
}

impl ChatsService {
    /// Over its store; calls the users (members exist) and counters services.
    pub fn new(chats: Arc<dyn ChatStore>, clients: Clients, realtime: Realtime) -> Self {
        ChatsService {
            chats,
            clients,
            realtime,
        }
    }

    /// The chat, if `actor` is one of its members.
    async fn member_of(&self, actor: &str, chat: &str) -> Result<Chat, Status> {
        user_id("actor", actor)?;
        if chat.is_empty() || chat.len() > 64 || !chat.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid("chat", "not a valid id"));
        }
        let c = self
            .chats
            .chat(chat)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found("chat: no such chat"))?;
        if !c.members.iter().any(|m| m == actor) {
            return Err(Status::permission_denied("chat: you are not a member"));
        }
        Ok(c)
    }

    async fn check_users(&self, ids: &[String]) -> Result<(), Status> {
        let found = self
            .clients
            .users
            .clone()
            .get_users(pb::GetUsersRequest { ids: ids.to_vec() })
            .await?
            .into_inner()
            .users;
        if let Some(missing) = ids.iter().find(|id| !found.iter().any(|u| &u.id == *id)) {
            return Err(Status::not_found(format!(
                "members: no such user {missing}"
            )));
        }
        Ok(())
    }

    async fn incr(&self, user: &str, chat: &str, by: i64) -> Result<i64, Status> {
        let mut last = Status::unavailable("counters unavailable");
        for attempt in 1..=COUNTER_ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            match self
                .clients
                .counters
                .clone()
                .incr(pb::IncrRequest {
                    counter: unread_counter(user),
                    field: chat.to_string(),
                    by,
                })
                .await
            {
                Ok(r) => return Ok(r.into_inner().value),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn unread_of(&self, actor: &str) -> std::collections::HashMap<String, i64> {
        match self
            .clients
            .counters
            .clone()
            .get(pb::CounterRequest {
                counter: unread_counter(actor),
            })
            .await
        {
            Ok(r) => r.into_inner().fields,
            Err(e) => {
                tracing::warn!(%actor, error = %e.message(), "unread counts unavailable");
                Default::default()
            }
        }
    }
}

fn chat_pb(c: Chat, unread: i64) -> pb::Chat {
    pb::Chat {
        id: c.id,
        kind: match c.kind {
            ChatKind::Dialog => "dialog",
            ChatKind::Group => "group",
        }
        .to_string(),
        title: c.title,
        members: c.members,
        created_at: c.created_at,
        last_seq: c.last_seq,
        unread,
    }
}

fn message_pb(m: Message) -> pb::Message {
    pb::Message {
        chat: m.chat,
        seq: m.seq,
        author: m.author,
        text: m.text,
        created_at: m.created_at,
    }
}

/// A message as JSON, for live events and the gateway's answers.
pub fn message_json(m: &pb::Message) -> serde_json::Value {
    json!({"chat": m.chat, "seq": m.seq, "author": m.author, "text": m.text, "created_at": m.created_at})
}

#[tonic::async_trait]
impl Chats for ChatsService {
    async fn find_or_create_dialog(
        &self,
        r: Request<pb::PairRequest>,
    ) -> Result<Response<pb::ChatReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        user_id("other", &r.other)?;
        if r.actor == r.other {
            return Err(invalid("other", "a dialog needs another user"));
        }
        self.check_users(&[r.actor.clone(), r.other.clone()])
            .await?;
        let chat = self
            .chats
            .find_or_create_dialog(&r.actor, &r.other)
            .await
            .map_err(store_status)?;
        let unread = self.unread_of(&r.actor).await;
        let n = unread.get(&chat.id).copied().unwrap_or(0);
        Ok(Response::new(pb::ChatReply {
            chat: Some(chat_pb(chat, n)),
        }))
    }

    async fn create_group(
        &self,
        r: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::ChatReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        let title = super::text("title", &r.title, 100)?;
        let mut members = r.members;
        for m in &members {
            user_id("members", m)?;
        }
        members.push(r.actor.clone());
        members.sort();
        members.dedup();
        if members.len() < 2 {
            return Err(invalid("members", "a group needs someone besides you"));
        }
        if members.len() > MAX_GROUP {
            return Err(invalid("members", &format!("at most {MAX_GROUP}")));
        }
        self.check_users(&members).await?;
        let chat = self
            .chats
            .create_group(&title, &members)
            .await
            .map_err(store_status)?;
        let others: Vec<String> = members.into_iter().filter(|m| *m != r.actor).collect();
        let event = json!({"type": "chat", "chat": {"id": chat.id, "kind": "group", "title": chat.title, "members": chat.members}});
        self.realtime.to_users(&others, &event).await;
        Ok(Response::new(pb::ChatReply {
            chat: Some(chat_pb(chat, 0)),
        }))
    }

    async fn list_chats(
        &self,
        r: Request<pb::ActorRequest>,
    ) -> Result<Response<pb::ChatsReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        let chats = self
            .chats
            .chats_of(&r.actor, 200)
            .await
            .map_err(store_status)?;
        let unread = self.unread_of(&r.actor).await;
        Ok(Response::new(pb::ChatsReply {
            chats: chats
                .into_iter()
                .map(|c| {
                    let n = unread.get(&c.id).copied().unwrap_or(0);
                    chat_pb(c, n)
                })
                .collect(),
        }))
    }

    async fn get_chat(
        &self,
        r: Request<pb::ChatRequest>,
    ) -> Result<Response<pb::ChatReply>, Status> {
        let r = r.into_inner();
        let chat = self.member_of(&r.actor, &r.chat).await?;
        let n = self
            .unread_of(&r.actor)
            .await
            .get(&chat.id)
            .copied()
            .unwrap_or(0);
        Ok(Response::new(pb::ChatReply {
            chat: Some(chat_pb(chat, n)),
        }))
    }

    async fn send(
        &self,
        r: Request<pb::SendRequest>,
    ) -> Result<Response<pb::MessageReply>, Status> {
        let r = r.into_inner();
        let chat = self.member_of(&r.actor, &r.chat).await?;
        let body = text("text", &r.text, 5000)?;
        // Step 1: the message.
        let msg = self
            .chats
            .add_message(&chat.id, &r.actor, &body)
            .await
            .map_err(store_status)?;
        // Step 2: unread counts of the others; compensate on failure.
        let others: Vec<&String> = chat.members.iter().filter(|m| **m != r.actor).collect();
        let mut counted: Vec<(&String, i64)> = Vec::with_capacity(others.len());
        for m in &others {
            match self.incr(m, &chat.id, 1).await {
                Ok(n) => counted.push((m, n)),
                Err(e) => {
                    tracing::warn!(chat = %chat.id, seq = msg.seq, error = %e.message(), "unread count failed: compensating");
                    metrics::counter!("social_chat_send_compensations_total").increment(1);
                    for (done, _) in &counted {
                        if let Err(e) = self.incr(done, &chat.id, -1).await {
                            tracing::error!(chat = %chat.id, user = %done, error = %e.message(), "unread count not undone");
                        }
                    }
                    if let Err(e) = self.chats.delete_message(&chat.id, msg.seq).await {
                        tracing::error!(chat = %chat.id, seq = msg.seq, error = %e, "message not deleted by compensation");
                    }
                    return Err(Status::unavailable(
                        "message not sent: unread counters unavailable, retry later",
                    ));
                }
            }
        }
        count_activity(&self.clients, &r.actor, "messages").await;
        let msg = message_pb(msg);
        let m = message_json(&msg);
        for (user, unread) in counted {
            let event = json!({"type": "message", "chat": chat.id, "message": m, "unread": unread});
            self.realtime.to_user(user, &event).await;
        }
        // The sender's other tabs.
        let event = json!({"type": "message", "chat": chat.id, "message": m, "unread": 0});
        self.realtime.to_user(&r.actor, &event).await;
        Ok(Response::new(pb::MessageReply { message: Some(msg) }))
    }

    async fn messages(
        &self,
        r: Request<pb::MessagesRequest>,
    ) -> Result<Response<pb::MessagesReply>, Status> {
        let r = r.into_inner();
        let chat = self.member_of(&r.actor, &r.chat).await?;
        let before = (r.before > 0).then_some(r.before);
        let messages = self
            .chats
            .messages(&chat.id, before, limit(r.limit)?)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::MessagesReply {
            messages: messages.into_iter().map(message_pb).collect(),
        }))
    }

    async fn mark_read(&self, r: Request<pb::ChatRequest>) -> Result<Response<pb::Empty>, Status> {
        let r = r.into_inner();
        let chat = self.member_of(&r.actor, &r.chat).await?;
        self.clients
            .counters
            .clone()
            .reset(pb::ResetRequest {
                counter: unread_counter(&r.actor),
                field: chat.id.clone(),
            })
            .await?;
        self.realtime
            .to_user(
                &r.actor,
                &json!({"type": "unread", "chat": chat.id, "unread": 0}),
            )
            .await;
        Ok(Response::new(pb::Empty {}))
    }
}
