//! The posts service: posts and home feeds.
//!
//! Feeds are built by fan-out on write: a new post goes into the bounded feed of every
//! friend of its author, and of the author, page by page of friends (a failure on one page is
//! logged and the next pages still get it), and is published live to the same users. An
//! author with more than `fanout_limit` friends is fanned out **on read** instead: the post
//! goes only into the author's own feed, the author is recorded in the `fanout_on_read`
//! counter group, and each reader's feed merges in the recent posts of such friends, so one
//! post cannot stall the system. A feed the store lost (a Redis cache that restarted) is
//! rebuilt from the friends' recent posts. A new friendship backfills both feeds.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use social_store::{FeedItem, FeedStore, Post, PostStore};
use tonic::{Request, Response, Status};

use super::users::user_json;
use super::{count_activity, cursor, limit, post_pb, text, user_id};
use crate::pb::{self, posts_server::Posts};
use crate::realtime::Realtime;
use crate::rpc::{store_status, Clients};

/// The counter group listing authors fanned out on read.
pub const FANOUT_ON_READ: &str = "fanout_on_read";

/// Feed tuning.
#[derive(Debug, Clone, Copy)]
pub struct FeedSettings {
    /// Longest feed kept per user.
    pub cap: usize,
    /// Authors with more friends than this are fanned out on read.
    pub fanout_limit: u64,
    /// Posts of each other a new friendship puts into both feeds.
    pub backfill: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            cap: 500,
            fanout_limit: 1000,
            backfill: 20,
        }
    }
}

/// Friends a fan-out asks the users service for at once.
const FRIEND_PAGE: u32 = 1000;
/// A feed rebuild reads at most this many friends.
const REBUILD_MAX_FRIENDS: usize = 5000;

/// The service.
#[derive(Clone)]
pub struct PostsService {
    posts: Arc<dyn PostStore>,
    feeds: Arc<dyn FeedStore>,
    clients: Clients,
    realtime: Realtime,
    settings: FeedSettings,
}

impl PostsService {
    /// Over its stores; calls the users (friends) and counters services.
    pub fn new(
        posts: Arc<dyn PostStore>,
        feeds: Arc<dyn FeedStore>,
        clients: Clients,
        realtime: Realtime,
        settings: FeedSettings,
    ) -> Self {
        PostsService {
            posts,
            feeds,
            clients,
            realtime,
            settings,
        }
    }

    /// One page of `user`'s friends; `next` empty at the end.
    async fn friends_page(
        &self,
        user: &str,
        cursor: &str,
    ) -> Result<(Vec<String>, String), Status> {
        let r = self
            .clients
            .users
            .clone()
            .list_friends(pb::ListFriendsRequest {
                user: user.to_string(),
                cursor: cursor.to_string(),
                limit: FRIEND_PAGE,
            })
            .await?
            .into_inner();
        Ok((r.ids, r.next))
    }

    async fn friend_count(&self, user: &str) -> Result<u64, Status> {
        Ok(self
            .clients
            .users
            .clone()
            .friend_count(pb::ActorRequest {
                actor: user.to_string(),
            })
            .await?
            .into_inner()
            .count)
    }

    /// Authors fanned out on read.
    async fn fanned_on_read(&self) -> Result<Vec<String>, Status> {
        let r = self
            .clients
            .counters
            .clone()
            .get(pb::CounterRequest {
                counter: FANOUT_ON_READ.to_string(),
            })
            .await?
            .into_inner();
        Ok(r.fields.into_keys().collect())
    }

    async fn are_friends(&self, a: &str, b: &str) -> Result<bool, Status> {
        let r = self
            .clients
            .users
            .clone()
            .relation(pb::PairRequest {
                actor: a.to_string(),
                other: b.to_string(),
            })
            .await?
            .into_inner();
        Ok(r.relation == "friends" || r.relation == "self")
    }

    /// Delivers a new post to the friends of its author, page by page.
    async fn fan_out(&self, post: &Post, event: &serde_json::Value, write_feeds: bool) {
        let item = feed_item(post);
        let mut cursor = String::new();
        loop {
            let (friends, next) = match self.friends_page(&post.author, &cursor).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(post = %post.id, error = %e.message(), "fan-out stopped: friends unavailable");
                    return;
                }
            };
            if write_feeds && !friends.is_empty() {
                let r = self.feeds.push(&friends, &item, self.settings.cap).await;
                let result = if r.is_ok() { "ok" } else { "failed" };
                metrics::counter!("social_feed_fanout_writes_total", "result" => result)
                    .increment(friends.len() as u64);
                if let Err(e) = r {
                    tracing::error!(post = %post.id, users = friends.len(), error = %e, "feeds not updated");
                }
            }
            self.realtime.to_users(&friends, event).await;
            if next.is_empty() {
                return;
            }
            cursor = next;
        }
    }

    /// Rebuilds `user`'s feed from their own and their friends' recent posts.
    async fn rebuild(&self, user: &str) -> Result<(), Status> {
        let mut authors = vec![user.to_string()];
        let mut cursor = String::new();
        while authors.len() <= REBUILD_MAX_FRIENDS {
            let (friends, next) = self.friends_page(user, &cursor).await?;
            authors.extend(friends);
            if next.is_empty() {
                break;
            }
            cursor = next;
        }
        let mut items = Vec::new();
        for a in &authors {
            let posts = self
                .posts
                .posts_by(a, None, self.settings.backfill)
                .await
                .map_err(store_status)?;
            items.extend(posts.iter().map(feed_item));
        }
        items.sort_by(|a, b| b.post.cmp(&a.post));
        items.truncate(self.settings.cap);
        tracing::info!(%user, items = items.len(), "feed rebuilt");
        self.feeds
            .replace(user, &items, self.settings.cap)
            .await
            .map_err(store_status)
    }

    async fn backfill_one(&self, reader: &str, author: &str) -> Result<(), Status> {
        let posts = self
            .posts
            .posts_by(author, None, self.settings.backfill)
            .await
            .map_err(store_status)?;
        let items: Vec<FeedItem> = posts.into_iter().map(|p| feed_item(&p)).collect();
        self.feeds
            .push_many(reader, &items, self.settings.cap)
            .await
            .map_err(store_status)
    }
}

