use multisession::MultiSession;

#[derive(MultiSession)]
struct Session {
    // grammY calls it `getSessionKey`; here it is `key`.
    #[session(get_session_key = multisession::keys::user)]
    settings: u32,
}

fn main() {}
