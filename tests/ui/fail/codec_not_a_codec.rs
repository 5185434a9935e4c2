use multisession::MultiSession;

struct Yaml;

#[derive(MultiSession)]
struct Session {
    #[session(codec = Yaml)]
    count: u32,
}

fn main() {}
