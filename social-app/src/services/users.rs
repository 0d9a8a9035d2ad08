//! The users service: registration and login (argon2 password hashes, which never leave
//! this service), profiles, search by name prefix, friend requests and friendships.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde_json::json;
use social_store::{FriendStore, NewUser, Profile, Relation, StoreError, UserStore};
use tonic::{Request, Response, Status};

use super::{count_activity, cursor, limit, user_id, user_pb};
use crate::pb::{self, users_server::Users};
use crate::realtime::Realtime;
use crate::rpc::{invalid, store_status, Clients};

/// The service.
pub struct UsersService {
    users: Arc<dyn UserStore>,
    friends: Arc<dyn FriendStore>,
    clients: Clients,
    realtime: Realtime,
}

impl UsersService {
    /// Over its stores; calls the posts (feed backfill) and counters (logins) services.
    pub fn new(
        users: Arc<dyn UserStore>,
        friends: Arc<dyn FriendStore>,
        clients: Clients,
        realtime: Realtime,
    ) -> Self {
        UsersService {
            users,
            friends,
            clients,
            realtime,
        }
    }

    async fn existing(&self, field: &str, id: &str) -> Result<social_store::User, Status> {
        user_id(field, id)?;
        self.users
            .user(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("{field}: no such user")))
    }

    async fn relation_of(&self, a: &str, b: &str) -> Result<&'static str, Status> {
        if a == b {
            return Ok("self");
        }
        let r = self.friends.relation(a, b).await.map_err(store_status)?;
        Ok(relation_name(r))
    }

    async fn reply(&self, a: &str, b: &str) -> Result<Response<pb::RelationReply>, Status> {
        Ok(Response::new(pb::RelationReply {
            relation: self.relation_of(a, b).await?.to_string(),
        }))
    }

    async fn users_pb(&self, ids: &[String]) -> Result<Vec<pb::User>, Status> {
        let users = self.users.users(ids).await.map_err(store_status)?;
        Ok(users.into_iter().map(user_pb).collect())
    }
}

/// The API name of a relation.
pub fn relation_name(r: Relation) -> &'static str {
    match r {
        Relation::None => "none",
        Relation::RequestSent => "request_sent",
        Relation::RequestReceived => "request_received",
        Relation::Friends => "friends",
    }
}

/// A login email: trimmed, lower-case, one `@` with text on both sides, at most 254 bytes.
pub fn email(e: &str) -> Result<String, Status> {
    let e = e.trim().to_lowercase();
    if e.is_empty() {
        return Err(invalid("email", "required"));
    }
    let ok = e.len() <= 254
        && e.split('@').count() == 2
        && e.split('@').all(|p| !p.is_empty())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(invalid("email", "not a valid email address"));
    }
    Ok(e)
}

fn password(p: &str) -> Result<(), Status> {
    let n = p.chars().count();
    if n < 8 {
        return Err(invalid("password", "at least 8 characters"));
    }
    if n > 128 {
        return Err(invalid("password", "at most 128 characters"));
    }
    Ok(())
}

fn short(field: &str, v: &str, required: bool, max: usize) -> Result<String, Status> {
    let v = v.trim();
    if required && v.is_empty() {
        return Err(invalid(field, "required"));
    }
    if v.chars().count() > max {
        return Err(invalid(field, &format!("at most {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "control characters are not allowed"));
    }
    Ok(v.to_string())
}

fn birthday(b: &str) -> Result<String, Status> {
    let b = b.trim();
    if b.is_empty() {
        return Ok(String::new());
    }
    let bad = || invalid("birthday", "a date as YYYY-MM-DD");
    let parts: Vec<&str> = b.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let (y, m, d) = (num(parts[0])?, num(parts[1])?, num(parts[2])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1900..=2100).contains(&y) || d == 0 || d > days {
        return Err(bad());
    }
    Ok(b.to_string())
}

/// A profile as given, checked and trimmed.
pub fn profile(p: Option<pb::Profile>) -> Result<Profile, Status> {
    let p = p.ok_or_else(|| invalid("profile", "required"))?;
    if p.interests.len() > 20 {
        return Err(invalid("interests", "at most 20"));
    }
    let interests = p
        .interests
        .iter()
        .map(|i| short("interests", i, true, 40))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Profile {
        first_name: short("first_name", &p.first_name, true, 64)?,
        last_name: short("last_name", &p.last_name, true, 64)?,
        birthday: birthday(&p.birthday)?,
        city: short("city", &p.city, false, 64)?,
        interests,
    })
}

/// Hashes a password with argon2id (default parameters, random salt), off the async workers.
pub async fn hash_password(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
            .map_err(|e| Status::internal(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Status::internal(format!("hash: {e}")))
    })
    .await
    .map_err(|e| Status::internal(format!("hash task: {e}")))?
}

/// Checks `password` against a stored PHC string, off the async workers. With no stored
/// hash (unknown email) it checks against a dummy so both cases take the same time.
async fn verify_password(password: String, stored: Option<String>) -> Result<bool, Status> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let hash = match stored {
            Some(h) => h,
            None => DUMMY
                .get_or_init(|| {
                    SaltString::encode_b64(&[7u8; 16])
                        .ok()
                        .and_then(|salt| {
                            Argon2::default()
                                .hash_password(b"not a password", &salt)
                                .ok()
                                .map(|h| h.to_string())
                        })
                        .unwrap_or_default()
                })
                .clone(),
        };
        let ok = PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        known && ok
    })
    .await
    .map_err(|e| Status::internal(format!("verify task: {e}")))
}

