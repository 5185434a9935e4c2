//! Fields may be named like `Session`'s private methods (`cells`, `load_all`, ...): method
//! calls from the user's crate skip methods it cannot call, so `s.cells()` reaches the
//! fragment's accessor. (Names of its public methods are reserved: see
//! `fail/reserved_session_method.rs`.)
use multisession::{ChatContext, MultiSession, stores::MemoryStore};

#[derive(MultiSession)]
struct Session {
    cells: u32,
    load_all: u32,
    hold_in_order: u32,
    commit_attempt: u32,
    quick_commit: u32,
    inner: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), multisession::Error> {
    let sessions = Session::builder().default_store(MemoryStore::new()).build();
    let ctx = ChatContext::new(1);
    sessions
        .run(&ctx, async |s| {
            *s.cells().await? += 1;
            *s.load_all().await? += 2;
            *s.hold_in_order().await? += 3;
            *s.commit_attempt().await? += 4;
            *s.quick_commit().await? += 5;
            *s.inner().await? += 6;
            Ok::<_, multisession::Error>(())
        })
        .await?;
    let data = sessions.load(&ctx).await?;
    assert_eq!(
        (
            data.cells,
            data.load_all,
            data.hold_in_order,
            data.commit_attempt,
            data.quick_commit,
            data.inner
        ),
        (1, 2, 3, 4, 5, 6)
    );
    Ok(())
}
