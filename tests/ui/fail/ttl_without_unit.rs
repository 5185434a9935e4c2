use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(ttl = "30")]
    quiz: Option<String>,
}

fn main() {}
