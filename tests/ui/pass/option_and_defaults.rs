//! The plainest form: no attributes at all, `Option` fields start as `None`.
use multisession::MultiSession;

#[derive(MultiSession)]
pub struct Session {
    pub count: u32,
    pub name: Option<String>,
    pub tags: Vec<String>,
}

fn main() {
    let sessions = Session::builder()
        .default_store(multisession::stores::MemoryStore::new())
        .build();
    let _ = sessions.clone();
}
