use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session()]
    count: u32,
}

fn main() {}