#[tonic::async_trait]
impl Posts for PostsService {
    async fn create_post(
        &self,
        r: Request<pb::CreatePostRequest>,
    ) -> Result<Response<pb::PostReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        let body = text("text", &r.text, 5000)?;
        let author = self
            .clients
            .users
            .clone()
            .get_users(pb::GetUsersRequest {
                ids: vec![r.actor.clone()],
            })
            .await?
            .into_inner()
            .users
            .pop()
            .ok_or_else(|| Status::not_found("actor: no such user"))?;
        let post = self
            .posts
            .create_post(&r.actor, &body)
            .await
            .map_err(store_status)?;
        count_activity(&self.clients, &r.actor, "posts").await;
        let item = feed_item(&post);
        // The author's own feed shows it too.
        self.feeds
            .push(std::slice::from_ref(&r.actor), &item, self.settings.cap)
            .await
            .map_err(store_status)?;
        let event = json!({"type": "post", "post": post_json(&post), "author": user_json(author)});
        self.realtime.to_user(&r.actor, &event).await;
        let friends = self.friend_count(&r.actor).await.unwrap_or(u64::MAX);
        if friends <= self.settings.fanout_limit {
            self.fan_out(&post, &event, true).await;
        } else {
            // Too many friends to write to now: readers merge it in; live delivery runs in
            // the background.
            if let Err(e) = self
                .clients
                .counters
                .clone()
                .incr(pb::IncrRequest {
                    counter: FANOUT_ON_READ.to_string(),
                    field: r.actor.clone(),
                    by: 1,
                })
                .await
            {
                // The post is stored and in the author's feed; friends see it once the
                // author's next post is recorded (or live, below).
                tracing::error!(author = %r.actor, error = %e.message(), "fan-out on read not recorded");
            }
            let me = self.clone();
            let post = post.clone();
            tokio::spawn(async move { me.fan_out(&post, &event, false).await });
        }
        Ok(Response::new(pb::PostReply {
            post: Some(post_pb(post)),
        }))
    }

    async fn list_posts(
        &self,
        r: Request<pb::ListPostsRequest>,
    ) -> Result<Response<pb::PostsReply>, Status> {
        let r = r.into_inner();
        user_id("author", &r.author)?;
        let posts = self
            .posts
            .posts_by(&r.author, cursor(&r.before), limit(r.limit)?)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::PostsReply {
            posts: posts.into_iter().map(post_pb).collect(),
        }))
    }

    async fn feed(&self, r: Request<pb::FeedRequest>) -> Result<Response<pb::PostsReply>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        let n = limit(r.limit)?;
        let before = cursor(&r.before);
        let mut items = match self
            .feeds
            .feed(&r.actor, before, n)
            .await
            .map_err(store_status)?
        {
            Some(items) => items,
            None => {
                self.rebuild(&r.actor).await?;
                self.feeds
                    .feed(&r.actor, before, n)
                    .await
                    .map_err(store_status)?
                    .unwrap_or_default()
            }
        };
        // Fan-out on read: recent posts of friends too popular to fan out on write.
        for author in self.fanned_on_read().await? {
            if author != r.actor && !self.are_friends(&r.actor, &author).await? {
                continue;
            }
            let posts = self
                .posts
                .posts_by(&author, before, n)
                .await
                .map_err(store_status)?;
            items.extend(posts.iter().map(feed_item));
        }
        items.sort_by(|a, b| b.post.cmp(&a.post));
        let mut seen = HashSet::new();
        items.retain(|i| seen.insert(i.post.clone()));
        items.truncate(n);
        let ids: Vec<String> = items.into_iter().map(|i| i.post).collect();
        let posts = self.posts.posts(&ids).await.map_err(store_status)?;
        Ok(Response::new(pb::PostsReply {
            posts: posts.into_iter().map(post_pb).collect(),
        }))
    }

    async fn backfill(&self, r: Request<pb::PairRequest>) -> Result<Response<pb::Empty>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        user_id("other", &r.other)?;
        self.backfill_one(&r.actor, &r.other).await?;
        self.backfill_one(&r.other, &r.actor).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn unfollow(&self, r: Request<pb::PairRequest>) -> Result<Response<pb::Empty>, Status> {
        let r = r.into_inner();
        user_id("actor", &r.actor)?;
        user_id("other", &r.other)?;
        for (reader, author) in [(&r.actor, &r.other), (&r.other, &r.actor)] {
            self.feeds
                .remove_author(reader, author)
                .await
                .map_err(store_status)?;
        }
        Ok(Response::new(pb::Empty {}))
    }
}

/// The feed entry of a post.
fn feed_item(p: &Post) -> FeedItem {
    FeedItem {
        post: p.id.clone(),
        author: p.author.clone(),
    }
}

/// A post as JSON for live events.
pub fn post_json(p: &Post) -> serde_json::Value {
    json!({"id": p.id, "author": p.author, "text": p.text, "created_at": p.created_at})
}
