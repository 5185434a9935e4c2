use multisession::MultiSession;

fn v0_to_v1(old: u32) -> String {
    old.to_string()
}

#[derive(MultiSession)]
struct Session {
    // The last step must produce the field's type.
    #[session(migrations = [v0_to_v1])]
    count: u64,
}

fn main() {}
