use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(ttl = "2weeks")]
    quiz: Option<String>,
}

fn main() {}
