use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    config: u32,
}

fn main() {}
