use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(store = 3)]
    count: u32,
}

fn main() {}
