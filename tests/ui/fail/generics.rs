use multisession::MultiSession;

#[derive(MultiSession)]
struct Session<T> {
    state: T,
}

fn main() {}
