use multisession::MultiSession;

#[derive(MultiSession)]
union Session {
    count: u32,
    flags: u64,
}

fn main() {}
