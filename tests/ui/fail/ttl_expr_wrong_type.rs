use multisession::MultiSession;

const HALF_HOUR_SECS: u64 = 1800;

#[derive(MultiSession)]
struct Session {
    #[session(ttl = HALF_HOUR_SECS)]
    quiz: Option<String>,
}

fn main() {}
