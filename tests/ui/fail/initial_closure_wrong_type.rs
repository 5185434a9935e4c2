use multisession::MultiSession;

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Settings {
    language: String,
}

fn english() -> String {
    "en".to_owned()
}

#[derive(MultiSession)]
struct Session {
    // A constructor of the wrong type: `english` makes a String, not Settings.
    #[session(initial = english)]
    settings: Settings,
}

fn main() {}
