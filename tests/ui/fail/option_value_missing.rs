use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(initial = )]
    count: u32,
}

fn main() {}
