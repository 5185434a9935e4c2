use multisession::MultiSession;

#[derive(MultiSession)]
struct Session<'a> {
    name: &'a str,
}

fn main() {}
