// One misspelled option, in a crate that uses everything the derive generates: the typo is
// the only error (the derive emits a stub of its API along with the error).
use multisession::{ChatContext, MultiSession, Sessions, keys, stores::MemoryStore};

#[derive(MultiSession)]
struct Session {
    #[session(prefx = "count:")]
    count: u32,
    #[session(key = keys::user, initial = String::from("en"))]
    lang: String,
}

async fn handle(sessions: &Sessions<Session>) -> Result<u32, multisession::Error> {
    sessions
        .run(&ChatContext::new(1).with_user(7), async |s| {
            *s.count().await? += 1;
            let lang = s.lang().await?.clone();
            s.lang().set(lang).await?;
            Ok::<_, multisession::Error>(*s.count().await?)
        })
        .await
}

async fn strict(sessions: &Sessions<Session>) -> Result<(), multisession::Error> {
    let mut data = sessions.load(&ChatContext::new(1)).await?;
    data.count += 1;
    data.save().await
}

fn main() {
    let sessions = Session::builder()
        .count(MemoryStore::new())
        .default_store(MemoryStore::new())
        .config(multisession::Config::new())
        .build();
    let _ = (handle(&sessions), strict(&sessions), Session::FRAGMENTS);
}
