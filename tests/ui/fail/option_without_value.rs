use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(key, prefix = "count:")]
    count: u32,
}

fn main() {}
