use multisession::{MultiSession, keys};

#[derive(MultiSession)]
struct Session {
    #[session(key = keys::user, key = keys::chat)]
    count: u32,
}

fn main() {}
