use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    // serde style; here options take `=`.
    #[session(key(user))]
    count: u32,
}

fn main() {}
