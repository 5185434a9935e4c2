// A generic session struct is the only error, even where the code uses what the derive
// would generate.
use multisession::{MultiSession, Sessions, stores::MemoryStore};

#[derive(MultiSession)]
struct Session<T> {
    state: T,
}

fn sessions() -> Sessions<Session<u32>> {
    Session::<u32>::builder().state(MemoryStore::new()).build()
}

fn main() {
    let _ = sessions();
}
