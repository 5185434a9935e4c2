use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    count: u32,
    // `s.commit()` is the session's own commit.
    commit: String,
}

fn main() {}
