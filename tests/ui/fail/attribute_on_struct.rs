use multisession::MultiSession;

#[derive(MultiSession)]
#[session(key = multisession::keys::user)]
struct Session {
    count: u32,
}

fn main() {}
