use multisession::{MultiSession, Sessions, stores::MemoryStore};

#[derive(MultiSession)]
struct Session(u32);

fn main() {
    let sessions: Sessions<Session> = Session::builder().default_store(MemoryStore::new()).build();
    let _ = sessions;
}
