use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(prefix = "a:")]
    #[session(prefix = "b:")]
    count: u32,
}

fn main() {}
