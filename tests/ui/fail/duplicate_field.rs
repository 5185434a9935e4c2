use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    count: u32,
    count: u64,
}

fn main() {}
