use multisession::MultiSession;

fn v0_to_v1(old: u32) -> String {
    old.to_string()
}

fn v1_to_v2(old: u32) -> u64 {
    u64::from(old)
}

#[derive(MultiSession)]
struct Session {
    // The second step takes a u32, but the first one produced a String.
    #[session(migrations = [v0_to_v1, v1_to_v2])]
    count: u64,
}

fn main() {}
