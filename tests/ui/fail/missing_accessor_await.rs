use multisession::{ChatContext, MultiSession};

#[derive(MultiSession)]
struct Session {
    count: u32,
}

async fn handler(sessions: multisession::Sessions<Session>) -> Result<(), multisession::Error> {
    sessions
        .run(&ChatContext::new(1), async |s| {
            // Forgot `.await?`: a fragment is loaded on first use, so its accessor is async.
            *s.count() += 1;
            Ok::<_, multisession::Error>(())
        })
        .await
}

fn main() {
    let _ = handler;
}
