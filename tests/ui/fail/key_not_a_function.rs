use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(key = 42)]
    count: u32,
}

fn main() {}
