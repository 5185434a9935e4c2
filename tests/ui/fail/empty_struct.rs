use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {}

fn main() {}
