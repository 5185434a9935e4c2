use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    // Keys under the default prefix `user:`.
    user: u32,
    #[session(prefix = "user:")]
    profile: String,
}

fn main() {}
