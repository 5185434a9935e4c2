use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(ttl = "0s")]
    quiz: Option<String>,
}

fn main() {}
