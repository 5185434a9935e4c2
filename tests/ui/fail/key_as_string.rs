use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(key = "user")]
    settings: u32,
}

fn main() {}
