use multisession::{
    ChatContext, MultiSession, keys,
    stores::{CountingStore, MemoryStore},
};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize, Debug, PartialEq)]
struct Pizza {
    count: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Settings {
    lang: String,
}
impl Settings {
    fn english() -> Self {
        Settings { lang: "en".into() }
    }
}

#[derive(MultiSession)]
struct BotSession {
    pizza: Pizza,
    #[session(key = keys::user, initial = Settings::english)]
    settings: Settings,
    #[session(key = keys::user_in_chat)]
    quiz: Option<u32>,
}

#[tokio::test]
async fn smoke() {
    let store = CountingStore::new(MemoryStore::new());
    let sessions = BotSession::builder().default_store(store.clone()).build();
    let ctx = ChatContext::new(1).with_user(2);
    sessions
        .run(&ctx, |s| async move {
            s.pizza().await?.count += 1;
            let lang = s.settings().await?.lang.clone();
            assert_eq!(lang, "en");
            Ok::<_, multisession::Error>(())
        })
        .await
        .unwrap();
    let c = store.counts();
    assert_eq!((c.reads, c.writes), (2, 1));
    let loaded = sessions.load(&ctx).await.unwrap();
    assert_eq!(loaded.pizza.count, 1);
    assert_eq!(loaded.quiz, None);
}
