//! The four gRPC services. Each owns its data through a [`social_store`] trait, checks what
//! the acting user may do, and publishes live events through [`crate::realtime`].

pub mod chats;
pub mod counters;
pub mod posts;
pub mod users;

use tonic::Status;

use crate::pb;
use crate::rpc::invalid;

/// Page sizes: a request's `limit` of 0 means this.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest page a request may ask for.
pub const MAX_LIMIT: u32 = 100;

/// The page size a request asks for, checked.
pub fn limit(requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(DEFAULT_LIMIT as usize),
        n if n > MAX_LIMIT => Err(invalid("limit", &format!("at most {MAX_LIMIT}"))),
        n => Ok(n as usize),
    }
}

/// A user id given by a caller: non-empty, short, only letters and digits.
pub fn user_id(field: &str, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(invalid(field, "required"));
    }
    if id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(field, "not a valid id"));
    }
    Ok(())
}

/// Text a user writes (post, message): trimmed, non-empty, at most `max` characters.
pub fn text(field: &str, t: &str, max: usize) -> Result<String, Status> {
    let t = t.trim();
    if t.is_empty() {
        return Err(invalid(field, "required"));
    }
    if t.chars().count() > max {
        return Err(invalid(field, &format!("at most {max} characters")));
    }
    if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "control characters are not allowed"));
    }
    Ok(t.to_string())
}

/// An optional cursor: empty = none.
pub fn cursor(c: &str) -> Option<&str> {
    (!c.is_empty()).then_some(c)
}

/// A stored post as the API shows it.
pub fn post_pb(p: social_store::Post) -> pb::Post {
    pb::Post {
        id: p.id,
        author: p.author,
        text: p.text,
        created_at: p.created_at,
    }
}

/// A stored user as the API shows it: never with the password hash.
pub fn user_pb(u: social_store::User) -> pb::User {
    pb::User {
        id: u.id,
        profile: Some(pb::Profile {
            first_name: u.profile.first_name,
            last_name: u.profile.last_name,
            birthday: u.profile.birthday,
            city: u.profile.city,
            interests: u.profile.interests,
        }),
        created_at: u.created_at,
    }
}

/// Counts one activity of `user` (`posts`, `messages`, `logins`) in the counters service;
/// a failure is logged, never fails the caller.
pub async fn count_activity(clients: &crate::rpc::Clients, user: &str, what: &str) {
    let r = clients
        .counters
        .clone()
        .incr(pb::IncrRequest {
            counter: format!("activity:{user}"),
            field: what.to_string(),
            by: 1,
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(%user, what, error = %e.message(), "activity not counted");
    }
}
