use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(prefix = "user:")]
    user: u32,
    #[session(prefix = "user:settings:")]
    settings: u32,
}

fn main() {}
