//! A public session struct may have fields of private types (they never appear in the
//! public `MultiSession` impl).
mod bot {
    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Secret {
        token: String,
    }

    #[derive(multisession::MultiSession)]
    pub struct Session {
        secret: Secret,
        pub count: u32,
    }

    pub fn sessions() -> multisession::Sessions<Session> {
        Session::builder()
            .default_store(multisession::stores::MemoryStore::new())
            .build()
    }
}

fn main() {
    let _ = bot::sessions();
}
