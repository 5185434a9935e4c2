use multisession::MultiSession;

#[derive(serde::Serialize, serde::Deserialize)]
struct Settings {
    language: String,
}

#[derive(MultiSession)]
struct Session {
    // Neither `Default` nor an `initial` value: what would a new user start with?
    settings: Settings,
}

fn main() {}
