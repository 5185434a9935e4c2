use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(migrations = [])]
    count: u32,
}

fn main() {}