#[tonic::async_trait]
impl Users for UsersService {
    async fn register(
        &self,
        r: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::UserReply>, Status> {
        let r = r.into_inner();
        let email = email(&r.email)?;
        password(&r.password)?;
        let profile = profile(r.profile)?;
        if self
            .users
            .user_by_email(&email)
            .await
            .map_err(store_status)?
            .is_some()
        {
            return Err(Status::already_exists("email: already registered"));
        }
        let password_hash = hash_password(r.password).await?;
        let user = self
            .users
            .create_user(NewUser {
                email,
                password_hash,
                profile,
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => Status::already_exists("email: already registered"),
                e => store_status(e),
            })?;
        Ok(Response::new(pb::UserReply {
            user: Some(user_pb(user)),
        }))
    }

    async fn login(&self, r: Request<pb::LoginRequest>) -> Result<Response<pb::UserReply>, Status> {
        let r = r.into_inner();
        let wrong = || Status::unauthenticated("wrong email or password");
        let email = email(&r.email).map_err(|_| wrong())?;
        let user = self
            .users
            .user_by_email(&email)
            .await
            .map_err(store_status)?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        if !verify_password(r.password, stored).await? {
            return Err(wrong());
        }
        let user = user.ok_or_else(wrong)?;
        count_activity(&self.clients, &user.id, "logins").await;
        Ok(Response::new(pb::UserReply {
            user: Some(user_pb(user)),
        }))
    }

    async fn get_users(
        &self,
        r: Request<pb::GetUsersRequest>,
    ) -> Result<Response<pb::UsersReply>, Status> {
        let r = r.into_inner();
        if r.ids.len() > 1000 {
            return Err(invalid("ids", "at most 1000"));
        }
        for id in &r.ids {
            user_id("ids", id)?;
        }
        Ok(Response::new(pb::UsersReply {
            users: self.users_pb(&r.ids).await?,
        }))
    }

    async fn update_profile(
        &self,
        r: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UserReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        let profile = profile(r.profile)?;
        let user = self
            .users
            .update_profile(&r.actor, profile)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found("actor: no such user"))?;
        Ok(Response::new(pb::UserReply {
            user: Some(user_pb(user)),
        }))
    }

