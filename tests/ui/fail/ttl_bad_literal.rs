use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(ttl = "30 minutes")]
    quiz: Option<String>,
}

fn main() {}
