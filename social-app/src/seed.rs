//! `social-app seed --users N`: realistic demo data written straight into the stores (the
//! same stores and feed rules the services use, without the gRPC hop): users with names,
//! cities and interests, friendships, posts fanned out into friends' feeds, and dialogs with
//! messages. Every seeded user's password is `password123` (hashed once: seeding 100,000
//! users must not spend an argon2 run on each); emails are `user<N>-<seed>@example.com` (N from 0).

use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use social_store::{FeedItem, NewUser, Profile};

use crate::config::Settings;
use crate::services::users::hash_password;

const FIRST: &[&str] = &[
    "Anna", "Boris", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Katya", "Liam", "Maya", "Nikolai", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara", "Umar",
    "Vera", "Wang", "Ximena", "Yusuf", "Zoe", "Alexei", "Bianca", "Carlos", "Daria",
];
const LAST: &[&str] = &[
    "Ivanova",
    "Smith",
    "Garcia",
    "Müller",
    "Rossi",
    "Kowalski",
    "Novak",
    "Dubois",
    "Silva",
    "Jensen",
    "Petrov",
    "Kim",
    "Nguyen",
    "Haddad",
    "O'Brien",
    "Tanaka",
    "Larsen",
    "Costa",
    "Schmidt",
    "Popescu",
    "Yilmaz",
    "Horvat",
    "Fischer",
    "Moreau",
    "Andersson",
    "Volkov",
];
const CITIES: &[&str] = &[
    "Moscow", "Berlin", "Lisbon", "Warsaw", "Oslo", "Madrid", "Prague", "Vienna", "Riga",
    "Tallinn", "Helsinki", "Dublin",
];
const INTERESTS: &[&str] = &[
    "music",
    "hiking",
    "chess",
    "cooking",
    "films",
    "running",
    "photography",
    "books",
    "climbing",
    "travel",
    "gardening",
    "jazz",
    "cycling",
    "football",
    "painting",
];
const WORDS: &[&str] = &[
    "today", "great", "coffee", "weekend", "city", "new", "friends", "walk", "park", "rain", "sun",
    "project", "music", "dinner", "book", "trip", "morning", "train", "photo", "idea",
];

/// How much to seed.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Users to create.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Friends each user asks for (friendships are mutual, so each has about twice that).
    #[arg(long, default_value_t = 5)]
    pub friends: usize,
    /// Posts per user.
    #[arg(long, default_value_t = 2)]
    pub posts: usize,
    /// Users who start a dialog with a friend, out of 100.
    #[arg(long, default_value_t = 20)]
    pub dialog_percent: usize,
    /// Messages in each dialog.
    #[arg(long, default_value_t = 4)]
    pub messages: usize,
    /// Writes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Random seed (same seed, same data).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

fn pick<'a>(rng: &mut fastrand::Rng, from: &[&'a str]) -> &'a str {
    from[rng.usize(..from.len())]
}

fn sentence(rng: &mut fastrand::Rng) -> String {
    let n = rng.usize(4..12);
    let mut s: Vec<&str> = (0..n).map(|_| pick(rng, WORDS)).collect();
    let first = s[0].to_string();
    let cap = first[..1].to_uppercase() + &first[1..];
    s[0] = &cap;
    format!("{}.", s.join(" "))
}

