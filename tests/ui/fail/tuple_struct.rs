use multisession::MultiSession;

#[derive(MultiSession)]
struct Session(u32, String);

fn main() {}
