use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    // `Session` is `Clone`: `s.clone()` clones the session.
    clone: Vec<String>,
}

fn main() {}
