use multisession::MultiSession;

const PREFIX: &str = "count:";

#[derive(MultiSession)]
struct Session {
    #[session(prefix = PREFIX)]
    count: u32,
}

fn main() {}
