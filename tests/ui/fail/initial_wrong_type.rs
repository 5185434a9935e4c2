use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    #[session(initial = "zero")]
    count: u32,
}

fn main() {}
