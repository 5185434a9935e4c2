use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(codec = "json")]
    count: u32,
}

fn main() {}
