//! The JSON API handlers (see `social-app/API.md`). Each checks the session, calls the
//! services with the signed-in user as `actor`, and answers JSON; errors are
//! [`ApiError`]s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Session;
use super::error::ApiError;
use super::Gateway;
use crate::pb;
use crate::realtime::{connection_token, user_channel};
use crate::services::chats::message_json;
use crate::services::users::user_json;

type Gw = State<Arc<Gateway>>;
type ApiResult = Result<Response, ApiError>;

/// The `/api` routes.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me).put(update_me))
        .route("/me/activity", get(activity))
        .route("/users", get(search))
        .route("/users/{id}", get(user))
        .route("/users/{id}/posts", get(user_posts))
        .route("/friends", get(friends))
        .route("/friends/requests", get(requests))
        .route("/friends/{id}", post(request_friend).delete(remove_friend))
        .route("/friends/{id}/approve", post(approve_friend))
        .route("/friends/{id}/decline", post(decline_friend))
        .route("/posts", post(create_post))
        .route("/feed", get(feed))
        .route("/chats", get(chats))
        .route("/chats/dialog", post(dialog))
        .route("/chats/group", post(group))
        .route("/chats/{id}", get(chat))
        .route("/chats/{id}/messages", get(messages).post(send))
        .route("/chats/{id}/read", post(mark_read))
        .route("/realtime", get(realtime))
}

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

fn created(v: Value) -> ApiResult {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(ApiError::from)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(ApiError::from)
}

/// Profile fields, as the API takes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileIn {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    birthday: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    interests: Vec<String>,
}

