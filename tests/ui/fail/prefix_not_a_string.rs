use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(prefix = 42)]
    count: u32,
}

fn main() {}
