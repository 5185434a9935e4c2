use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    // Seconds? Milliseconds? A bare number is ambiguous; the macro wants a Duration.
    #[session(ttl = 1800)]
    quiz: Option<String>,
}

fn main() {}
