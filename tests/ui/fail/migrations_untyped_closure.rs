use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    // What type is the stored value decoded as? The closure must say.
    #[session(migrations = [|old| old + 1])]
    count: u64,
}

fn main() {}
