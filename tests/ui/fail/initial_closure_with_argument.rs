use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(initial = |start: u32| start + 1)]
    count: u32,
}

fn main() {}
