//! A quiz that forgets itself: `#[session(ttl = "...")]` expires a fragment that was not
//! written for that long (rule S18), like grammY's `enhanceStorage({ millisecondsToLive })`;
//! a background sweeper (`spawn_sweeper`) deletes the expired rows from the SQLite file.
//!
//! ```sh
//! cargo run --example ttl_quiz
//! ```

use std::time::Duration;

use multisession::{ChatContext, MultiSession, keys, stores::SqliteStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Quiz {
    question: String,
    answer: i64,
}

#[derive(MultiSession)]
struct Session {
    /// A running quiz per user in a chat; gone 2 seconds after it was last written.
    #[session(key = keys::user_in_chat, ttl = "2s")]
    quiz: Option<Quiz>,
    /// The chat's score, kept forever.
    score: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = SqliteStore::in_memory().await?;
    // Expired rows already read as missing; a background sweeper reclaims their space.
    let sweeper = store.spawn_sweeper(Duration::from_millis(500))?;
    let sessions = Session::builder().default_store(store.clone()).build();
    let ctx = ChatContext::new(-100).with_user(7);
    let ask = |s: multisession::Session<Session>| async move {
        s.quiz()
            .set(Some(Quiz {
                question: "6 × 7?".into(),
                answer: 42,
            }))
            .await?;
        Ok::<_, multisession::Error>("asked: 6 × 7?")
    };
    let answer = |s: multisession::Session<Session>| async move {
        let mut quiz = s.quiz().await?;
        let reply = match quiz.take() {
            Some(q) if q.answer == 42 => {
                *s.score().await? += 1;
                "correct!"
            }
            Some(_) => "wrong",
            None => "no quiz running (it expired)",
        };
        Ok::<_, multisession::Error>(reply)
    };

    println!("{}", sessions.run(&ctx, ask).await?);
    println!("answer right away: {}", sessions.run(&ctx, answer).await?);
    println!("{}", sessions.run(&ctx, ask).await?);
    println!("waiting 3 s ...");
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("answer after 3 s: {}", sessions.run(&ctx, answer).await?);
    let score = sessions.load(&ctx).await?.score;
    println!("score: {score} (the score has no TTL)");
    let swept = sweeper.stop().await;
    println!(
        "the background sweeper deleted {} expired row(s)",
        swept.deleted
    );
    Ok(())
}
