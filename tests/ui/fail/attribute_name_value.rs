use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session = "count"]
    count: u32,
}

fn main() {}