/// Seeds the stores `settings` configure; prints progress and a summary.
pub async fn run(settings: &Settings, a: &SeedArgs) -> Result<String, String> {
    let stores = crate::app::open_seed_stores(settings).await?;
    let t0 = Instant::now();
    let hash = hash_password("password123".into())
        .await
        .map_err(|e| e.message().to_string())?;
    let mut rng = fastrand::Rng::with_seed(a.seed);
    let c = a.concurrency.max(1);

    // Users.
    let profiles: Vec<(usize, Profile)> = (0..a.users)
        .map(|i| {
            let k = rng.usize(1..4);
            let mut interests: Vec<String> = (0..k)
                .map(|_| pick(&mut rng, INTERESTS).to_string())
                .collect();
            interests.dedup();
            (
                i,
                Profile {
                    first_name: pick(&mut rng, FIRST).into(),
                    last_name: pick(&mut rng, LAST).into(),
                    birthday: format!(
                        "{}-{:02}-{:02}",
                        rng.u32(1960..2008),
                        rng.u32(1..13),
                        rng.u32(1..29)
                    ),
                    city: pick(&mut rng, CITIES).into(),
                    interests,
                },
            )
        })
        .collect();
    let users = stores.users.clone();
    let base = a.seed;
    let created: Vec<Result<String, String>> = stream::iter(profiles)
        .map(|(i, profile)| {
            let users = users.clone();
            let hash = hash.clone();
            async move {
                let email = format!("user{i}-{base}@example.com");
                match users
                    .create_user(NewUser {
                        email,
                        password_hash: hash,
                        profile,
                    })
                    .await
                {
                    Ok(u) => Ok(u.id),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .buffered(c)
        .collect()
        .await;
    let ids: Vec<String> = created.into_iter().collect::<Result<_, _>>()?;
    let t_users = t0.elapsed();
    eprintln!("seed: {} users in {:.1?}", ids.len(), t_users);
    if ids.len() < 2 {
        return Ok(format!("seeded {} users", ids.len()));
    }

    // Friendships.
    let mut pairs = Vec::new();
    for (i, _) in ids.iter().enumerate() {
        for _ in 0..a.friends {
            let j = rng.usize(..ids.len());
            if j != i {
                pairs.push((i, j));
            }
        }
    }
    let friends = stores.friends.clone();
    let n_pairs = pairs.len();
    let results: Vec<Result<(), String>> = stream::iter(pairs.clone())
        .map(|(i, j)| {
            let friends = friends.clone();
            let (x, y) = (ids[i].clone(), ids[j].clone());
            async move {
                friends
                    .add_friendship(&x, &y)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(c)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    eprintln!("seed: {n_pairs} friendships in {:.1?}", t0.elapsed());

    // Posts, fanned out into the friends' feeds and the author's own.
    let mut friend_lists: Vec<Vec<String>> = vec![Vec::new(); ids.len()];
    for (i, j) in &pairs {
        friend_lists[*i].push(ids[*j].clone());
        friend_lists[*j].push(ids[*i].clone());
    }
    let friend_lists = Arc::new(friend_lists);
    let mut posts = Vec::new();
    for i in 0..ids.len() {
        for _ in 0..a.posts {
            posts.push((i, sentence(&mut rng)));
        }
    }
    let n_posts = posts.len();
    let (st_posts, st_feeds) = (stores.posts.clone(), stores.feeds.clone());
    let results: Vec<Result<(), String>> = stream::iter(posts)
        .map(|(i, text)| {
            let (st_posts, st_feeds, fl) =
                (st_posts.clone(), st_feeds.clone(), friend_lists.clone());
            let author = ids[i].clone();
            async move {
                let p = st_posts
                    .create_post(&author, &text)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut readers = fl[i].clone();
                readers.push(author.clone());
                readers.sort();
                readers.dedup();
                let item = FeedItem { post: p.id, author };
                st_feeds
                    .push(&readers, &item, settings.feed_cap.max(1))
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .buffered(c)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    eprintln!("seed: {n_posts} posts in {:.1?}", t0.elapsed());

    // Dialogs with messages.
    let mut dialogs = Vec::new();
    for (i, fl) in friend_lists.iter().enumerate() {
        if !fl.is_empty() && rng.usize(..100) < a.dialog_percent {
            let other = fl[rng.usize(..fl.len())].clone();
            let texts: Vec<String> = (0..a.messages).map(|_| sentence(&mut rng)).collect();
            dialogs.push((ids[i].clone(), other, texts));
        }
    }
    let n_dialogs = dialogs.len();
    let chats = stores.chats.clone();
    let results: Vec<Result<(), String>> = stream::iter(dialogs)
        .map(|(a_id, b_id, texts)| {
            let chats = chats.clone();
            async move {
                let chat = chats
                    .find_or_create_dialog(&a_id, &b_id)
                    .await
                    .map_err(|e| e.to_string())?;
                for (k, t) in texts.iter().enumerate() {
                    let author = if k % 2 == 0 { &a_id } else { &b_id };
                    chats
                        .add_message(&chat.id, author, t)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        })
        .buffer_unordered(c)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>, _>>()?;
    // One flushed commit per file makes the whole load durable.
    for e in &stores.embedded {
        e.sync().map_err(|e| format!("sync: {e}"))?;
    }
    let total = t0.elapsed();
    Ok(format!(
        "seeded {} users, {n_pairs} friendships, {n_posts} posts, {n_dialogs} dialogs ({} messages) in {:.1?}; password: password123",
        ids.len(),
        n_dialogs * a.messages,
        total
    ))
}
