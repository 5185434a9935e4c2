use multisession::MultiSession;

fn v0_to_v1(old: u32) -> u64 {
    u64::from(old)
}

#[derive(MultiSession)]
struct Session {
    #[session(migrations = ["v0_to_v1"])]
    count: u64,
}

fn main() {}