    async fn search(
        &self,
        r: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchReply>, Status> {
        let r = r.into_inner();
        let prefix = r.prefix.trim().to_lowercase();
        if prefix.is_empty() {
            return Err(invalid("prefix", "required"));
        }
        if prefix.chars().count() > 64 {
            return Err(invalid("prefix", "at most 64 characters"));
        }
        let page = self
            .users
            .search(&prefix, cursor(&r.cursor), limit(r.limit)?)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::SearchReply {
            users: page.items.into_iter().map(user_pb).collect(),
            next: page.next.unwrap_or_default(),
        }))
    }

    async fn request_friend(
        &self,
        r: Request<pb::PairRequest>,
    ) -> Result<Response<pb::RelationReply>, Status> {
        let r = r.into_inner();
        let actor = self.existing("actor", &r.actor).await?;
        self.existing("other", &r.other).await?;
        if r.actor == r.other {
            return Err(invalid("other", "cannot befriend yourself"));
        }
        match self
            .friends
            .relation(&r.actor, &r.other)
            .await
            .map_err(store_status)?
        {
            // They asked first: asking back is agreeing.
            Relation::RequestReceived => return self.approve_friend(Request::new(r)).await,
            Relation::Friends | Relation::RequestSent => {}
            Relation::None => {
                self.friends
                    .add_request(&r.actor, &r.other)
                    .await
                    .map_err(store_status)?;
                let event = json!({"type": "friend_request", "from": user_json(user_pb(actor))});
                self.realtime.to_user(&r.other, &event).await;
            }
        }
        self.reply(&r.actor, &r.other).await
    }

    async fn approve_friend(
        &self,
        r: Request<pb::PairRequest>,
    ) -> Result<Response<pb::RelationReply>, Status> {
        let r = r.into_inner();
        let actor = self.existing("actor", &r.actor).await?;
        let other = self.existing("other", &r.other).await?;
        match self
            .friends
            .relation(&r.actor, &r.other)
            .await
            .map_err(store_status)?
        {
            Relation::Friends => return self.reply(&r.actor, &r.other).await,
            Relation::RequestReceived => {}
            _ => {
                return Err(Status::failed_precondition(
                    "other: this user has not asked to be your friend",
                ))
            }
        }
        self.friends
            .add_friendship(&r.actor, &r.other)
            .await
            .map_err(store_status)?;
        // Each gets the other's recent posts in their feed.
        if let Err(e) = self
            .clients
            .posts
            .clone()
            .backfill(pb::PairRequest {
                actor: r.actor.clone(),
                other: r.other.clone(),
            })
            .await
        {
            tracing::warn!(a = %r.actor, b = %r.other, error = %e.message(), "feed backfill failed");
        }
        self.realtime
            .to_user(
                &r.other,
                &json!({"type": "friend", "user": user_json(user_pb(actor))}),
            )
            .await;
        self.realtime
            .to_user(
                &r.actor,
                &json!({"type": "friend", "user": user_json(user_pb(other))}),
            )
            .await;
        self.reply(&r.actor, &r.other).await
    }

    async fn decline_friend(
        &self,
        r: Request<pb::PairRequest>,
    ) -> Result<Response<pb::RelationReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        user_id("other", &r.other)?;
        self.friends
            .remove_request(&r.other, &r.actor)
            .await
            .map_err(store_status)?;
        self.reply(&r.actor, &r.other).await
    }

    async fn remove_friend(
        &self,
        r: Request<pb::PairRequest>,
    ) -> Result<Response<pb::RelationReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        user_id("other", &r.other)?;
        // Also withdraws a request the actor sent.
        self.friends
            .remove_request(&r.actor, &r.other)
            .await
            .map_err(store_status)?;
        if self
            .friends
            .remove_friendship(&r.actor, &r.other)
            .await
            .map_err(store_status)?
        {
            if let Err(e) = self
                .clients
                .posts
                .clone()
                .unfollow(pb::PairRequest {
                    actor: r.actor.clone(),
                    other: r.other.clone(),
                })
                .await
            {
                tracing::warn!(a = %r.actor, b = %r.other, error = %e.message(), "feed cleanup failed");
            }
            self.realtime
                .to_user(&r.other, &json!({"type": "unfriend", "user": r.actor}))
                .await;
        }
        self.reply(&r.actor, &r.other).await
    }

    async fn relation(
        &self,
        r: Request<pb::PairRequest>,
    ) -> Result<Response<pb::RelationReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        user_id("other", &r.other)?;
        self.reply(&r.actor, &r.other).await
    }

    async fn list_friends(
        &self,
        r: Request<pb::ListFriendsRequest>,
    ) -> Result<Response<pb::IdsReply>, Status> {
        let r = r.into_inner();
        user_id("user", &r.user)?;
        // Services page through all friends (fan-out): they may ask for larger pages.
        let n = match r.limit {
            0 => 100,
            n if n > 5000 => return Err(invalid("limit", "at most 5000")),
            n => n as usize,
        };
        let page = self
            .friends
            .friends(&r.user, cursor(&r.cursor), n)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::IdsReply {
            ids: page.items,
            next: page.next.unwrap_or_default(),
        }))
    }

    async fn friend_count(
        &self,
        r: Request<pb::ActorRequest>,
    ) -> Result<Response<pb::FriendCountReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        let count = self
            .friends
            .friend_count(&r.actor)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::FriendCountReply { count }))
    }

    async fn requests(
        &self,
        r: Request<pb::ActorRequest>,
    ) -> Result<Response<pb::RequestsReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        let incoming = self
            .friends
            .incoming_requests(&r.actor, 100)
            .await
            .map_err(store_status)?;
        let outgoing = self
            .friends
            .outgoing_requests(&r.actor, 100)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::RequestsReply {
            incoming: self.users_pb(&incoming).await?,
            outgoing: self.users_pb(&outgoing).await?,
        }))
    }
}

/// A user as JSON for live events and the gateway.
pub fn user_json(u: pb::User) -> serde_json::Value {
    let p = u.profile.unwrap_or_default();
    json!({
        "id": u.id,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "birthday": p.birthday,
        "city": p.city,
        "interests": p.interests,
        "created_at": u.created_at,
    })
}
