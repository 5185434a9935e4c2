use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(strict)]
    count: u32,
}

fn main() {}
