use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(prefix = "stats:")]
    count: u32,
    #[session(prefix = "stats:")]
    total: u64,
}

fn main() {}
