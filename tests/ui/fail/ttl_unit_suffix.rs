use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    // `30m` is the integer 30 with a suffix, not a duration.
    #[session(ttl = 30m)]
    quiz: Option<String>,
}

fn main() {}