impl From<ProfileIn> for pb::Profile {
    fn from(p: ProfileIn) -> Self {
        pb::Profile {
            first_name: p.first_name,
            last_name: p.last_name,
            birthday: p.birthday,
            city: p.city,
            interests: p.interests,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterIn {
    email: String,
    password: String,
    #[serde(flatten)]
    profile: ProfileIn,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginIn {
    email: String,
    password: String,
}

/// Opens a session for `user`: cookies, and the token for API clients.
fn signed_in(gw: &Gateway, user: pb::User, status: StatusCode) -> ApiResult {
    let token = gw.sessions.token(&user.id)?;
    let csrf = uuid::Uuid::new_v4().simple().to_string();
    let mut headers = HeaderMap::new();
    for c in gw.sessions.cookies(&token, &csrf) {
        headers.append(header::SET_COOKIE, c);
    }
    let v = json!({"user": user_json(user), "token": token, "csrf": csrf});
    Ok((status, headers, Json(v)).into_response())
}

async fn register(State(gw): Gw, b: Result<Json<RegisterIn>, JsonRejection>) -> ApiResult {
    let b = body(b)?;
    let user = gw
        .clients
        .users
        .clone()
        .register(pb::RegisterRequest {
            email: b.email,
            password: b.password,
            profile: Some(b.profile.into()),
        })
        .await?
        .into_inner()
        .user
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    signed_in(&gw, user, StatusCode::CREATED)
}

async fn login(
    State(gw): Gw,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    b: Result<Json<LoginIn>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    if !gw.login_limiter.allow(&b.email, Some(addr.ip())) {
        metrics::counter!("social_logins_total", "result" => "rate_limited").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many login attempts, wait a minute",
        ));
    }
    let user = match gw
        .clients
        .users
        .clone()
        .login(pb::LoginRequest {
            email: b.email,
            password: b.password,
        })
        .await
    {
        Ok(r) => r.into_inner().user,
        Err(s) if s.code() == tonic::Code::Unauthenticated => None,
        Err(s) => return Err(s.into()),
    };
    let Some(user) = user else {
        metrics::counter!("social_logins_total", "result" => "bad_credentials").increment(1);
        return Err(ApiError::unauthenticated("wrong email or password"));
    };
    metrics::counter!("social_logins_total", "result" => "ok").increment(1);
    signed_in(&gw, user, StatusCode::OK)
}

async fn logout(State(gw): Gw) -> ApiResult {
    let mut headers = HeaderMap::new();
    for c in gw.sessions.clear_cookies() {
        headers.append(header::SET_COOKIE, c);
    }
    Ok((headers, Json(json!({}))).into_response())
}

/// Users by id, as JSON objects keyed by id.
async fn people(gw: &Gateway, ids: Vec<String>) -> Result<HashMap<String, Value>, ApiError> {
    let mut ids = ids;
    ids.sort();
    ids.dedup();
    ids.truncate(1000);
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let users = gw
        .clients
        .users
        .clone()
        .get_users(pb::GetUsersRequest { ids })
        .await?
        .into_inner()
        .users;
    Ok(users
        .into_iter()
        .map(|u| (u.id.clone(), user_json(u)))
        .collect())
}

async fn one_user(gw: &Gateway, id: &str) -> Result<Value, ApiError> {
    people(gw, vec![id.to_string()])
        .await?
        .remove(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such user"))
}

async fn me(State(gw): Gw, s: Session) -> ApiResult {
    ok(json!({"user": one_user(&gw, &s.user).await?}))
}

async fn update_me(
    State(gw): Gw,
    s: Session,
    b: Result<Json<ProfileIn>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let user = gw
        .clients
        .users
        .clone()
        .update_profile(pb::UpdateProfileRequest {
            actor: s.user,
            profile: Some(b.into()),
        })
        .await?
        .into_inner()
        .user
        .map(user_json);
    ok(json!({ "user": user }))
}

/// The signed-in user's activity counts (`posts`, `messages`, `logins`).
async fn activity(State(gw): Gw, s: Session) -> ApiResult {
    let fields = gw
        .clients
        .counters
        .clone()
        .get(pb::CounterRequest {
            counter: format!("activity:{}", s.user),
        })
        .await?
        .into_inner()
        .fields;
    let n = |k: &str| fields.get(k).copied().unwrap_or(0);
    ok(json!({"posts": n("posts"), "messages": n("messages"), "logins": n("logins")}))
}

#[derive(Debug, Deserialize)]
struct SearchIn {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: u32,
}

async fn search(
    State(gw): Gw,
    _s: Session,
    q: Result<Query<SearchIn>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let r = gw
        .clients
        .users
        .clone()
        .search(pb::SearchRequest {
            prefix: q.q,
            cursor: q.cursor,
            limit: q.limit,
        })
        .await
        .map_err(|e| rename(e, "prefix", "q"))?
        .into_inner();
    let next = (!r.next.is_empty()).then_some(r.next);
    ok(json!({"users": r.users.into_iter().map(user_json).collect::<Vec<_>>(), "next": next}))
}

/// A service error about `from` told as about the API's `to`.
fn rename(e: tonic::Status, from: &str, to: &str) -> ApiError {
    let mut a = ApiError::from(e);
    if a.field.as_deref() == Some(from) {
        a.field = Some(to.to_string());
        a.message = a.message.replacen(from, to, 1);
    }
    a
}

async fn relation(gw: &Gateway, actor: &str, other: &str) -> Result<String, ApiError> {
    Ok(gw
        .clients
        .users
        .clone()
        .relation(pair(actor, other))
        .await?
        .into_inner()
        .relation)
}

fn pair(actor: &str, other: &str) -> pb::PairRequest {
    pb::PairRequest {
        actor: actor.to_string(),
        other: other.to_string(),
    }
}

async fn user(State(gw): Gw, s: Session, Path(id): Path<String>) -> ApiResult {
    let rel = relation(&gw, &s.user, &id).await?;
    ok(json!({"user": one_user(&gw, &id).await?, "relation": rel}))
}

#[derive(Debug, Deserialize)]
struct PageIn {
    #[serde(default)]
    before: String,
    #[serde(default)]
    limit: u32,
}

/// Posts as JSON, each with its author.
async fn posts_json(gw: &Gateway, posts: Vec<pb::Post>) -> Result<Vec<Value>, ApiError> {
    let authors = people(gw, posts.iter().map(|p| p.author.clone()).collect()).await?;
    Ok(posts
        .into_iter()
        .map(|p| {
            json!({"id": p.id, "author": authors.get(&p.author).cloned().unwrap_or(json!({"id": p.author})),
                   "text": p.text, "created_at": p.created_at})
        })
        .collect())
}

async fn user_posts(
    State(gw): Gw,
    _s: Session,
    Path(id): Path<String>,
    q: Result<Query<PageIn>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let posts = gw
        .clients
        .posts
        .clone()
        .list_posts(pb::ListPostsRequest {
            author: id,
            before: q.before,
            limit: q.limit,
        })
        .await?
        .into_inner()
        .posts;
    ok(json!({"posts": posts_json(&gw, posts).await?}))
}

#[derive(Debug, Deserialize)]
struct CursorIn {
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: u32,
}

async fn friends(
    State(gw): Gw,
    s: Session,
    q: Result<Query<CursorIn>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    if q.limit > 100 {
        return Err(ApiError::invalid("limit", "at most 100"));
    }
    let r = gw
        .clients
        .users
        .clone()
        .list_friends(pb::ListFriendsRequest {
            user: s.user,
            cursor: q.cursor,
            limit: if q.limit == 0 { 100 } else { q.limit },
        })
        .await?
        .into_inner();
    let mut by_id = people(&gw, r.ids.clone()).await?;
    let users: Vec<Value> = r.ids.iter().filter_map(|id| by_id.remove(id)).collect();
    let next = (!r.next.is_empty()).then_some(r.next);
    ok(json!({"friends": users, "next": next}))
}

async fn requests(State(gw): Gw, s: Session) -> ApiResult {
    let r = gw
        .clients
        .users
        .clone()
        .requests(pb::ActorRequest { actor: s.user })
        .await?
        .into_inner();
    ok(json!({
        "incoming": r.incoming.into_iter().map(user_json).collect::<Vec<_>>(),
        "outgoing": r.outgoing.into_iter().map(user_json).collect::<Vec<_>>(),
    }))
}

/// What a friend route asks the users service to do.
#[derive(Debug, Clone, Copy)]
enum FriendOp {
    Request,
    Approve,
    Decline,
    Remove,
}

/// Runs `op` for the signed-in user on user `id`; answers the new relation.
async fn friend_op(gw: &Gateway, actor: &str, id: &str, op: FriendOp) -> ApiResult {
    let mut users = gw.clients.users.clone();
    let p = pair(actor, id);
    let r = match op {
        FriendOp::Request => users.request_friend(p).await,
        FriendOp::Approve => users.approve_friend(p).await,
        FriendOp::Decline => users.decline_friend(p).await,
        FriendOp::Remove => users.remove_friend(p).await,
    }?;
    ok(json!({"relation": r.into_inner().relation}))
}

async fn request_friend(State(gw): Gw, s: Session, Path(id): Path<String>) -> ApiResult {
    friend_op(&gw, &s.user, &id, FriendOp::Request).await
}

async fn approve_friend(State(gw): Gw, s: Session, Path(id): Path<String>) -> ApiResult {
    friend_op(&gw, &s.user, &id, FriendOp::Approve).await
}

async fn decline_friend(State(gw): Gw, s: Session, Path(id): Path<String>) -> ApiResult {
    friend_op(&gw, &s.user, &id, FriendOp::Decline).await
}

async fn remove_friend(State(gw): Gw, s: Session, Path(id): Path<String>) -> ApiResult {
    friend_op(&gw, &s.user, &id, FriendOp::Remove).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextIn {
    text: String,
}

async fn create_post(
    State(gw): Gw,
    s: Session,
    b: Result<Json<TextIn>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let post = gw
        .clients
        .posts
        .clone()
        .create_post(pb::CreatePostRequest {
            actor: s.user,
            text: b.text,
        })
        .await?
        .into_inner()
        .post
        .into_iter()
        .collect();
    let mut v = posts_json(&gw, post).await?;
    created(json!({"post": v.pop()}))
}

async fn feed(State(gw): Gw, s: Session, q: Result<Query<PageIn>, QueryRejection>) -> ApiResult {
    let q = query(q)?;
    let posts = gw
        .clients
        .posts
        .clone()
        .feed(pb::FeedRequest {
            actor: s.user,
            before: q.before,
            limit: q.limit,
        })
        .await?
        .into_inner()
        .posts;
    ok(json!({"posts": posts_json(&gw, posts).await?}))
}

/// Chats as JSON, with their members' names.
async fn chats_json(gw: &Gateway, chats: Vec<pb::Chat>) -> Result<Vec<Value>, ApiError> {
    let who = people(gw, chats.iter().flat_map(|c| c.members.clone()).collect()).await?;
    Ok(chats
        .into_iter()
        .map(|c| {
            let members: Vec<Value> = c
                .members
                .iter()
                .map(|m| who.get(m).cloned().unwrap_or(json!({"id": m})))
                .collect();
            json!({"id": c.id, "kind": c.kind, "title": c.title, "members": members,
                   "created_at": c.created_at, "last_seq": c.last_seq, "unread": c.unread})
        })
        .collect())
}

async fn chats(State(gw): Gw, s: Session) -> ApiResult {
    let chats = gw
        .clients
        .chats
        .clone()
        .list_chats(pb::ActorRequest { actor: s.user })
        .await?
        .into_inner()
        .chats;
    ok(json!({"chats": chats_json(&gw, chats).await?}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DialogIn {
    user: String,
}

async fn dialog(State(gw): Gw, s: Session, b: Result<Json<DialogIn>, JsonRejection>) -> ApiResult {
    let b = body(b)?;
    let chat = gw
        .clients
        .chats
        .clone()
        .find_or_create_dialog(pair(&s.user, &b.user))
        .await
        .map_err(|e| rename(e, "other", "user"))?
        .into_inner()
        .chat
        .into_iter()
        .collect();
    ok(json!({"chat": chats_json(&gw, chat).await?.pop()}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupIn {
    title: String,
    members: Vec<String>,
}

async fn group(State(gw): Gw, s: Session, b: Result<Json<GroupIn>, JsonRejection>) -> ApiResult {
    let b = body(b)?;
    let chat = gw
        .clients
        .chats
        .clone()
        .create_group(pb::CreateGroupRequest {
            actor: s.user,
            title: b.title,
            members: b.members,
        })
        .await?
        .into_inner()
        .chat
        .into_iter()
        .collect();
    created(json!({"chat": chats_json(&gw, chat).await?.pop()}))
}

fn chat_req(actor: String, chat: String) -> pb::ChatRequest {
    pb::ChatRequest { actor, chat }
}

async fn chat(State(gw): Gw, s: Session, Path(id): Path<String>) -> ApiResult {
    let chat = gw
        .clients
        .chats
        .clone()
        .get_chat(chat_req(s.user, id))
        .await?
        .into_inner()
        .chat
        .into_iter()
        .collect();
    ok(json!({"chat": chats_json(&gw, chat).await?.pop()}))
}

#[derive(Debug, Deserialize)]
struct MessagesIn {
    #[serde(default)]
    before: u64,
    #[serde(default)]
    limit: u32,
}

async fn messages(
    State(gw): Gw,
    s: Session,
    Path(id): Path<String>,
    q: Result<Query<MessagesIn>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let r = gw
        .clients
        .chats
        .clone()
        .messages(pb::MessagesRequest {
            actor: s.user,
            chat: id,
            before: q.before,
            limit: q.limit,
        })
        .await?
        .into_inner();
    ok(json!({"messages": r.messages.iter().map(message_json).collect::<Vec<_>>()}))
}

async fn send(
    State(gw): Gw,
    s: Session,
    Path(id): Path<String>,
    b: Result<Json<TextIn>, JsonRejection>,
) -> ApiResult {
    let b = body(b)?;
    let m = gw
        .clients
        .chats
        .clone()
        .send(pb::SendRequest {
            actor: s.user,
            chat: id,
            text: b.text,
        })
        .await?
        .into_inner()
        .message
        .as_ref()
        .map(message_json);
    created(json!({ "message": m }))
}

async fn mark_read(State(gw): Gw, s: Session, Path(id): Path<String>) -> ApiResult {
    gw.clients
        .chats
        .clone()
        .mark_read(chat_req(s.user, id))
        .await?;
    ok(json!({}))
}

/// What the page needs to go live: the hub's URL (`null`: this gateway's
/// `/connection/websocket`), a connection token and the user's channel.
async fn realtime(State(gw): Gw, s: Session) -> ApiResult {
    let token = connection_token(&gw.hub_secret, &s.user, 3600)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    ok(json!({"url": gw.hub_ws_url, "token": token, "channel": user_channel(&s.user)}))
}
