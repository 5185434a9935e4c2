//! The user's own items named like the derive's generated locals and parameters
//! (`config`, `stores`, `shared`, `store`, `value`, `payload`, ...) are not shadowed inside
//! the expressions of `#[session(...)]`, and fields may be named like them too.
use multisession::{MultiSession, SessionContext};

fn config() -> u32 {
    7
}

fn stores() -> u32 {
    1
}

fn shared() -> u32 {
    2
}

fn store() -> u32 {
    3
}

fn value() -> u64 {
    4
}

fn payload(ctx: &dyn SessionContext) -> Option<String> {
    ctx.chat_id().map(|chat| format!("p{chat}"))
}

fn bytes(old: u32) -> u64 {
    u64::from(old) + value()
}

#[allow(non_upper_case_globals)]
const version: u32 = 5;
#[allow(non_upper_case_globals)]
const update: u32 = 6;
#[allow(non_upper_case_globals)]
const lazy: u32 = 7;

#[allow(non_upper_case_globals)]
const found: u32 = 8;

#[derive(MultiSession)]
struct Session {
    #[session(initial = config())]
    count: u32,
    #[session(initial = stores() + shared() + store() + version + update + lazy + found)]
    total: u32,
    #[session(key = payload, migrations = [bytes, |old: u64| old + value()])]
    migrated: u64,
    // Fields named like the builder's internals and the generated locals.
    builder: u32,
    core: u32,
    state: u32,
    stores: u32,
    shared: u32,
    store: u32,
    update: u32,
    lazy: u32,
    value: u32,
    bytes: u32,
}

fn main() {
    let sessions = Session::builder()
        .store(multisession::stores::MemoryStore::new())
        .stores(multisession::stores::MemoryStore::new())
        .default_store(multisession::stores::MemoryStore::new())
        .build();
    let _ = sessions;
}
