use multisession::{MultiSession, keys, stores::MemoryStore};

#[derive(MultiSession)]
struct Session {
    count: u32,
    #[session(key = keys::user)]
    lang: String,
}

fn main() {
    // `lang` has no store and no default store was named: data would vanish on restart.
    let _sessions = Session::builder().count(MemoryStore::new()).build();
}
